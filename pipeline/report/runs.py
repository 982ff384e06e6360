"""Find and read distill run folders: one `Run` per folder, whatever state it was left in.

A run folder holds `metrics.json` or `config.json` (a report folder, which holds `results.md`, is not one).
A run counts as complete only when its `metrics.json` says so and carries the method, held-out domain,
integer seed and both accuracies as fractions in [0, 1]; anything else makes it incomplete or failed, with
the reason, and it is listed in the report but never averaged. Its hyper-parameters (what defines the config
apart from the cell it competes in) and its `epochs.csv` curve are read too.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

REQUIRED = ("method", "target_domain", "seed", "source_val_acc", "target_acc")
# Resolved-config keys that say where or how fast a run went, or which cell it is in - not what it learnt.
NOT_HPARAMS = {"method", "target_domain", "target", "seed", "out", "work", "store", "device", "workers",
               "threads", "num_workers", "scheduler", "progress", "resume"}


@dataclass(frozen=True)
class Run:
    path: Path
    status: str  # "complete" | "incomplete" | "failed"
    reason: str = ""
    method: str = ""
    target: str = ""
    seed: int = 0
    source_val_acc: float = math.nan
    target_acc: float = math.nan
    teacher_target_acc: float | None = None
    hparams: dict = field(default_factory=dict)
    epochs: tuple[dict, ...] = ()
    epochs_problem: str = ""
    selected_epoch: int | None = None

    @property
    def hparams_key(self) -> str:
        return json.dumps(self.hparams, sort_keys=True, default=str)


def is_run_dir(path: Path) -> bool:
    # A report folder holds a metrics.json too (for `dvc metrics show`); its results.md marks it as not a run.
    return ((path / "metrics.json").is_file() or (path / "config.json").is_file()) \
        and not (path / "results.md").is_file()


def find_runs(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Run folders named in `paths`, searching directories recursively; sorted, each once."""
    skip = {Path(p).resolve() for p in exclude}
    found: dict[Path, Path] = {}

    def walk(d: Path) -> None:
        if d.resolve() in skip:
            return
        if is_run_dir(d):
            found.setdefault(d.resolve(), d)
            return  # runs do not nest; do not descend into checkpoints/
        for child in sorted(d.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                walk(child)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"run or folder not found: {p}")
        if not p.is_dir():
            raise UserError(f"not a run folder: {p} (give a run folder or a folder of runs)")
        before = len(found)
        walk(p)
        if len(found) == before and not is_run_dir(p):
            raise UserError(f"no runs found under {p} (a run folder holds metrics.json or config.json)")
    return sorted(found.values(), key=str)


def _fraction(metrics: dict, key: str) -> float:
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} is not a finite number: {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key}={value!r} is outside [0, 1] (accuracies are fractions)")
    return float(value)


def _hparams(metrics: dict) -> dict:
    """Everything that defines the config apart from the cell it belongs to (method, target, seed)."""
    out = {k: metrics[k] for k in ("student", "temperature", "lr", "epochs", "text_ensemble") if k in metrics}
    weights = metrics.get("weights")
    if isinstance(weights, dict):
        out.update(weights)

    def flatten(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else str(k), v)
        elif prefix.rsplit(".", 1)[-1] not in out and prefix.split(".")[0] not in NOT_HPARAMS:
            out[prefix] = value

    config = metrics.get("config")
    if isinstance(config, dict):
        flatten("", config)
    return out


def read_epochs(path: Path) -> tuple[dict, ...]:
    """epochs.csv rows with numeric values (empty cells -> NaN); raises ValueError when unreadable."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise ValueError("no 'epoch' column")
    return tuple({k: float(v) if v not in ("", None) else math.nan for k, v in r.items() if k} for r in rows)


def load_run(path: str | Path) -> Run:
    """Read one run folder. Problems make it incomplete or failed, never an exception."""
    path = Path(path)
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        return Run(path, "incomplete", "no metrics.json (not finished)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Run(path, "failed", f"metrics.json unreadable: {e}")
    if not isinstance(metrics, dict):
        return Run(path, "failed", "metrics.json is not a JSON object")
    status = metrics.get("status")
    if status != "complete":
        if status in ("failed", "error"):
            return Run(path, "failed", str(metrics.get("error") or f"status {status!r}"))
        return Run(path, "incomplete", f"status {status!r}")
    try:
        missing = [k for k in REQUIRED if k not in metrics]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        seed = metrics["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed is not an integer: {seed!r}")
        source_val, target = _fraction(metrics, "source_val_acc"), _fraction(metrics, "target_acc")
        teacher = _fraction(metrics, "teacher_target_acc") if metrics.get("teacher_target_acc") is not None \
            else None
    except ValueError as e:
        return Run(path, "failed", f"metrics.json: {e}")
    epochs: tuple[dict, ...] = ()
    problem = ""
    try:
        epochs = read_epochs(path / "epochs.csv")
    except FileNotFoundError:
        problem = "no epochs.csv"
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        problem = f"epochs.csv unreadable: {e}"
    selected = metrics.get("selected_epoch")
    return Run(path, "complete", method=str(metrics["method"]), target=str(metrics["target_domain"]),
               seed=seed, source_val_acc=source_val, target_acc=target, teacher_target_acc=teacher,
               hparams=_hparams(metrics), epochs=epochs, epochs_problem=problem,
               selected_epoch=selected if isinstance(selected, int) and not isinstance(selected, bool) else None)
