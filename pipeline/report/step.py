"""The report step: distill runs -> results.md / results.csv / results.png / metrics.json.

Selection, aggregation and rendering live in `tables`; this module checks the config, picks the runs
and writes the four files atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import field
from ..errors import UserError
from ..io import write_bytes, write_json, write_text
from . import learning
from . import tables as lib

OUTPUTS = ("results.md", "results.csv", "results.png", "metrics.json")


@dataclass
class ReportConfig:
    title: str = field("Held-out domain accuracy (%)", "Heading of results.md.")
    decimals: int = field(1, "Digits after the decimal point in the Markdown table.")
    methods: list[str] = field([], "Row order of the methods; methods not listed follow, sorted by name.")
    teacher_row: bool = field(True, "Add the teacher's zero-shot accuracy as a reference row.")


def sweep_run_names(sweep: dict, extra_teachers=None) -> set[str]:
    """Run folders of the current sweep, as `<group>/<member>`: dvc.yaml's distill matrix runs one group per
    (held-out domain, seed), in `data/runs/<domain>-<seed>` (DVC joins the matrix item keys with '-'), and a
    group writes each member to `<method>-cfg<i>` (i: the index of its grid entry). With extra teachers
    (params.yaml `extra_teachers`), the groups also train rise-mix."""
    try:
        grid = sweep.get("grid") or [{}]
        methods = list(sweep["methods"]) + (["rise-mix"] if extra_teachers and "rise-mix" not in sweep["methods"] else [])
        return {f"{d}-{s}/{m}-cfg{i}" for d in sweep["domains"] for m in methods
                for s in sweep["seeds"] for i in range(len(grid))}
    except (KeyError, TypeError):
        raise UserError("params section 'sweep' needs lists 'domains', 'methods', 'seeds' (and 'grid')") from None


def run(cfg: ReportConfig, paths: list[Path], out: Path, only: set[str] | None = None,
        work: Path | None = None) -> lib.Report:
    """Select, aggregate and write the four files. `work`: the work folder the runs were trained from, which
    adds the learning check (`learning`: did each selected run fit its source domains?)."""
    if cfg.decimals < 0:
        raise UserError(f"report.decimals must be >= 0, got {cfg.decimals}")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out must be a folder: {out} is a file")
    found = lib.find_runs(paths, exclude=[out])
    if only is not None:
        # Runs of an earlier sweep may still sit in data/runs (DVC never deletes a dropped matrix entry's
        # output); they must not compete in the selection.
        found = [p for p in found if "/".join(Path(p).parts[-2:]) in only]
        if not found:
            raise UserError(f"none of the current sweep's runs ({len(only)} expected, e.g. {sorted(only)[0]}) is "
                            f"under {', '.join(map(str, paths))}; run `dvc repro` or `rise-pipeline sweep run` first")
    runs = [lib.load_run(p) for p in found]
    result = lib.build_report(runs, methods=cfg.methods, teacher_row=cfg.teacher_row)
    if not result.rows:
        bad = len(runs) - sum(r.status == "complete" for r in runs)
        raise UserError(f"no complete runs among {len(runs)} found ({bad} incomplete or failed); "
                        f"see e.g. {runs[0].path}: {runs[0].reason}")
    extra: list[str] = []
    metrics = lib.metrics_dict(result)
    if work is not None:
        teacher = learning.read_teacher_val(work)
        checks = learning.check(result, teacher)
        extra = learning.render(checks, teacher, cfg.decimals)
        result.learning = metrics["learning_check"] = learning.summary(checks)
    write_text(out / "results.md", lib.render_markdown(result, cfg.title, cfg.decimals, extra))
    write_text(out / "results.csv", lib.render_csv(result))
    write_bytes(out / "results.png", lib.render_png(result))
    write_json(out / "metrics.json", metrics)
    return result
