"""`rise-pipeline world`: write the demo world (the embedded default dataset) in DomainBed layout.

OUT holds images only, because the shard step records every file under a dataset root. The captions
(one per image) go to --captions when asked for, and the README's sample grid to --grid.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from tqdm import tqdm

from pipeline import io
from pipeline import world as demo_world
from pipeline.config import load_section, read_params, to_dict
from pipeline.errors import UserError


def write_placeholder(out: Path, why: str) -> None:
    """A disabled demo stage still leaves its (tiny) DVC output, so dvc.yaml stays one pipeline and
    `dvc repro` spends no time on the demo when a real dataset/teacher is configured."""
    if out.exists() and not (out / "DISABLED.txt").exists():
        import shutil

        shutil.rmtree(out)  # a previous real output: replaced, as the enabled stage replaces it too
    io.write_text(out / "DISABLED.txt", why + "\n")
    click.echo(f"{out}: stage disabled ({why})")


@click.command(context_settings={"max_content_width": 100})
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Dataset root to write: OUT/<domain>/<class>/<index>.png (replaced as a whole).")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="params.yaml to read the 'world' section from (flags override it).")
@click.option("--seed", type=int, default=None, help="Seed of the images [0].")
@click.option("--per-cell", type=int, default=None, help="Images per class x domain cell [50].")
@click.option("--image-size", type=int, default=None, help="Image side in pixels [64].")
@click.option("--captions", type=click.Path(path_type=Path), default=None,
              help="Also write one JSON line per image {path, domain, class, caption} here (outside OUT).")
@click.option("--grid", type=click.Path(path_type=Path), default=None,
              help="Also write a labelled class x domain PNG grid of samples here (the README's figure).")
def world(out, params_path, seed, per_cell, image_size, captions, grid):
    """Generate the seeded multi-domain demo world (photo, sketch, cartoon, painting)."""
    cfg = load_section(demo_world.WorldConfig, read_params(params_path), "world",
                       dict(seed=seed, per_cell=per_cell, image_size=image_size))
    if not cfg.enabled:
        write_placeholder(out, "world.enabled is false: data.root points at a real dataset.")
        return
    for extra in (captions, grid):
        if extra is not None and out.resolve() in extra.resolve().parents:
            raise UserError(f"{extra} is inside the dataset root {out}; write it elsewhere")
    total = cfg.per_cell * len(cfg.classes) * len(cfg.domains)
    start = time.perf_counter()
    rows = demo_world.write_world(cfg, out, progress=lambda it: tqdm(it, total=total, desc="world", unit="img"))
    seconds = time.perf_counter() - start
    if captions is not None:
        io.write_text(captions, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    if grid is not None:
        with io.atomic_path(grid, suffix=".png") as tmp:
            demo_world.sample_grid(cfg).quantize(256).save(tmp, format="PNG", optimize=True)  # keeps it < 300 KB
    click.echo(f"world: {len(rows)} images ({len(cfg.classes)} classes x {len(cfg.domains)} domains x "
               f"{cfg.per_cell}) in {out} [{seconds:.1f} s]; config {to_dict(cfg)}")

