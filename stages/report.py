"""`rise-pipeline report`: parse, call `pipeline.report.step.run`, print the table."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.errors import UserError
from pipeline.report.render import comparison_lines, markdown_table
from pipeline.report.statistics import compare
from pipeline.report.step import ReportConfig, run
from stages.options import config_options, overrides_for, params_option


@click.command(context_settings={"max_content_width": 100})
@click.argument("runs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Report folder: results.md, results.csv, results.png, metrics.json, epochs.csv are written here "
                   "(with --sweep-only: data/report beside --params, as dvc.yaml's report stage).")
@params_option
@config_options(ReportConfig)
@click.option("--sweep-only", is_flag=True,
              help="Use only the runs of the sweep plan of --params (what dvc.yaml's distill stage and `sweep run` "
                   "train), each only if its metrics.json records the plan's config; RUNS default to data/runs "
                   "beside --params.")
@click.option("--work", type=click.Path(path_type=Path), default=None,
              help="Work folder the runs were trained from: adds the learning check (did each selected run fit "
                   "its source domains?) from its teacher_report.json and shards/index.json. Default: data.work "
                   "of --params (relative to its folder).")
def report(runs, out, params_path, sweep_only, work, **options):
    """Build the paper-style table from distill RUNS (run folders, or folders searched recursively).

    Per (method, held-out domain, seed) the run with the best source-validation accuracy is chosen;
    cells are mean ± std over seeds. Incomplete and failed runs are listed, never averaged in.
    """
    params = read_params(params_path)
    cfg = load_section(ReportConfig, params, "report", overrides_for(ReportConfig, options))
    only = base = None
    if sweep_only:
        if params_path is None:
            raise UserError("--sweep-only needs --params with a 'sweep' section")
        from pipeline.plan import plan_sweep

        plan = plan_sweep(params_path)
        only, base = plan.expected_runs(), plan.root
        runs, out = runs or (plan.runs,), out or plan.report
    if not runs or out is None:
        raise UserError("give the RUNS folders and --out (or --sweep-only --params P, which has them)")
    if work is None and params_path is not None:
        from pipeline.params import load_data

        work = Path(params_path).resolve().parent / load_data(params).work
        if not (work / "teacher_report.json").is_file():
            click.echo(f"note: no learning check: {work / 'teacher_report.json'} (data.work of {params_path}) "
                       "not found; give --work", err=True)
            work = None
    result = run(cfg, list(runs), out, only, work, base)
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
