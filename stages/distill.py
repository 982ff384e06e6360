"""`rise-pipeline distill`: parse, call `pipeline.distill.step.run`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.distill.config import DistillConfig
from stages.options import config_options, overrides_for, params_option


@click.command(context_settings={"max_content_width": 100})
@click.option("--work", type=click.Path(path_type=Path), required=True,
              help="Work folder written by `rise-pipeline extract` (shards/ and embeddings.h5).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Run folder: metrics.json, epochs.csv, config.json, checkpoints/.")
@params_option
@config_options(DistillConfig)
@click.option("--restart-stale", is_flag=True,
              help="Discard checkpoints in --out from another config or store instead of refusing (dvc.yaml uses it).")
def distill(work, out, params_path, restart_stale, **options):
    """Train one student from WORK's teacher store, holding out --target-domain (leave-one-domain-out).

    Defaults are RISE's protocol; the `distill` section of --params replaces them, flags replace both.
    """
    from pipeline.distill.step import run

    cfg = load_section(DistillConfig, read_params(params_path), "distill", overrides_for(DistillConfig, options))
    run(cfg, work=work, out=out, restart_stale=restart_stale)
