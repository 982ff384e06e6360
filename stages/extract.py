"""`rise-pipeline extract`: stage one. Step "shard" (stages.shard) then step "embed" (stages.embed).

This module only parses the command line into the two steps' typed configs; the steps live in their
own modules. Command-line values override the `shard` / `embed` sections of --params.
"""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.errors import UserError

STEPS = ("shard", "embed")


def _parse_steps(value: str) -> list[str]:
    steps = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise UserError(f"unknown step(s) {', '.join(bad) or '(none)'}; valid: {', '.join(STEPS)}")
    return [s for s in STEPS if s in steps]  # always shard before embed


@click.command(context_settings={"max_content_width": 100})
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Dataset: a DomainBed-style folder DATA/<domain>/<class>/<image>, or an index file "
                   "(.csv or .jsonl with columns path, domain, class). Needed by the shard step.")
@click.option("--out", "work", type=click.Path(path_type=Path), required=True,
              help="Work folder: shards/, manifest, embeddings.h5 and reports are written here.")
@click.option("--steps", default="shard,embed", show_default=True, help="Comma-separated steps to run.")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="params.yaml to read the 'shard' and 'embed' sections from (flags override it).")
# shard step
@click.option("--val-fraction", type=float, default=None, help="Share of each domain held out as validation [0.1].")
@click.option("--seed", type=int, default=None, help="Seed of the train/val split and of the augmented views [0].")
@click.option("--shard-size", type=int, default=None, help="Samples per shard tar [1000].")
@click.option("--max-side", type=int, default=None, help="Re-encode images whose longer side exceeds N pixels [keep originals].")
# embed step
@click.option("--model", default=None, help="Teacher: open_clip model name (ViT-B-16), hf-hub:ORG/REPO, or local-dir:PATH.")
@click.option("--pretrained", default=None, help="open_clip pretrained tag (openai) or a local checkpoint file.")
@click.option("--views", type=int, default=None, help="Augmented views K per training image (K >= epochs gives a fresh view every epoch).")
@click.option("--batch-size", type=int, default=None, help="Teacher batch size.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None, help="Teacher autocast precision on GPU.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where the teacher runs [auto].")
# both steps
@click.option("--workers", type=int, default=None, help="Local dask workers (shard), data-loader workers (embed).")
@click.option("--scheduler", default=None, help="Address of an existing dask.distributed scheduler (tcp://host:8786).")
def extract(data_root, work, steps, params_path, val_fraction, seed, shard_size, max_side,
            model, pretrained, views, batch_size, precision, device, workers, scheduler):
    """Stage one: shard DATA into WebDataset tars, then run the CLIP teacher once into WORK/embeddings.h5."""
    params = read_params(params_path)
    chosen = _parse_steps(steps)
    if "shard" in chosen:
        from stages import shard

        if data_root is None:
            raise UserError("--data-root is required for the shard step")
        cfg = load_section(shard.ShardConfig, params, "shard", dict(
            val_fraction=val_fraction, seed=seed, shard_size=shard_size, max_side=max_side, workers=workers))
        shard.run(cfg, data_root=data_root, work=work, scheduler=scheduler)
    if "embed" in chosen:
        from stages import embed

        cfg = load_section(embed.EmbedConfig, params, "embed", dict(
            model=model, pretrained=pretrained, views=views, batch_size=batch_size, precision=precision,
            device=device, workers=workers, seed=seed))
        embed.run(cfg, work=work, scheduler=scheduler)
