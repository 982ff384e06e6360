"""`rise-pipeline sweep`: the sweep's distill groups on dask (`run`), or a named grid with DVC (`grid`).

`sweep run` runs exactly the distill work of dvc.yaml's distill stage for the current params.yaml -- one group per
held-out domain x seed, members methods x grid, the same run folders -- as dask tasks (in this process, on a
local cluster, or on an existing one), then the report. `dvc commit -f` afterwards records the outputs, so
a later `dvc repro` reruns nothing.

`sweep grid GRID` (or just `sweep GRID`) runs one of RISE's loss-weight grids as a DVC experiment:
`dvc exp run -S sweep.grid=[...]`; the shard and embed stages are reused from the cache, only students train,
and the report selects the config per cell by training-domain validation.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click

from pipeline.errors import UserError
from pipeline.presets import GRIDS


class SweepGroup(click.Group):
    """`sweep GRID ...` (the original form) is short for `sweep grid GRID ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help") \
                and (args[0] in GRIDS or args[0].startswith("-")):
            args = ["grid", *args]
        return super().parse_args(ctx, args)


@click.group(cls=SweepGroup, context_settings={"max_content_width": 100})
def sweep():
    """Run the sweep of params.yaml on dask (`run`), or a named RISE grid as a DVC experiment (`grid`).

    `rise-pipeline sweep GRID` is short for `rise-pipeline sweep grid GRID`.
    """


@sweep.command("grid", context_settings={"max_content_width": 100},
               short_help="Run a named RISE grid (pacs, vlcs, ...) as a DVC experiment.")
@click.argument("grid", type=click.Choice(sorted(GRIDS)))
@click.option("--queue", is_flag=True, help="Queue the experiment (`dvc queue start -j N` runs it) instead of running now.")
@click.option("--name", default=None, help="Experiment name (default: sweep-GRID).")
@click.option("--dry-run", is_flag=True, help="Print the dvc command instead of running it.")
def grid_command(grid, queue, name, dry_run):
    """Run RISE's GRID (pacs, vlcs, officehome, terraincognita, domainnet; base = params only) with dvc exp run."""
    value = json.dumps(GRIDS[grid], separators=(",", ":"))
    cmd = ["dvc", "exp", "run", "-n", name or f"sweep-{grid}", "-S", f"sweep.grid={value}"]
    if queue:
        cmd.append("--queue")
    if dry_run:
        click.echo(shlex.join(cmd))
        return
    if shutil.which("dvc") is None:
        raise UserError("dvc not found on PATH (install the project: make install)")
    rc = subprocess.call(cmd)
    if rc != 0:
        raise UserError(f"dvc exp run failed with exit status {rc}")


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the current folder when inside it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)


def _entries(member) -> str:
    """Which grid entries a student stands for: `entry 2`, `entries 0-5`, `entries 0, 3`."""
    e = member.entries
    if len(e) == 1:
        return f"{member.method}, grid entry {e[0]}"
    if list(e) == list(range(e[0], e[-1] + 1)):
        return f"{member.method}, grid entries {e[0]}-{e[-1]}"
    return f"{member.method}, grid entries {', '.join(map(str, e))}"


def _dry_run(plan) -> None:
    """What the real run will do: each student's state by the same comparison a run makes (pinned weights
    included), and what would stop the run before training."""
    from pipeline.distill.group import legacy_folders
    from pipeline.sweep import group_states, open_stores

    stores, why = open_stores(plan.work, plan.groups[0].teachers if plan.groups else ())
    if stores is None:
        click.echo(f"note: the store cannot be opened here ({why}); complete members show as to run")
    counts = {"complete": 0, "partial": 0, "to run": 0}
    for group in plan.groups:
        states = group_states(group, stores)
        click.echo(f"{group.key}  ({_shown(group.out)})")
        if legacy_folders(group.out):
            click.echo(f"  refused: holds run folders named by grid position ({', '.join(legacy_folders(group.out))})"
                       "; move or delete them first")
        width = max(len(name) for name in states)
        swidth = max(len(state) for state in states.values())
        for m in group.members:
            click.echo(f"  {m.name:<{width}}  {states[m.name]:<{swidth}}  [{_entries(m)}]")
            counts[states[m.name].split(" (")[0]] += 1
    total = sum(counts.values())
    click.echo(f"dry run: {len(plan.groups)} group(s), {total} student(s): {counts['complete']} complete "
               f"(skipped), {counts['partial']} partial (resume), {counts['to run']} to run")


@sweep.command("run", context_settings={"max_content_width": 100},
               short_help="Train the distill groups of dvc.yaml's distill stage as dask tasks, then the report.")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=Path("params.yaml"),
              show_default=True,
              help="params.yaml whose `sweep` section (domains x seeds groups, methods x grid members) and "
                   "`distill` section to run; data.work and data/runs are relative to its folder, as in dvc.yaml.")
@click.option("--scheduler", default=None, metavar="ADDR",
              help="Run on an existing dask.distributed cluster, e.g. tcp://host:8786 (dask-jobqueue's "
                   "SLURMCluster: cluster.scheduler_address). WORK and data/runs must be on storage every "
                   "worker sees.")
@click.option("--workers", type=int, default=None, metavar="N",
              help="Run on a new local cluster of N worker processes (with GPUs: worker i sees one GPU). "
                   "Neither option: sweep.jobs of --params (1: in this process, one group after another).")
@click.option("--retries", type=int, default=2, show_default=True,
              help="How often dask reruns a group whose task raised, or (--workers) whose worker died; it "
                   "resumes from its checkpoints. On --scheduler, worker deaths follow that cluster's "
                   "distributed.scheduler.allowed-failures. Errors such as an unreadable store are not rerun.")
@click.option("--dry-run", is_flag=True, help="List each group and member with its state; train nothing.")
def run_command(params_path, scheduler, workers, retries, dry_run):
    """Train every group of the sweep -- exactly what dvc.yaml's distill stage trains -- as dask tasks.

    One group per held-out domain x seed, each distinct student of methods x grid once, into
    data/runs/<domain>-<seed>/<method>-<hash>/, with the same call as `rise-pipeline distill --sweep`:
    complete students are skipped, killed ones resume. Then the report (data/report, byte for byte what
    dvc.yaml's report stage writes) and `sweep: N done, M skipped, K failed`, counting students (exit
    status 1 if any failed). Afterwards `dvc commit -f` records the outputs for DVC.
    """
    from pipeline.config import load_section, read_params
    from pipeline.plan import plan_sweep
    from pipeline.report.step import ReportConfig

    if workers is not None and scheduler:
        raise UserError("--workers starts a local cluster, --scheduler uses an existing one: give one of them")
    if not params_path.is_file():
        raise UserError(f"params file not found: {params_path}")
    params = read_params(params_path)
    plan = plan_sweep(params_path)
    if dry_run:
        _dry_run(plan)
        return
    report_cfg = load_section(ReportConfig, params, "report")  # a bad report section fails before training
    from pipeline.sweep import local_jobs, run_and_print, totals

    if workers is None and not scheduler:
        workers = local_jobs(plan)
    outcomes = run_and_print(plan, click.echo, workers=workers, scheduler=scheduler, retries=retries)
    if any(o.count("done") + o.count("skipped") for o in outcomes):
        _report(plan, report_cfg)
    else:
        click.echo("report: no complete run in this sweep; nothing to report")
    t = totals(outcomes)
    click.echo(f"sweep: {t['done']} done, {t['skipped']} skipped, {t['failed']} failed")
    if any(o.failed for o in outcomes):
        sys.exit(1)  # after everything is printed (ctx.exit would not set the status: standalone_mode=False)


def _report(plan, cfg) -> None:
    """dvc.yaml's report stage, `report --params P --sweep-only`: the same call, so the same bytes."""
    from pipeline.report.render import markdown_table
    from pipeline.report.step import run

    work = plan.work if (plan.work / "teacher_report.json").is_file() else None
    if work is None:
        click.echo(f"note: no learning check: {plan.work / 'teacher_report.json'} not found")
    try:
        result = run(cfg, [plan.runs], plan.report, plan.expected_runs(), work, plan.root)
    except UserError as e:
        click.echo(f"report: {e}")
        return
    click.echo(markdown_table(result, cfg.decimals), nl=False)
    bad = sum(r.status != "complete" for r in result.runs)
    if bad:
        where = _shown(plan.report / "results.md")
        click.echo(f"({bad} incomplete or failed run(s) not averaged: see {where})")
