"""`rise-pipeline preset NAME --data-root PATH`: move params.yaml from the demo world to a real dataset.

Round-trips params.yaml with ruamel (which DVC itself uses) so its comments survive.
"""

from __future__ import annotations

import io
from pathlib import Path

import click

from pipeline import io as pio
from pipeline.errors import UserError
from pipeline.presets import DATASETS, apply_overlay, dataset_overlay


@click.command(context_settings={"max_content_width": 100})
@click.argument("name", type=click.Choice(sorted(DATASETS)))
@click.option("--data-root", required=True, help="The dataset in DomainBed layout (DATA/<domain>/<class>/<image>).")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=Path("params.yaml"),
              show_default=True, help="params.yaml to update in place (atomically; comments kept).")
@click.option("--teacher", default="ViT-B-16", show_default=True, help="open_clip teacher model.")
@click.option("--pretrained", default="openai", show_default=True, help="Teacher weights (tag or checkpoint path).")
@click.option("--student", default="resnetv2_50x1_bit.goog_in21k_ft_in1k", show_default=True,
              help="timm student (RISE's default; resnet50 / resnet18 are DomainBed's usual students).")
def preset(name, data_root, params_path, teacher, pretrained, student):
    """Apply RISE's defaults for dataset NAME (anchors, lr, grid, teacher, student) to params.yaml.

    The demo world and demo teacher stages are switched off, so `dvc repro` then spends no time on them.
    """
    from ruamel.yaml import YAML

    if not params_path.is_file():
        raise UserError(f"params file not found: {params_path}")
    if not Path(data_root).is_dir():
        raise UserError(f"data root not found: {data_root}")
    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(params_path.read_text())
    apply_overlay(doc, dataset_overlay(name, str(data_root), teacher, pretrained, student))
    buf = io.StringIO()
    yaml.dump(doc, buf)
    pio.write_text(params_path, buf.getvalue())
    click.echo(f"{params_path}: switched to {name} at {data_root} (teacher {teacher}/{pretrained}, student {student})")
