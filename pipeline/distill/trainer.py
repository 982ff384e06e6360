"""The distill training loop: leave-one-domain-out, per-epoch evaluation, selection, metrics.

`run(cfg, store, work, out)` trains one student from the teacher store and writes the run folder
(docs/contracts.md, "A distill run"). It never loads the teacher: KD targets, class texts and anchors all
come from the store. `cfg` is the stage's `DistillConfig` (any object with the same attributes).

Selection is DomainBed's training-domain validation: the epoch whose mean accuracy over the source
domains' validation splits is highest (earliest on ties). Resume: after every epoch `checkpoints/last.pt`
holds model, optimiser, scheduler and history (`checkpoints.Checkpointer`); since the data order is a pure
function of (seed, epoch), a restarted run continues at the next epoch and ends exactly where an
uninterrupted run would (CPU).
"""

from __future__ import annotations

import csv
import io
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
from ..io import write_json, write_text
from ..progress import progress
from ..shards import shard_paths
from ..store import zero_shot_hits
from .checkpoints import Checkpointer, plain, store_identity
from .data import TRAIN, VAL, EvalStream, Item, TrainStream, select_rows
from .losses import LOGIT_SCALE, method_weights, total_loss
from .students import build_student

EPOCH_COLUMNS = ("epoch", "lr", "loss", "loss_ce", "loss_kd", "loss_ad", "loss_rd", "source_val_acc", "target_acc")
TERMS = ("loss", "loss_ce", "loss_kd", "loss_ad", "loss_rd")


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


def _batches(loader: Iterable) -> Iterable[Item]:
    try:
        yield from loader
    except UserError as e:
        raise _unwrap_worker_error(e) from None


class Trainer:
    """One training run: model, optimiser, scheduler, streams, the epoch loop, selection and metrics.
    Constructing one writes nothing; `fit` writes epochs.csv and the checkpoints."""

    def __init__(self, cfg, store, work: Path):
        self.cfg, self.store, self.work = cfg, store, Path(work)
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
        for step, batch in enumerate(bar):
            if len(batch.label) < 2:  # BatchNorm cannot train on one sample; only a last remainder can be this small
                continue
            labels, teacher = batch.label.to(self.device), batch.teacher.to(self.device)
            with self._autocast():
                z, logits = self.model(self._inputs(batch.image))
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
        for batch in _batches(loader):
            with self._autocast():
                z, logits = self.model(self._inputs(batch.image))
            scores = logits.float().softmax(-1)
            if self.cfg.text_ensemble:  # RISE's test-time ensemble with the class texts
                cos = torch.nn.functional.normalize(z.float(), dim=-1) @ t_hat.T
                scores = scores + (LOGIT_SCALE * cos).softmax(-1)
            hits = (scores.argmax(-1).cpu() == batch.label).long()
            for d in batch.domain.unique().tolist():
                m = batch.domain == d
                c = counts.setdefault(d, [0, 0])
                c[0] += int(hits[m].sum())
                c[1] += int(m.sum())
        return {d: (c[0], c[1]) for d, c in counts.items()}

    # ------------------------------------------------------------------ resume state

    def state(self) -> dict:
        """What `last.pt` needs to continue this run: tensors and plain data only."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "epochs_done": len(self.history),
                "history": plain(self.history), "torch_rng": torch.get_rng_state()}

    def restore(self, state: dict) -> None:
        """Continue from `state()` of an earlier process. The checkpoint may have been loaded onto the GPU;
        the CPU generator's state must be a CPU tensor whatever the device."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"].cpu())

    # ------------------------------------------------------------------ the loop

    def _write_epochs(self, out: Path) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EPOCH_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.history:
            w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in EPOCH_COLUMNS})
        write_text(out / "epochs.csv", buf.getvalue())

    def _accuracies(self, counts: dict) -> dict:
        names = self.store.domain_names
        per_domain = {names[d]: c / n for d, (c, n) in sorted(counts.items()) if n}
        source = [per_domain[names[d]] for d in self.sources if names[d] in per_domain]
        return {"source_val_acc": float(np.mean(source)) if source else float("nan"),
                "target_acc": per_domain.get(names[self.target], float("nan")), "per_domain_acc": per_domain}

    def fit(self, out: Path, checkpoints: Checkpointer) -> dict:
        """Train the epochs `checkpoints` does not already hold, then return the run's metrics."""
        cfg = self.cfg
        checkpoints.resume(self.restore, self.device)
        for epoch in range(len(self.history), cfg.epochs):
            lr = self.optimizer.param_groups[0]["lr"]
            losses = self.train_epoch(epoch)
            acc = self._accuracies(self.evaluate(self.eval_stream))
            self.scheduler.step()
            row = {"epoch": epoch + 1, "lr": lr, **losses, **acc}
            best_before = max((h["source_val_acc"] for h in self.history), default=-math.inf)
            self.history.append(row)
            self._write_epochs(out)
            if not acc["source_val_acc"] <= best_before or len(self.history) == 1:
                checkpoints.save_best(self.model.state_dict(), epoch + 1, row)
            checkpoints.save_last(self.state())
            print(f"epoch {epoch + 1}/{cfg.epochs}: loss {losses['loss']:.4f}  source-val "
                  f"{acc['source_val_acc']:.4f}  target {acc['target_acc']:.4f}", file=sys.stderr)
        self._write_epochs(out)  # also when resuming a finished run: the log is an output of its own
        return self.metrics()

    def metrics(self) -> dict:
        cfg = self.cfg
        best = max(self.history, key=lambda h: (h["source_val_acc"], -h["epoch"]))
        w = self.weights
        teacher_hits = zero_shot_hits(self.store, np.flatnonzero(self.store.domains == self.target))
        return {
            "status": "complete", "method": cfg.method, "target_domain": cfg.target_domain, "seed": cfg.seed,
            "student": cfg.student, "weights": {"w_kd": w.kd, "w_ce": w.ce, "w_dist": max(w.ad, w.rd)},
            "loss_weights": w.to_dict(), "temperature": cfg.temperature, "lr": cfg.lr, "epochs": cfg.epochs,
            "selected_epoch": best["epoch"], "source_val_acc": best["source_val_acc"],
            "target_acc": best["target_acc"], "per_domain_acc": best["per_domain_acc"],
            "teacher_target_acc": int(teacher_hits.sum()) / len(teacher_hits) if len(teacher_hits) else math.nan,
            "text_ensemble": cfg.text_ensemble, "n_train": len(self.train_stream),
            "n_source_val": self.n_source_val, "n_target": self.n_target,
            "views_replayed": bool(self.store.has_views), "config": self.config, "store": self.store.attrs,
            "store_id": self.store_id,
        }


def run(cfg, store, work: str | Path, out: str | Path, restart_stale: bool = False) -> dict:
    """Train (or resume) one run into `out` and write metrics.json last, so its presence means done.
    `restart_stale`: checkpoints of another config or store are discarded instead of refused."""
    out = Path(out)
    trainer = Trainer(cfg, store, Path(work))
    checkpoints = Checkpointer(out, trainer.config, store, restart_stale)
    write_json(out / "config.json", trainer.config)
    metrics = trainer.fit(out, checkpoints)
    write_json(out / "metrics.json", metrics)
    return metrics


__all__ = ["run", "Trainer", "EPOCH_COLUMNS", "TRAIN", "VAL"]
