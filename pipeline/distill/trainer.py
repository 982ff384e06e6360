"""The distill training loop: leave-one-domain-out, per-epoch evaluation, selection, checkpoints, resume.

`run(cfg, store, work, out)` trains one student from the teacher store and writes the run folder
(docs/contracts.md, "A distill run"). It never loads the teacher: KD targets, class texts and anchors all
come from the store. `cfg` is the stage's `DistillConfig` (any object with the same attributes).

Selection is DomainBed's training-domain validation: the epoch whose mean accuracy over the source
domains' validation splits is highest (earliest on ties). Resume: after every epoch `checkpoints/last.pt`
holds model, optimiser, scheduler and history; since the data order is a pure function of (seed, epoch),
a restarted run continues at the next epoch and ends exactly where an uninterrupted run would (CPU).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import to_dict
from ..devices import resolve_device
from ..errors import UserError
from ..io import atomic_path, write_json, write_text
from ..progress import progress
from ..shards import shard_paths
from .data import TRAIN, VAL, EvalStream, TrainStream, select_rows
from .losses import LOGIT_SCALE, method_weights, total_loss
from .students import build_student

EPOCH_COLUMNS = ("epoch", "lr", "loss", "loss_ce", "loss_kd", "loss_ad", "loss_rd", "source_val_acc", "target_acc")
TERMS = ("loss", "loss_ce", "loss_kd", "loss_ad", "loss_rd")
# Config fields that change nothing in the result, so a resume may differ in them.
NON_RESULT_FIELDS = ("device",)


def teacher_zero_shot_accuracy(store, rows: np.ndarray, block: int = 65536) -> float:
    """Accuracy of argmax cos(clean teacher embedding, t_hat) over `rows`, read in bounded blocks."""
    if len(rows) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(rows), block):
        r = rows[i:i + block]
        correct += int(((store.clean(r) @ store.text_class.T).argmax(1) == store.labels[r]).sum())
    return correct / len(rows)


def store_identity(store) -> str:
    """What a run's targets depend on: the store's provenance plus its text embeddings (prompts, anchors
    and class names change those without changing any image embedding)."""
    h = hashlib.sha256(json.dumps(store.attrs, sort_keys=True, default=str).encode())
    for arr in (store.text_class, store.text_class_raw, store.text_anchor):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _loader(stream, batch_size: int, workers: int, seed: int) -> DataLoader:
    # An explicit generator keeps the workers' base seed off the global torch RNG.
    return DataLoader(stream, batch_size=batch_size, num_workers=workers, pin_memory=False,
                      generator=torch.Generator().manual_seed(seed), persistent_workers=False)


def _unwrap_worker_error(e: UserError) -> UserError:
    """DataLoader re-raises a worker's UserError with the worker traceback in the message; keep one line."""
    text = str(e)
    if "Original Traceback" not in text:
        return e
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return UserError(last.split("UserError: ", 1)[-1])


def _batches(loader: Iterable) -> Iterable:
    try:
        yield from loader
    except UserError as e:
        raise _unwrap_worker_error(e) from None


class Run:
    """One training run's state: model, optimiser, streams, history."""

    def __init__(self, cfg, store, work: Path, out: Path, restart_stale: bool = False):
        self.cfg, self.store, self.work, self.out = cfg, store, Path(work), Path(out)
        self.restart_stale = restart_stale
        self.store_id = store_identity(store)
        self.device = torch.device(resolve_device(cfg.device))
        self.weights = method_weights(cfg.method, cfg.w_ce, cfg.w_kd, cfg.w_dist)
        names = store.domain_names
        self.target = names.index(cfg.target_domain)
        self.sources = [i for i in range(len(names)) if i != self.target]
        src_names = [names[i] for i in self.sources]
        self.train_stream = TrainStream(shard_paths(work, src_names), store, self.sources, cfg.image_size, cfg.seed)
        # One evaluation pass per epoch: source validation rows and the whole target domain.
        self.n_source_val = int(select_rows(store, self.sources, [VAL]).sum())
        self.n_target = int(select_rows(store, [self.target]).sum())
        self.eval_stream = EvalStream(shard_paths(work), store, select_rows(store, self.sources, [VAL])
                                      | select_rows(store, [self.target]), cfg.image_size, cfg.seed)
        if len(self.train_stream) == 0:
            raise UserError(f"no training samples in the source domains {', '.join(src_names)}")
        torch.manual_seed(cfg.seed)
        self.model = build_student(cfg.student, store.text_class, pretrained=cfg.pretrained).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        # RISE: one decay by lr_gamma at int(0.8 * epochs).
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=[max(1, int(cfg.lr_decay_at * cfg.epochs))], gamma=cfg.lr_gamma)
        dev = self.device
        self.text_class = torch.as_tensor(store.text_class, device=dev)
        self.text_class_raw = torch.as_tensor(store.text_class_raw, device=dev)
        self.text_anchor = torch.as_tensor(store.text_anchor, device=dev)
        self.history: list[dict] = []
        self.config = to_dict(cfg)

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.normalize(images.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    def train_epoch(self, epoch: int) -> dict:
        cfg = self.cfg
        self.model.train()
        self.train_stream.epoch = epoch
        loader = _loader(self.train_stream, cfg.batch_size, cfg.workers, cfg.seed * 1000 + epoch)
        sums = dict.fromkeys(TERMS, 0.0)
        seen = 0
        total = math.ceil(len(self.train_stream) / cfg.batch_size)
        bar = progress(_batches(loader), total=total, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch",
                       leave=False, mininterval=1.0)
        for step, (images, labels, teacher, _domains, _rows) in enumerate(bar):
            if len(labels) < 2:  # BatchNorm cannot train on one sample; only a last remainder can be this small
                continue
            labels, teacher = labels.to(self.device), teacher.to(self.device)
            with self._autocast():
                z, logits = self.model(self._inputs(images))
            parts = total_loss(self.weights, z.float(), logits.float(), labels, teacher, self.text_class,
                               self.text_class_raw, self.text_anchor, cfg.temperature)
            loss = parts["loss"]
            values = torch.stack([parts[k].detach().float() for k in TERMS]).tolist()  # one device sync a step
            if not math.isfinite(values[0]):
                terms = ", ".join(f"{k[5:]}={v:.4g}" for k, v in zip(TERMS[1:], values[1:], strict=True))
                raise UserError(f"loss is {values[0]} at epoch {epoch + 1}, step {step + 1} ({terms}); "
                                "lower --lr or check the teacher store")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            n = len(labels)
            seen += n
            for k, v in zip(TERMS, values, strict=True):
                sums[k] += v * n
            bar.set_postfix({k.replace("loss_", ""): f"{sums[k] / seen:.3f}" for k in TERMS}, refresh=False)
        bar.close()
        if seen == 0:
            raise UserError("no training batch could be formed (all samples bad or fewer than 2)")
        return {k: sums[k] / seen for k in TERMS}

    @torch.no_grad()
    def evaluate(self, stream) -> dict[int, tuple[int, int]]:
        """(correct, total) per domain index."""
        self.model.eval()
        counts: dict[int, list[int]] = {}
        t_hat = torch.nn.functional.normalize(self.text_class, dim=-1)
        loader = _loader(stream, self.cfg.batch_size, self.cfg.workers, self.cfg.seed)
        for images, labels, _teacher, domains, _rows in _batches(loader):
            with self._autocast():
                z, logits = self.model(self._inputs(images))
            scores = logits.float().softmax(-1)
            if self.cfg.text_ensemble:  # RISE's test-time ensemble with the class texts
                cos = torch.nn.functional.normalize(z.float(), dim=-1) @ t_hat.T
                scores = scores + (LOGIT_SCALE * cos).softmax(-1)
            hits = (scores.argmax(-1).cpu() == labels).long()
            for d in domains.unique().tolist():
                m = domains == d
                c = counts.setdefault(d, [0, 0])
                c[0] += int(hits[m].sum())
                c[1] += int(m.sum())
        return {d: (c[0], c[1]) for d, c in counts.items()}

    # ------------------------------------------------------------------ checkpoints

    def _state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epochs_done": len(self.history),
                "history": self.history, "config": self.config, "store": self.store.attrs,
                "store_id": self.store_id,
                "torch_rng": torch.get_rng_state()}

    def _save(self, name: str, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        with atomic_path(self.out / "checkpoints" / name, suffix=".pt") as tmp:
            tmp.write_bytes(buf.getvalue())

    def try_resume(self) -> None:
        path = self.out / "checkpoints" / "last.pt"
        if not path.is_file():
            return
        state = torch.load(path, map_location=self.device, weights_only=False)
        mismatch = sorted(k for k in set(self.config) | set(state["config"])
                          if k not in NON_RESULT_FIELDS and self.config.get(k) != state["config"].get(k))
        other_store = state.get("store_id") != self.store_id
        if (mismatch or other_store) and self.restart_stale:
            # Under DVC the stage reruns because its inputs changed: the old checkpoints are stale (and
            # already in DVC's cache). Remove them (never rewrite in place) and train from scratch.
            for old in (self.out / "checkpoints").glob("*.pt"):
                old.unlink()
            print(f"{self.out}: checkpoints from another config or store removed; training from scratch",
                  file=sys.stderr)
            return
        if mismatch:
            raise UserError(f"{self.out} holds a run with a different config ({', '.join(mismatch)}); "
                            "use another --out or delete it (or pass --restart-stale)")
        if other_store:
            raise UserError(f"{self.out} was trained from a different teacher store; use another --out "
                            "(or pass --restart-stale)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resuming {self.out} after epoch {state['epochs_done']}", file=sys.stderr)

    # ------------------------------------------------------------------ the loop

    def _write_epochs(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EPOCH_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.history:
            w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in EPOCH_COLUMNS})
        write_text(self.out / "epochs.csv", buf.getvalue())

    def _accuracies(self, counts: dict) -> dict:
        names = self.store.domain_names
        per_domain = {names[d]: c / n for d, (c, n) in sorted(counts.items()) if n}
        source = [per_domain[names[d]] for d in self.sources if names[d] in per_domain]
        return {"source_val_acc": float(np.mean(source)) if source else float("nan"),
                "target_acc": per_domain.get(names[self.target], float("nan")), "per_domain_acc": per_domain}

    def fit(self) -> dict:
        cfg = self.cfg
        self.try_resume()
        for epoch in range(len(self.history), cfg.epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            losses = self.train_epoch(epoch)
            acc = self._accuracies(self.evaluate(self.eval_stream))
            self.scheduler.step()
            row = {"epoch": epoch + 1, "lr": lr, **losses, **acc}
            best_before = max((h["source_val_acc"] for h in self.history), default=-math.inf)
            self.history.append(row)
            self._write_epochs()
            if not acc["source_val_acc"] <= best_before or len(self.history) == 1:
                self._save("best.pt", {"model": self.model.state_dict(), "epoch": epoch + 1, "metrics": row,
                                       "config": self.config, "store": self.store.attrs})
            self._save("last.pt", self._state())
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {losses['loss']:.4f}  source-val "
                  f"{acc['source_val_acc']:.4f}  target {acc['target_acc']:.4f}", file=sys.stderr)
        self._write_epochs()  # also when resuming a finished run: the log is an output of its own
        return self.metrics()

    def metrics(self) -> dict:
        cfg = self.cfg
        best = max(self.history, key=lambda h: (h["source_val_acc"], -h["epoch"]))
        w = self.weights
        target_rows = np.flatnonzero(self.store.domains == self.target)
        return {
            "status": "complete", "method": cfg.method, "target_domain": cfg.target_domain, "seed": cfg.seed,
            "student": cfg.student, "weights": {"w_kd": w.kd, "w_ce": w.ce, "w_dist": max(w.ad, w.rd)},
            "loss_weights": w.to_dict(), "temperature": cfg.temperature, "lr": cfg.lr, "epochs": cfg.epochs,
            "selected_epoch": best["epoch"], "source_val_acc": best["source_val_acc"],
            "target_acc": best["target_acc"], "per_domain_acc": best["per_domain_acc"],
            "teacher_target_acc": teacher_zero_shot_accuracy(self.store, target_rows),
            "text_ensemble": cfg.text_ensemble, "n_train": len(self.train_stream),
            "n_source_val": self.n_source_val, "n_target": self.n_target,
            "views_replayed": bool(self.store.has_views), "config": self.config, "store": self.store.attrs,
            "store_id": self.store_id,
        }


def run(cfg, store, work: str | Path, out: str | Path, restart_stale: bool = False) -> dict:
    """Train (or resume) one run into `out` and write metrics.json last, so its presence means done.
    `restart_stale`: checkpoints of another config or store are discarded instead of refused."""
    r = Run(cfg, store, Path(work), Path(out), restart_stale)
    write_json(Path(out) / "config.json", r.config)
    metrics = r.fit()
    write_json(Path(out) / "metrics.json", metrics)
    return metrics


__all__ = ["run", "Run", "teacher_zero_shot_accuracy", "EPOCH_COLUMNS", "TRAIN", "VAL"]
