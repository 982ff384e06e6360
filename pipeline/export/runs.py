"""Reading a finished distill run back: its config, its selected epoch's student(s), its class names and text
embeddings (from the teacher store(s) it was trained from, which hold the class names; best.pt does not)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import layout
from ..errors import UserError
from ..store import StoreReader


@dataclass
class LoadedRun:
    """A complete run's selected epoch: one `Student` per teacher (one, or several for rise-mix)."""

    path: Path
    metrics: dict
    config: dict
    epoch: int
    students: list            # pipeline.distill.students.Student, in eval mode
    text_class: list[np.ndarray]  # each student's teacher's class text embeddings (C x D)
    class_names: list[str]

    @property
    def is_mix(self) -> bool:
        return len(self.students) > 1

    @property
    def image_size(self) -> int:
        return int(self.config["image_size"])

    @property
    def text_ensemble(self) -> bool:
        return bool(self.config.get("text_ensemble"))


def _members(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if (p / "metrics.json").is_file() or (p / "config.json").is_file())


def check_run_folder(path: str | Path) -> tuple[dict, Path]:
    """metrics.json of a complete run and its best.pt, or one line saying why RUN is not one."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run folder not found: {path}")
    metrics_file, best = path / "metrics.json", path / "checkpoints" / "best.pt"
    if not metrics_file.is_file():
        members = _members(path) if not (path / "config.json").is_file() else []
        if members:
            raise UserError(f"{path} is a group folder, not a run: name one of its members, e.g. "
                            f"{path / members[0]} ({len(members)} member(s): {', '.join(members[:6])})")
        raise UserError(f"{path} is not a complete distill run (no metrics.json: not trained, or still training)")
    try:
        metrics = json.loads(metrics_file.read_text())
    except (ValueError, UnicodeDecodeError):
        raise UserError(f"{metrics_file} is not valid JSON; is {path} a distill run?") from None
    if not isinstance(metrics, dict) or metrics.get("status") != "complete" or not isinstance(metrics.get("config"),
                                                                                                 dict):
        raise UserError(f"{path} is not a complete distill run (metrics.json has no status 'complete')")
    if not best.is_file():
        raise UserError(f"{path} is not a complete distill run: {best} is missing")
    return metrics, best


def _stores(work: Path, teachers: list[str], expected_id: str, run: Path) -> list[StoreReader]:
    from ..distill.checkpoints import run_identity

    stores = []
    for name in teachers:
        file = layout.store(work, name)
        if not file.is_file():
            raise UserError(f"{run} was trained from teacher store {name!r}, not found at {file}: pass --work "
                            "with the work folder it was distilled from (its class names live there)")
        stores.append(StoreReader(file))
    if run_identity(stores) != expected_id:
        raise UserError(f"the teacher store(s) in {work} are not the ones {run} was trained from (other classes, "
                        "prompts or shards): pass --work with the run's own work folder")
    return stores


def load_run(path: str | Path, work: str | Path) -> LoadedRun:
    """The run in PATH at its selected epoch (checkpoints/best.pt), with the class names of its store in WORK."""
    from ..distill.checkpoints import BEST_KEYS, read_checkpoint
    from ..distill.students import Student

    path = Path(path)
    metrics, best = check_run_folder(path)
    state = read_checkpoint(best, BEST_KEYS)
    config = state["config"]
    stores = _stores(Path(work), list(config.get("teachers", ["default"])), state["store_id"], path)
    model = state["model"]
    parts = [model[str(k)] for k in range(len(stores))] if len(stores) > 1 else [model]
    students = []
    for store, weights in zip(stores, parts, strict=True):
        student = Student(config["student"], np.zeros_like(store.text_class), pretrained=False)
        try:
            student.load_state_dict(weights)
        except (RuntimeError, KeyError) as e:
            raise UserError(f"{best} does not fit a {config['student']!r} student "
                            f"({str(e).splitlines()[0][:160]})") from None
        students.append(student.eval())
    return LoadedRun(path=path, metrics=metrics, config=config, epoch=int(state["epoch"]), students=students,
                     text_class=[np.asarray(s.text_class, dtype=np.float32) for s in stores],
                     class_names=list(stores[0].class_names))


@torch.no_grad()
def student_scores(student, x_uint8: torch.Tensor, text_class: torch.Tensor | None) -> torch.Tensor:
    """One student's class scores as distill's evaluation computes them (`Trainer.scores`, CPU float32):
    softmax of the logits, plus softmax(100 cos(z, t_hat)) when the run used the text ensemble."""
    from ..distill.losses import LOGIT_SCALE

    z, logits = student(student.normalize(x_uint8))
    scores = logits.float().softmax(-1)
    if text_class is not None:
        t_hat = torch.nn.functional.normalize(text_class, dim=-1)
        cos = torch.nn.functional.normalize(z.float(), dim=-1) @ t_hat.T
        scores = scores + (LOGIT_SCALE * cos).softmax(-1)
    return scores
