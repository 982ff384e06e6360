"""`rise-pipeline distill`: parse, call `pipeline.distill.step.run` (one student) or `run_group` (a group)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.distill.config import DistillConfig
from pipeline.errors import UserError
from stages.options import config_options, overrides_for, params_option


@click.command(context_settings={"max_content_width": 100})
@click.option("--work", type=click.Path(path_type=Path), default=None,
              help="Work folder written by `rise-pipeline extract` (shards/ and embeddings.h5). With --sweep: "
                   "data.work of --params by default.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder: metrics.json, epochs.csv, config.json, checkpoints/. A group writes one such "
                   "folder per distinct student, OUT/<method>-<hash>/. With --sweep: data/runs/<domain>-<seed> "
                   "beside --params by default.")
@params_option
@config_options(DistillConfig, many=("method",))
@click.option("--grid", default=None, metavar="JSON|FILE",
              help="Train a group: a list of override mappings (JSON text, or a JSON/YAML file), one config each, "
                   "e.g. '[{\"w_dist\": 0.5}, {\"w_dist\": 2}]'; members are every method x every config.")
@click.option("--sweep", "from_sweep", is_flag=True,
              help="Train the sweep plan of --params (its domains x seeds groups, methods, grid and extra "
                   "teachers, its folders: what dvc.yaml's distill stage and `sweep run` train): every group, "
                   "sweep.jobs of them at once on this machine, or only the group of --target-domain and --seed.")
@click.option("--max-members", type=int, default=0, show_default=True,
              help="Most students trained in one data pass (0: all on the CPU; on a GPU as many as fit in memory).")
@click.option("--restart-stale", is_flag=True,
              help="Discard checkpoints in --out from another config or store instead of refusing (dvc.yaml uses it).")
def distill(work, out, params_path, grid, from_sweep, max_members, restart_stale, **options):
    """Train students from WORK's teacher store, holding out --target-domain (leave-one-domain-out).

    One method without --grid trains one student into OUT. Several methods (--method erm,kd,rise) and/or a
    --grid train a group in one data pass: each batch is read, decoded and replayed once and every member
    takes its own step on it; each member's result equals its run alone. Members must share the batches --
    image size, batch size, balance, seed (and loader workers) -- to share a pass; members that differ there
    are trained in separate passes, automatically. Student, method, loss weights, lr and epochs may differ.
    --sweep trains the sweep plan of --params instead (dvc.yaml's distill stage): every held-out domain x seed
    group, sweep.jobs of them at once, or the one group of --target-domain and --seed.

    Defaults are RISE's protocol; the `distill` section of --params replaces them, flags replace both.
    """
    from pipeline.distill.group import is_group, parse_grid, parse_methods

    if max_members < 0:
        raise UserError(f"--max-members must be >= 0, got {max_members}")
    params = read_params(params_path)
    methods_flag = options.pop("method", None)
    if from_sweep:
        _sweep_group(params_path, work, out, grid, methods_flag, restart_stale, max_members, options)
        return
    if work is None or out is None:
        raise UserError("--work and --out are required (or --sweep --params P, whose plan has them)")
    # A list of methods comes from --method; a single one may also come from params.yaml, where load_section
    # checks it like any other key.
    methods = parse_methods(methods_flag, "--method") if methods_flag is not None else None
    grid_list = parse_grid(grid) if grid is not None else None
    base = load_section(DistillConfig, params, "distill",
                        {**overrides_for(DistillConfig, options), "method": methods[0] if methods else None})
    methods = methods or [base.method]
    if not is_group(methods, grid_list):
        from pipeline.distill.step import run

        run(base, work=work, out=out, restart_stale=restart_stale)
        return
    from pipeline.distill.step import run_group

    results = run_group(base, methods, grid_list or [{}], work=work, out=out, restart_stale=restart_stale,
                        max_members=max_members)
    _summary(results)


def _summary(results: dict[str, dict]) -> None:
    width = max(len(name) for name in results)
    for name, m in results.items():
        click.echo(f"{name:<{width}}  target {m['target_acc']:.4f}  source-val {m['source_val_acc']:.4f}  "
                   f"(epoch {m['selected_epoch']})")


def _sweep_group(params_path, work, out, grid, methods_flag, restart_stale, max_members, options) -> None:
    """`distill --sweep`: the plan's group for --target-domain and --seed (the distill section's seed when not
    given), or without a target domain every group of the plan; the other flags applied to the distill section
    as usual; WORK and OUT from the plan unless given."""
    from pipeline.distill.step import run_members
    from pipeline.plan import plan_sweep

    if params_path is None:
        raise UserError("--sweep needs --params with a 'sweep' section (methods, grid)")
    if methods_flag is not None or grid is not None:
        raise UserError("--sweep takes the methods and grid from --params; drop --method / --grid")
    plan = plan_sweep(params_path, overrides_for(DistillConfig, options), need_groups=False)
    if not plan.base.target_domain:
        _every_group(plan, work, out, max_members, restart_stale)
        return
    group = plan.group(plan.base.target_domain, plan.base.seed)
    results = run_members(list(group.members), work or plan.work, out or group.out, restart_stale=restart_stale,
                          max_members=max_members)
    _summary({name: metrics for name, (metrics, _) in results.items()})


def _every_group(plan, work, out, max_members, restart_stale) -> None:
    """`distill --sweep` without --target-domain (dvc.yaml's distill stage): every group of the plan,
    `sweep.jobs` at once in local worker processes, one line per group as it ends, then the table; exit
    status 1 when a group failed (the others' students are complete and kept)."""
    import sys

    from pipeline.sweep import local_jobs, run_and_print

    if work is not None or out is not None or max_members:
        raise UserError("--work, --out and --max-members name one group's folders: give --target-domain, or "
                        "leave them to the plan of --params")
    if not plan.groups:  # the plan was made without requiring them (a single group names its own)
        raise UserError("the sweep plan has no groups: set sweep.domains and sweep.seeds in --params")
    jobs = local_jobs(plan)
    click.echo(f"distill: {len(plan.groups)} group(s), {sum(len(g.members) for g in plan.groups)} student(s), "
               f"{jobs or 1} at a time{' (local worker processes)' if jobs else ''}")
    outcomes = run_and_print(plan, click.echo, workers=jobs, restart_stale=restart_stale)
    if any(o.failed for o in outcomes):
        sys.exit(1)  # after every group's line is printed
