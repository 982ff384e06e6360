"""`rise-pipeline pretrain-student`: parse, call `pipeline.demo.steps.run_student_pretrain`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.demo.pretrain_student import StudentPretrainConfig
from pipeline.demo.world import WorldConfig
from stages.options import config_options, overrides_for, params_option


@click.command(context_settings={"max_content_width": 100})
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for backbone.pth (timm state_dict) and pretrain_report.json.")
@params_option
@config_options(StudentPretrainConfig)
def pretrain_student(out, params_path, **options):
    """Pretrain the demo student's backbone on photos of other objects (the demo's stand-in for ImageNet).

    Reads the `student` section and, for the rendering size, the `world` section.
    """
    from pipeline.demo.steps import run_student_pretrain

    params = read_params(params_path)
    wcfg = load_section(WorldConfig, params, "world")
    cfg = load_section(StudentPretrainConfig, params, "student", overrides_for(StudentPretrainConfig, options))
    run_student_pretrain(cfg, wcfg, out)
