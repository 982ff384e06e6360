"""`rise-pipeline pretrain-teacher`: pretrain the demo CLIP teacher on its own captioned world images.

Writes OUT/teacher.pt (an open_clip checkpoint: `--pretrained OUT/teacher.pt` loads it like any real
one) and OUT/pretrain_report.json (zero-shot accuracy per domain, loss curve, timings, resolved config).
Reads the `teacher` section and, for the classes, domains and image size, the `world` section.
"""

from __future__ import annotations

from pathlib import Path

import click
from tqdm import tqdm

from pipeline import demo_teacher, io
from pipeline import world as demo_world
from pipeline.config import load_section, read_params, to_dict
from stages.world import write_placeholder


@click.command(context_settings={"max_content_width": 100})
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for teacher.pt and pretrain_report.json.")
@click.option("--params", "params_path", type=click.Path(path_type=Path), default=None,
              help="params.yaml to read the 'teacher' and 'world' sections from (flags override it).")
@click.option("--seed", type=int, default=None, help="Seed of initialisation and batch order [0].")
@click.option("--epochs", type=int, default=None, help="Passes over the pretraining corpus.")
@click.option("--per-cell", type=int, default=None, help="Pretraining images per class x domain.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (0: torch's default) [2].")
def pretrain_teacher(out, params_path, seed, epochs, per_cell, threads):
    """Pretrain the small demo CLIP contrastively on captioned images of all four styles."""
    params = read_params(params_path)
    wcfg = load_section(demo_world.WorldConfig, params, "world")
    cfg = load_section(demo_teacher.PretrainConfig, params, "teacher",
                       dict(seed=seed, epochs=epochs, per_cell=per_cell, threads=threads))
    if not cfg.enabled:
        write_placeholder(out, "teacher.enabled is false: embed.pretrained names a real CLIP.")
        return
    model, report = demo_teacher.run(
        cfg, wcfg,
        progress_items=lambda it: tqdm(it, desc="render", unit="img", leave=False),
        progress_steps=lambda n: tqdm(total=n, desc="pretrain", unit="step"))
    report["config"] = {"teacher": to_dict(cfg), "world": to_dict(wcfg)}
    with io.atomic_path(out / "teacher.pt", suffix=".pt") as tmp:
        demo_teacher.save_checkpoint(model, tmp, {"model": cfg.model, "zero_shot": report["zero_shot"]})
    io.write_json(out / "pretrain_report.json", report)
    zs = report["zero_shot"]
    click.echo(f"teacher: {cfg.model} pretrained on {report['corpus_size']} captioned images in "
               f"{report['seconds']['train']} s -> {out / 'teacher.pt'}")
    click.echo("zero-shot accuracy: " + ", ".join(f"{d} {a:.3f}" for d, a in zs["per_domain"].items())
               + f"; mean {zs['mean']:.3f} (chance {zs['chance']:.3f})")
