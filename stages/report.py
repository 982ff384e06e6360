"""`rise-pipeline report`: distill runs -> results.md / results.csv / results.png / metrics.json.

Selection, aggregation and rendering live in `pipeline.report`; this module resolves the config, writes
the four files atomically and prints the Markdown table (that is what shows at the end of `dvc repro`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from pipeline import report as lib
from pipeline.config import field, load_section, read_params
from pipeline.errors import UserError
from pipeline.io import write_bytes, write_json, write_text

OUTPUTS = ("results.md", "results.csv", "results.png", "metrics.json")


@dataclass
class ReportConfig:
    title: str = field("Held-out domain accuracy (%)", "Heading of results.md.")
    decimals: int = field(1, "Digits after the decimal point in the Markdown table.")
    methods: list[str] = field([], "Row order of the methods; methods not listed follow, sorted by name.")
    teacher_row: bool = field(True, "Add the teacher's zero-shot accuracy as a reference row.")


def sweep_run_names(sweep: dict) -> set[str]:
    """Folder names dvc.yaml's distill matrix gives the current sweep's runs: DVC joins the matrix item
    keys with '-', and names a dict-valued item by its axis and index (`cfg0`, `cfg1`, ...)."""
    try:
        grid = sweep.get("grid") or [{}]
        return {f"{d}-{m}-{s}-cfg{i}" for d in sweep["domains"] for m in sweep["methods"]
                for s in sweep["seeds"] for i in range(len(grid))}
    except (KeyError, TypeError):
        raise UserError("params section 'sweep' needs lists 'domains', 'methods', 'seeds' (and 'grid')") from None


def run(cfg: ReportConfig, paths: list[Path], out: Path, only: set[str] | None = None) -> lib.Report:
    if cfg.decimals < 0:
        raise UserError(f"report.decimals must be >= 0, got {cfg.decimals}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out must be a folder: {out} is a file")
    found = lib.find_runs(paths, exclude=[out])
    if only is not None:
        # Runs of an earlier sweep may still sit in data/runs (DVC never deletes a dropped matrix entry's
        # output); they must not compete in the selection.
        found = [p for p in found if Path(p).name in only]
    runs = [lib.load_run(p) for p in found]
    result = lib.build_report(runs, methods=cfg.methods, teacher_row=cfg.teacher_row)
    if not result.rows:
        bad = len(runs) - sum(r.status == "complete" for r in runs)
        raise UserError(f"no complete runs among {len(runs)} found ({bad} incomplete or failed); "
                        f"see e.g. {runs[0].path}: {runs[0].reason}")
    write_text(out / "results.md", lib.render_markdown(result, cfg.title, cfg.decimals))
    write_text(out / "results.csv", lib.render_csv(result))
    write_bytes(out / "results.png", lib.render_png(result))
    write_json(out / "metrics.json", lib.metrics_dict(result))
    return result


@click.command(context_settings={"max_content_width": 100})
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Report folder: results.md, results.csv, results.png, metrics.json are written here.")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="params.yaml to read the 'report' section from (flags override it).")
@click.option("--decimals", type=int, default=None, help="Digits after the decimal point in the table [1].")
@click.option("--title", default=None, help="Heading of results.md.")
@click.option("--sweep-only", is_flag=True,
              help="Use only the runs of the current `sweep` section of --params (what dvc.yaml's matrix runs).")
def report(runs, out, params_path, decimals, title, sweep_only):
    """Build the paper-style table from distill RUNS (run folders, or folders searched recursively).

    Per (method, held-out domain, seed) the run with the best source-validation accuracy is chosen;
    cells are mean ± std over seeds. Incomplete and failed runs are listed, never averaged in.
    """
    params = read_params(params_path)
    cfg = load_section(ReportConfig, params, "report", dict(decimals=decimals, title=title))
    only = None
    if sweep_only:
        if "sweep" not in params:
            raise UserError("--sweep-only needs --params with a 'sweep' section")
        only = sweep_run_names(params["sweep"])
    result = run(cfg, list(runs), out, only)
    click.echo(lib.markdown_table(result, cfg.decimals), nl=False)
    bad = sum(r.status != "complete" for r in result.runs)
    if bad:
        click.echo(f"({bad} incomplete or failed run(s) not averaged: see {out / 'results.md'})")
