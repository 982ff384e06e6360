"""`rise-pipeline sweep GRID`: run one of RISE's loss-weight grids as a DVC experiment.

The distill stage in dvc.yaml is a matrix over held-out domain x method x seed x `sweep.grid`; a grid
preset is just a value of `sweep.grid`. So a sweep is `dvc exp run -S sweep.grid=[...]`: the shard and
embed stages are unchanged and reused from the cache, only students train, and the report selects the
config per cell by training-domain validation.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import click

from pipeline.errors import UserError
from pipeline.presets import GRIDS


@click.command(context_settings={"max_content_width": 100})
@click.argument("grid", type=click.Choice(sorted(GRIDS)))
@click.option("--queue", is_flag=True, help="Queue the experiment (`dvc queue start -j N` runs it) instead of running now.")
@click.option("--name", default=None, help="Experiment name (default: sweep-GRID).")
@click.option("--dry-run", is_flag=True, help="Print the dvc command instead of running it.")
def sweep(grid, queue, name, dry_run):
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
