"""`rise-pipeline extract`: parse, call the shard step and/or the embed step of `pipeline.extract`."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.config import load_section, read_params
from pipeline.errors import UserError
from pipeline.extract.embed_step import EmbedConfig
from pipeline.extract.shard_step import ShardConfig
from stages.options import aliased_option, config_options, overrides_for, params_option

STEPS = ("shard", "embed")


def _parse_steps(value: str) -> list[str]:
    steps = [s.strip() for s in value.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        raise UserError(f"unknown step(s) {', '.join(bad) or '(none)'}; valid: {', '.join(STEPS)}")
    return [s for s in STEPS if s in steps]  # always shard before embed


def _sweep_domains(params: dict) -> list[str] | None:
    """The sweep plan's held-out domains (params.yaml's typed `sweep` section; a YAML folder name 2007 reads
    as "2007"), if the params have a sweep with domains. Read through `pipeline.params`, the section type the
    plan (`pipeline.plan`) uses, without depending on the distill code."""
    if not isinstance(params.get("sweep"), dict) or params["sweep"].get("domains") is None:
        return None
    from pipeline.params import load_sweep

    return list(load_sweep(params).domains)


@click.command(context_settings={"max_content_width": 100})
@click.option("--data-root", type=click.Path(path_type=Path), default=None,
              help="Dataset: a DomainBed-style folder DATA/<domain>/<class>/<image>, or an index file "
                   "(.csv or .jsonl with columns path, domain, class). Needed by the shard step.")
@aliased_option("--work", "work", aliases=("--out",), type=click.Path(path_type=Path), required=True,
                help="Work folder: shards/, manifest, embeddings.h5 and reports are written here.")
@click.option("--steps", default="shard,embed", show_default=True, help="Comma-separated steps to run.")
@params_option
@config_options(ShardConfig, EmbedConfig)
@click.option("--scheduler", default=None, help="Address of an existing dask.distributed scheduler (tcp://host:8786).")
def extract(data_root, work, steps, params_path, scheduler, **options):
    """Stage one: shard DATA into WebDataset tars, then run the CLIP teacher once into WORK/embeddings.h5.

    Options of the `shard` and `embed` sections of --params; a flag replaces the file's value.
    """
    params = read_params(params_path)
    chosen = _parse_steps(steps)
    if "shard" in chosen:
        from pipeline.extract.shard_step import run as run_shard

        if data_root is None:
            raise UserError("--data-root is required for the shard step")
        run_shard(load_section(ShardConfig, params, "shard", overrides_for(ShardConfig, options)),
                  data_root=data_root, work=work, scheduler=scheduler, expected_domains=_sweep_domains(params))
    if "embed" in chosen:
        from pipeline.extract.embed_step import run as run_embed

        run_embed(load_section(EmbedConfig, params, "embed", overrides_for(EmbedConfig, options)),
                  work=work, scheduler=scheduler)
