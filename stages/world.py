"""`rise-pipeline world`: parse, call `pipeline.demo.steps.run_world`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.demo.world import WorldConfig
from stages.options import config_options, overrides_for, params_option


@click.command(context_settings={"max_content_width": 100})
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Dataset root to write: OUT/<domain>/<class>/<index>.png (replaced as a whole).")
@params_option
@config_options(WorldConfig)
@click.option("--captions", type=click.Path(path_type=Path), default=None,
              help="Also write one JSON line per image {path, domain, class, caption} here (outside OUT).")
@click.option("--grid", type=click.Path(path_type=Path), default=None,
              help="Also write a labelled class x domain PNG grid of samples here (the README's figure).")
def world(out, params_path, captions, grid, **options):
    """Generate the seeded multi-domain demo world (photo, sketch, cartoon, painting) in DomainBed layout."""
    from pipeline.demo.steps import run_world

    cfg = load_section(WorldConfig, read_params(params_path), "world", overrides_for(WorldConfig, options))
    run_world(cfg, out, captions=captions, grid=grid)
