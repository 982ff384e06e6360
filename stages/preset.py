"""`rise-pipeline preset NAME --data-root PATH`: move params.yaml from the demo world to a real dataset.

The domains are read from the data root (`pipeline.presets.plan_domains`) before anything is written, so a
refused root leaves params.yaml as it was. Round-trips params.yaml with ruamel (which DVC itself uses) so
its comments survive.
"""

from __future__ import annotations

import io
from pathlib import Path

import click

from pipeline import io as pio
from pipeline.errors import UserError
from pipeline.presets import DATASETS, apply_overlay, dataset_overlay, plan_domains
from stages.options import aliased_option


@click.command(context_settings={"max_content_width": 100})
@click.argument("name", type=click.Choice(sorted(DATASETS)))
@click.option("--data-root", required=True,
              help="The dataset: DomainBed folders DATA/<domain>/<class>/<image>, or a .csv/.jsonl index "
                   "(path, domain, class). Its domain spellings become sweep.domains.")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=Path("params.yaml"),
              show_default=True, help="params.yaml to update in place (atomically; comments kept).")
@aliased_option("--model", "teacher", aliases=("--teacher",), default="ViT-B-16-quickgelu", show_default=True,
                help="open_clip teacher model, as extract's --model (RISE: OpenAI's ViT-B/16, which needs the "
                     "-quickgelu config).")
@click.option("--pretrained", default="openai", show_default=True, help="Teacher weights, as extract's --pretrained (tag or checkpoint path).")
@click.option("--student", default="resnetv2_50x1_bit.goog_in21k_ft_in1k", show_default=True,
              help="timm student (RISE's default; resnet50 / resnet18 are DomainBed's usual students).")
def preset(name, data_root, params_path, teacher, pretrained, student):
    """Apply RISE's defaults for dataset NAME (anchors, lr, grid, teacher, student) to params.yaml.

    sweep.domains are the domains found under --data-root, matched to NAME's known ones regardless of case
    and punctuation (a warning per known domain missing or extra domain found); a root that does not exist
    yet gets NAME's canonical spellings. The demo world and demo teacher stages are switched off, so
    `dvc repro` then spends no time on them.
    """
    from ruamel.yaml import YAML

    if not params_path.is_file():
        raise UserError(f"params file not found: {params_path}")
    yaml = YAML()
    yaml.preserve_quotes = True
    doc = yaml.load(params_path.read_text())
    plan = plan_domains(name, data_root, _class_map(doc))
    for line in plan.messages:
        click.echo(line, err=True)
    apply_overlay(doc, dataset_overlay(name, str(data_root), plan, teacher, pretrained, student))
    buf = io.StringIO()
    yaml.dump(doc, buf)
    pio.write_text(params_path, buf.getvalue())
    classes = f", {len(plan.classes)} classes" if plan.classes else ""
    click.echo(f"{params_path}: switched to {name} at {data_root}: domains {', '.join(plan.domains)}{classes} "
               f"(teacher {teacher}/{pretrained}, student {student})")


def _class_map(doc) -> dict:
    """params.yaml's shard.class_map, so the preset sees the classes the shard step will see."""
    shard = doc.get("shard") if isinstance(doc, dict) else None
    mapping = shard.get("class_map") if isinstance(shard, dict) else None
    return dict(mapping) if isinstance(mapping, dict) else {}
