"""`rise-pipeline pretrain-teacher`: parse, call `pipeline.demo.steps.run_pretrain`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.demo.pretrain_teacher import PretrainConfig
from pipeline.demo.world import WorldConfig
from stages.options import config_options, overrides_for, params_option


@click.command(context_settings={"max_content_width": 100})
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for teacher.pt and pretrain_report.json.")
@params_option
@config_options(PretrainConfig)
def pretrain_teacher(out, params_path, **options):
    """Pretrain the small demo CLIP contrastively on captioned images of all four styles.

    Reads the `teacher` section and, for the classes, domains and image size, the `world` section.
    """
    from pipeline.demo.steps import run_pretrain

    params = read_params(params_path)
    wcfg = load_section(WorldConfig, params, "world")
    cfg = load_section(PretrainConfig, params, "teacher", overrides_for(PretrainConfig, options))
    run_pretrain(cfg, wcfg, out)
