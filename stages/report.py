"""`rise-pipeline report`: parse, call `pipeline.report.step.run`, print the table."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.errors import UserError
from pipeline.report.step import ReportConfig, run, sweep_run_names
from pipeline.report.tables import compare, comparison_lines, markdown_table
from stages.options import config_options, overrides_for, params_option


@click.command(context_settings={"max_content_width": 100})
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Report folder: results.md, results.csv, results.png, metrics.json are written here.")
@params_option
@config_options(ReportConfig)
@click.option("--sweep-only", is_flag=True,
              help="Use only the runs of the current `sweep` section of --params (what dvc.yaml's matrix runs).")
@click.option("--work", type=click.Path(path_type=Path), default=None,
              help="Work folder the runs were trained from: adds the learning check (did each selected run fit "
                   "its source domains?) from its teacher_report.json and shards/index.json.")
def report(runs, out, params_path, sweep_only, work, **options):
    """Build the paper-style table from distill RUNS (run folders, or folders searched recursively).

    Per (method, held-out domain, seed) the run with the best source-validation accuracy is chosen;
    cells are mean ± std over seeds. Incomplete and failed runs are listed, never averaged in.
    """
    params = read_params(params_path)
    cfg = load_section(ReportConfig, params, "report", overrides_for(ReportConfig, options))
    only = None
    if sweep_only:
        if "sweep" not in params:
            raise UserError("--sweep-only needs --params with a 'sweep' section")
        only = sweep_run_names(params["sweep"], params.get("extra_teachers"))
    result = run(cfg, list(runs), out, only, work)
    click.echo(markdown_table(result, cfg.decimals), nl=False)
    for line in comparison_lines(compare(result), cfg.decimals):
        if line.startswith("- "):  # the verdicts, each method against ERM
            click.echo(line)
    check = result.learning
    if check:
        click.echo(f"learning check: {check['passed']} of {check['runs']} selected runs pass (details: "
                   f"{out / 'results.md'})")
    bad = sum(r.status != "complete" for r in result.runs)
    if bad:
        click.echo(f"({bad} incomplete or failed run(s) not averaged: see {out / 'results.md'})")
