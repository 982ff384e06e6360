"""The demo's three steps: write the world (`run_world`), pretrain its CLIP teacher (`run_pretrain`) and
pretrain its student backbone (`run_student_pretrain`, the stand-in for ImageNet weights).

All three are DVC stages that a real dataset switches off (`enabled: false`): they then leave only a small
placeholder output, so dvc.yaml stays one pipeline and `dvc repro` spends no time on the demo.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from .. import io
from ..config import to_dict
from ..errors import UserError
from ..progress import progress
from . import pretrain_student as demo_student
from . import pretrain_teacher as demo_teacher
from . import world as demo_world

log = logging.getLogger(__name__)
PLACEHOLDER = "DISABLED.txt"


def write_placeholder(out: Path, why: str) -> None:
    """A disabled demo stage's output: one note saying why (a previous real output is replaced)."""
    if out.exists() and not (out / PLACEHOLDER).exists():
        shutil.rmtree(out)
    io.write_text(out / PLACEHOLDER, why + "\n")
    log.info("%s: stage disabled (%s)", out, why)


def run_world(cfg: demo_world.WorldConfig, out: Path, captions: Path | None = None,
              grid: Path | None = None) -> list[dict]:
    """Write the world under OUT (images only: the shard step records every file under a root), and
    optionally its captions (JSON lines) and the README's sample grid, both outside OUT."""
    if not cfg.enabled:
        write_placeholder(out, "world.enabled is false: data.root points at a real dataset.")
        return []
    for extra in (captions, grid):
        if extra is not None and out.resolve() in extra.resolve().parents:
            raise UserError(f"{extra} is inside the dataset root {out}; write it elsewhere")
    total = cfg.per_cell * len(cfg.classes) * len(cfg.domains)
    start = time.perf_counter()
    rows = demo_world.write_world(cfg, out, progress=lambda it: progress(it, total=total, desc="world", unit="img"))
    seconds = time.perf_counter() - start
    if captions is not None:
        io.write_text(captions, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    if grid is not None:
        with io.atomic_path(grid, suffix=".png") as tmp:
            demo_world.sample_grid(cfg).quantize(256).save(tmp, format="PNG", optimize=True)  # keeps it < 300 KB
    log.info("world: %d images (%d classes x %d domains x %d) in %s [%.1f s]; config %s", len(rows),
             len(cfg.classes), len(cfg.domains), cfg.per_cell, out, seconds, to_dict(cfg))
    return rows


def _pretrain_bars() -> dict:
    """The progress bars of both pretrainings: rendering (per image), training (per step)."""
    return {"progress_items": lambda it: progress(it, desc="render", unit="img", leave=False),
            "progress_steps": lambda n: progress(total=n, desc="pretrain", unit="step")}


def run_pretrain(cfg: demo_teacher.PretrainConfig, wcfg: demo_world.WorldConfig, out: Path) -> dict | None:
    """Pretrain the demo CLIP into OUT/teacher.pt (an open_clip checkpoint: `--pretrained OUT/teacher.pt`
    loads it like any real one) and OUT/pretrain_report.json; returns the report."""
    if not cfg.enabled:
        write_placeholder(out, "teacher.enabled is false: embed.pretrained names a real CLIP.")
        return None
    model, report = demo_teacher.run(cfg, wcfg, **_pretrain_bars())
    report["config"] = {"teacher": to_dict(cfg), "world": to_dict(wcfg)}
    demo_teacher.save_checkpoint(model, out / "teacher.pt", {"model": cfg.model, "zero_shot": report["zero_shot"]})
    io.write_json(out / "pretrain_report.json", report)
    zs = report["zero_shot"]
    log.info("teacher: %s pretrained on %d captioned images in %s s -> %s", cfg.model, report["corpus_size"],
             report["seconds"]["train"], out / "teacher.pt")
    log.info("zero-shot accuracy: %s; mean %.3f (chance %.3f)",
             ", ".join(f"{d} {a:.3f}" for d, a in zs["per_domain"].items()), zs["mean"], zs["chance"])
    return report


def run_student_pretrain(cfg: demo_student.StudentPretrainConfig, wcfg: demo_world.WorldConfig,
                         out: Path) -> dict | None:
    """Pretrain the demo student's backbone into OUT/backbone.pth (a timm state_dict without classifier:
    `distill.checkpoint: OUT/backbone.pth` loads it like any local timm weights) and OUT/pretrain_report.json."""
    if not cfg.enabled:
        write_placeholder(out, "student.enabled is false: the student starts from timm's own weights.")
        return None
    state, report = demo_student.run(cfg, wcfg, **_pretrain_bars())
    report["sha256"] = io.write_torch(out / "backbone.pth", state)
    report["config"] = {"student": to_dict(cfg), "world_image_size": wcfg.image_size}
    io.write_json(out / "pretrain_report.json", report)
    log.info("student: %s (%d parameters) pretrained on %d images of %d other objects (%s) in %s s -> %s",
             cfg.model, report["parameters"], report["corpus_size"], len(cfg.classes), ", ".join(report["domains"]),
             report["seconds"]["train"], out / "backbone.pth")
    log.info("held-out accuracy on the pretraining classes: %.3f (chance %.3f); training loss by epoch %s",
             report["eval_acc"], report["chance"], " ".join(f"{v:.2f}" for v in report["loss_per_epoch"]))
    return report
