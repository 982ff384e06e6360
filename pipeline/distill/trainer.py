"""The distill training loop: leave-one-domain-out, per-epoch evaluation, selection, metrics.

`train_pass([(cfg, out), ...], stores, work)` trains students from the teacher stores, one data pass for all,
and writes each one's run folder (docs/contracts.md, "A distill run"). It never loads the teacher: KD targets, class texts and anchors all
come from the store. `cfg` is the stage's `DistillConfig` (any object with the same attributes).

Selection is DomainBed's training-domain validation: the epoch whose mean accuracy over the source
domains' validation splits is highest (earliest on ties). Resume: after every epoch `checkpoints/last.pt`
holds each student's model, optimiser, scheduler and generator states, and the history
(`checkpoints.Checkpointer`); since the data order is a pure function of (seed, epoch), a restarted run
continues at the next epoch and ends exactly where an uninterrupted run would.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import to_dict
from ..devices import resolve_device
from ..errors import UserError
from ..io import write_json, write_text
from ..progress import progress
from ..store import zero_shot_hits
from .checkpoints import Checkpointer, plain, run_identity
from .config import unit_lrs
from .data import TRAIN, VAL, Item, RunData, view_index
from .losses import LOGIT_SCALE, LossWeights, method_weights, total_loss
from .students import build_student

EPOCH_COLUMNS = ("epoch", "lr", "loss", "loss_ce", "loss_kd", "loss_ad", "loss_rd", "source_val_acc", "target_acc",
                 "source_val_mean", "source_val_pooled")
TERMS = ("loss", "loss_ce", "loss_kd", "loss_ad", "loss_rd")

log = logging.getLogger(__name__)


def _unwrap_worker_error(e: UserError) -> UserError:
    """DataLoader re-raises a worker's UserError with the worker traceback in the message; keep one line."""
    text = str(e)
    if "Original Traceback" not in text:
        return e
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
    return UserError(last.split("UserError: ", 1)[-1])


def _batches(loader: Iterable) -> Iterable[Item | None]:
    try:
        yield from loader
    except UserError as e:
        raise _unwrap_worker_error(e) from None


def used_anchors(store, sources: list[int]) -> np.ndarray:
    """Indices of the anchors a run may use: those naming a source domain and those naming no domain. The
    held-out domain never enters training, its name included (as in RISE's reference)."""
    tags = np.asarray(store.anchor_domains)
    return np.flatnonzero((tags < 0) | np.isin(tags, sources))


def _rng_state(device: torch.device) -> dict:
    """The random state a unit draws from: torch's CPU generator and, on a GPU, that device's generator
    (dropout and stochastic depth of a model on the GPU draw from the latter)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


class StudentUnit:
    """What one student owns: its model, optimiser and schedule, its loss weights and learning rate, its
    random state (CPU and device generators), its running loss sums within an epoch, and its class scores.

    It records nothing: the run it belongs to (`Trainer`) keeps the history, the selection and the files. A
    run alone and a group member hold one unit; a mix of teachers holds one unit per teacher store. Each unit
    draws from its own generator states, so it consumes exactly the random numbers it would alone."""

    def __init__(self, cfg, store, data: RunData, sources: list[int], lr: float, weights: LossWeights):
        self.cfg, self.store, self.data, self.lr0, self.weights = cfg, store, data, lr, weights
        # A student of another teacher store than the one the batches come from (a group member with other
        # --teachers, a mix's second student) reads its own teacher's embedding of the very same view.
        self.own_targets = store is not data.store
        self.device = torch.device(resolve_device(cfg.device))
        torch.manual_seed(cfg.seed)
        self.model = build_student(cfg.student, store.text_class, pretrained=cfg.pretrained,
                                   checkpoint=cfg.checkpoint).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        # One decay by lr_gamma after the fraction lr_decay_at of the epochs (RISE: 0.8).
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=[max(1, int(cfg.lr_decay_at * cfg.epochs))], gamma=cfg.lr_gamma)
        dev = self.device
        self.anchors = used_anchors(store, sources)
        self.text_class = torch.as_tensor(store.text_class, device=dev)
        self.text_class_raw = torch.as_tensor(store.text_class_raw, device=dev)
        self.text_anchor = torch.as_tensor(store.text_anchor[self.anchors], device=dev)
        self.rng = _rng_state(dev)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.normalize(images.to(self.device, non_blocking=True))
        return x.contiguous(memory_format=torch.channels_last) if self.device.type == "cuda" else x

    def begin_epoch(self) -> None:
        self.model.train()
        self.sums, self.seen = dict.fromkeys(TERMS, 0.0), 0
        self.lr = self.optimizer.param_groups[0]["lr"]

    def targets(self, batch: Item, epoch: int) -> torch.Tensor:
        """This student's teacher embeddings of the batch's views: same rows, same planned view, own store."""
        keys = self.data.store.keys[batch.row.numpy()]
        store = self.store
        if store.has_views:
            vrows = [store.view_row_of(k) for k in keys]
            ks = [view_index(self.data.seed, k, epoch, store.views_k) for k in keys]
            return torch.from_numpy(store.view_embedding(vrows, ks))
        return torch.from_numpy(store.clean([store.row_of(k) for k in keys]))

    def train_step(self, batch: Item, epoch: int, step: int) -> None:
        if self.own_targets:
            batch = batch._replace(teacher=self.targets(batch, epoch))
        _set_rng_state(self.rng, self.device)
        labels, teacher = batch.label.to(self.device), batch.teacher.to(self.device)
        with self._autocast():
            z, logits = self.model(self._inputs(batch.image))
        parts = total_loss(self.weights, z.float(), logits.float(), labels, teacher, self.text_class,
                           self.text_class_raw, self.text_anchor, self.cfg.temperature)
        values = torch.stack([parts[k].detach().float() for k in TERMS]).tolist()  # one device sync a step
        if not math.isfinite(values[0]):
            terms = ", ".join(f"{k[5:]}={v:.4g}" for k, v in zip(TERMS[1:], values[1:], strict=True))
            raise UserError(f"{self.cfg.method}: loss is {values[0]} at epoch {epoch + 1}, step {step + 1} "
                            f"({terms}); lower --lr or check the teacher store")
        self.optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        self.optimizer.step()
        self.rng = _rng_state(self.device)
        n = len(labels)
        self.seen += n
        for k, v in zip(TERMS, values, strict=True):
            self.sums[k] += v * n

    def running_losses(self) -> dict:
        return {k.replace("loss_", ""): f"{self.sums[k] / max(1, self.seen):.3f}" for k in TERMS}

    def epoch_losses(self) -> dict:
        if self.seen == 0:
            raise UserError("no training batch could be formed (all samples bad or fewer than 2)")
        return {k: self.sums[k] / self.seen for k in TERMS}

    @torch.no_grad()
    def scores(self, batch: Item) -> torch.Tensor:
        """Class scores (B x C, on the CPU): softmax of the logits, plus the text ensemble when it is on."""
        with self._autocast():
            z, logits = self.model(self._inputs(batch.image))
        scores = logits.float().softmax(-1)
        if self.cfg.text_ensemble:  # RISE's test-time ensemble with the class texts
            t_hat = torch.nn.functional.normalize(self.text_class, dim=-1)
            cos = torch.nn.functional.normalize(z.float(), dim=-1) @ t_hat.T
            scores = scores + (LOGIT_SCALE * cos).softmax(-1)
        return scores.cpu()

    def state(self) -> dict:
        """What `last.pt` needs to continue this student: tensors and plain data only."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": dict(self.rng)}

    def restore(self, state: dict) -> None:
        """Continue from `state()` of an earlier process. The checkpoint may have been loaded onto the GPU;
        generator states must be CPU tensors whatever the device. A device state saved on another kind of
        device (a CPU run resumed on a GPU) is not there: the device generator keeps its seeded start."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        saved = {k: v.cpu() for k, v in state["rng"].items()}
        rng = {"cpu": saved["cpu"]}
        if "cuda" in self.rng:
            rng["cuda"] = saved.get("cuda", self.rng["cuda"])
        self.rng = rng


class Trainer:
    """One run record: the students it trains (`StudentUnit`s: one, or one per teacher store for a mix of
    teachers) and what a run records -- the per-epoch history and `epochs.csv`, the selected epoch, the
    checkpoints and `metrics.json`. A mix predicts with the sum of its units' class scores and is one run to
    selection, checkpoints and the report.

    The data pass is not its own: `train_together` feeds every batch of a `RunData` to each record in turn,
    so one record alone is a single run and several are a group that reads and decodes each batch once.
    Constructing one writes nothing; `train_together` writes epochs.csv and the checkpoints."""

    def __init__(self, cfg, stores, data: RunData):
        stores = list(stores) if isinstance(stores, (list, tuple)) else [stores]
        self.cfg, self.data = cfg, data
        self.store = stores[0]
        self.store_id = run_identity(stores)
        names = self.store.domain_names
        self.target = names.index(cfg.target_domain)
        self.sources = [i for i in range(len(names)) if i != self.target]
        if len(data.train_rows) == 0:
            raise UserError(f"no training samples in the source domains {', '.join(names[i] for i in self.sources)}")
        self.weights = method_weights(cfg.method, cfg.w_ce, cfg.w_kd, cfg.w_dist)
        lrs = unit_lrs(cfg, len(stores))
        self.units = [StudentUnit(cfg, store, data, self.sources, lr, self.weights)
                      for store, lr in zip(stores, lrs, strict=True)]
        self.device = self.units[0].device
        self.anchors = self.units[0].anchors
        self.history: list[dict] = []
        self.config = to_dict(cfg)

    # ------------------------------------------------------------------ steps

    def begin_epoch(self) -> None:
        for u in self.units:
            u.begin_epoch()
        self.lr = self.units[0].lr

    def train_step(self, batch: Item, epoch: int, step: int) -> None:
        if len(batch.label) < 2:  # BatchNorm cannot train on one sample (only bad samples can shrink a batch)
            return
        for u in self.units:
            u.train_step(batch, epoch, step)

    def running_losses(self) -> dict:
        return self.units[0].running_losses()

    def end_training(self, epoch: int) -> dict:
        losses = [u.epoch_losses() for u in self.units]  # a mix logs its students' mean
        return {k: float(np.mean([loss[k] for loss in losses])) for k in TERMS}

    def begin_eval(self) -> None:
        for u in self.units:
            u.model.eval()
        self.counts: dict[int, list[int]] = {}

    @torch.no_grad()
    def eval_step(self, batch: Item) -> None:
        """Accumulate (correct, total) per domain index; a mix scores with the sum of its units' scores."""
        self.count(sum(u.scores(batch) for u in self.units), batch)

    def count(self, scores: torch.Tensor, batch: Item) -> None:
        hits = (scores.argmax(-1) == batch.label).long()
        for d in batch.domain.unique().tolist():
            m = batch.domain == d
            c = self.counts.setdefault(d, [0, 0])
            c[0] += int(hits[m].sum())
            c[1] += int(m.sum())

    # ------------------------------------------------------------------ resume state

    def state(self) -> dict:
        """What `last.pt` needs to continue this run: each unit's state, the history, the epochs done."""
        return {"units": [u.state() for u in self.units], "epochs_done": len(self.history),
                "history": plain(self.history)}

    def restore(self, state: dict) -> None:
        if len(state["units"]) != len(self.units):
            raise ValueError(f"{len(state['units'])} students saved, this run has {len(self.units)}")
        for u, s in zip(self.units, state["units"], strict=True):
            u.restore(s)
        self.history = list(state["history"])

    def model_state(self) -> dict:
        """`best.pt`'s model: the student's state dict; a mix's, one per unit under "0", "1", ..."""
        if len(self.units) == 1:
            return self.units[0].model.state_dict()
        return {str(k): u.model.state_dict() for k, u in enumerate(self.units)}

    # ------------------------------------------------------------------ the epoch's end

    def write_epochs(self, out: Path) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EPOCH_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.history:
            w.writerow({k: (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k]) for k in EPOCH_COLUMNS})
        write_text(out / "epochs.csv", buf.getvalue())

    def _accuracies(self) -> dict:
        names = self.store.domain_names
        counts = self.counts
        per_domain = {names[d]: c / n for d, (c, n) in sorted(counts.items()) if n}
        source = [per_domain[names[d]] for d in self.sources if names[d] in per_domain]
        hits = sum(counts.get(d, (0, 0))[0] for d in self.sources)
        seen = sum(counts.get(d, (0, 0))[1] for d in self.sources)
        mean = float(np.mean(source)) if source else float("nan")
        pooled = hits / seen if seen else float("nan")
        return {"source_val_acc": pooled if self.cfg.val_average == "pooled" else mean,
                "source_val_mean": mean, "source_val_pooled": pooled,
                "target_acc": per_domain.get(names[self.target], float("nan")), "per_domain_acc": per_domain}

    def end_epoch(self, epoch: int, losses: dict, out: Path, checkpoints: Checkpointer) -> dict:
        acc = self._accuracies()
        for u in self.units:
            u.scheduler.step()
        row = {"epoch": epoch + 1, "lr": self.lr, **losses, **acc}
        best_before = max((h["source_val_acc"] for h in self.history), default=-math.inf)
        self.history.append(row)
        self.write_epochs(out)
        if not acc["source_val_acc"] <= best_before or len(self.history) == 1:
            checkpoints.save_best(self.model_state(), epoch + 1, row)
        checkpoints.save_last(self.state())
        log.info("%sepoch %d/%d: loss %.4f  source-val %.4f  target %.4f", _label(out), epoch + 1, self.cfg.epochs,
                 losses["loss"], acc["source_val_acc"], acc["target_acc"])
        return row

    def metrics(self) -> dict:
        cfg = self.cfg
        best = max(self.history, key=lambda h: (h["source_val_acc"], -h["epoch"]))
        w = self.weights
        teacher_hits = zero_shot_hits(self.store, self.data.target_rows)
        out = {
            "status": "complete", "method": cfg.method, "target_domain": cfg.target_domain, "seed": cfg.seed,
            "student": cfg.student, "weights": {"w_kd": w.kd, "w_ce": w.ce, "w_dist": max(w.ad, w.rd)},
            "loss_weights": w.to_dict(), "temperature": cfg.temperature, "lr": cfg.lr, "epochs": cfg.epochs,
            "selected_epoch": best["epoch"], "source_val_acc": best["source_val_acc"],
            "target_acc": best["target_acc"], "per_domain_acc": best["per_domain_acc"],
            "teacher_target_acc": int(teacher_hits.sum()) / len(teacher_hits) if len(teacher_hits) else math.nan,
            "text_ensemble": cfg.text_ensemble, "n_train": len(self.data.train_rows),
            "n_source_val": len(self.data.source_val_rows), "n_target": len(self.data.target_rows),
            "anchors_used": [self.store.anchors[i] for i in self.anchors], "teachers": list(cfg.teachers),
            "views_replayed": bool(self.store.has_views), "config": self.config, "store": self.store.attrs,
            "store_id": self.store_id,
        }
        if len(self.units) > 1:
            out["teacher_models"] = [u.store.attrs.get("model") for u in self.units]
            out["lrs"] = [u.lr0 for u in self.units]
        return out


def make_trainer(cfg, stores: dict, data: RunData) -> Trainer:
    """The run record of one run: one student per teacher store it names (a mix: several; else one)."""
    return Trainer(cfg, [stores[name] for name in cfg.teachers], data)


def _label(out: Path) -> str:
    return f"{out.name}: " if out.name else ""


@dataclass
class Member:
    """One student of a data pass, with the run folder it writes."""

    trainer: Trainer
    out: Path
    checkpoints: Checkpointer


def train_together(members: Sequence[Member], data: RunData) -> None:
    """Train every member for its `cfg.epochs` epochs from one data pass: each planned batch is read, decoded
    and replayed once, then each member takes its own step on it; each evaluation batch likewise. A member
    that resumed further than the others, or needs fewer epochs, sits out the epochs it does not need."""
    start = min(len(m.trainer.history) for m in members)
    epochs = max(m.trainer.cfg.epochs for m in members)
    for epoch in range(start, epochs):
        active = [m for m in members if len(m.trainer.history) == epoch < m.trainer.cfg.epochs]
        if not active:
            continue
        for m in active:
            m.trainer.begin_epoch()
        plan = data.plan(epoch)
        bar = progress(_batches(data.train_loader(epoch, plan)), total=len(plan), unit="batch", leave=False,
                       desc=f"epoch {epoch + 1}/{epochs}", mininterval=1.0)
        for step, batch in enumerate(bar):
            if batch is None:  # every sample of the batch was unreadable (each one logged)
                continue
            for m in active:
                m.trainer.train_step(batch, epoch, step)
            if len(active) == 1:
                bar.set_postfix(active[0].trainer.running_losses(), refresh=False)
        bar.close()
        losses = [m.trainer.end_training(epoch) for m in active]
        for m in active:
            m.trainer.begin_eval()
        for batch in _batches(data.eval_loader()):
            if batch is not None:
                for m in active:
                    m.trainer.eval_step(batch)
        for m, loss in zip(active, losses, strict=True):
            m.trainer.end_epoch(epoch, loss, m.out, m.checkpoints)


def member_capacity(trainer: Trainer) -> int:
    """How many students like `trainer`'s fit on its GPU at once, beside one step's activations: each member
    keeps its weights, gradients and SGD momentum (about 3x its parameter bytes, plus the best epoch's copy
    while it is saved); only one member's activations exist at a time (members step one after another).
    Half the free memory is left for those activations and the allocator. CPU: no limit (0)."""
    if trainer.device.type != "cuda":
        return 0
    free, _ = torch.cuda.mem_get_info(trainer.device)
    models = [u.model for u in trainer.units]
    per_member = 4 * sum(p.numel() * p.element_size() for m in models for p in m.parameters())
    return max(1, int(0.5 * free // per_member))


def train_pass(runs: Sequence[tuple], stores: dict, work: str | Path, restart_stale: bool = False,
               max_members: int = 0) -> list[dict]:
    """Train `runs` ((cfg, out) pairs that share the batches: see `group.PASS_FIELDS`) from one data pass
    and return their metrics in order. Each run resumes from its own `out/checkpoints/last.pt`; metrics.json
    is written last, so its presence means done. `restart_stale`: checkpoints of another config or store are
    discarded instead of refused (per run: the others still resume). On a GPU, a pass with more members
    than fit (`member_capacity`, or `max_members` when > 0) is trained in several passes."""
    first = runs[0][0]
    if first.threads:  # one process-wide setting: members of a pass share it (group.PASS_FIELDS)
        torch.set_num_threads(first.threads)
    store = stores[first.teachers[0]]  # the batches' teacher targets; other stores' students read their own
    data = RunData(work, store, *_split(store, first.target_domain), first.image_size, first.seed,
                   first.batch_size, first.workers, first.balance)
    results: list[dict] = []
    todo = list(runs)
    while todo:
        members: list[Member] = []
        cap = max_members
        for cfg, out in todo:
            trainer = make_trainer(cfg, stores, data)
            if not members and cap <= 0:
                cap = member_capacity(trainer)
            checkpoints = Checkpointer(Path(out), trainer.config, trainer.store, restart_stale, trainer.store_id)
            write_json(Path(out) / "config.json", trainer.config)
            checkpoints.resume(trainer.restore, trainer.device)
            members.append(Member(trainer, Path(out), checkpoints))
            if cap and len(members) >= cap:
                break
        if len(members) < len(todo):
            log.info("%d of %d students fit in this pass; the rest follow in another", len(members), len(todo))
        todo = todo[len(members):]
        train_together(members, data)
        for m in members:
            m.trainer.write_epochs(m.out)  # also when resuming a finished run: the log is an output of its own
            metrics = m.trainer.metrics()
            write_json(m.out / "metrics.json", metrics)
            results.append(metrics)
        del members
    return results


def _split(store, target_domain: str) -> tuple[list[int], int]:
    """(source domain indices, target index) of a leave-one-domain-out run."""
    target = store.domain_names.index(target_domain)
    return [i for i in range(len(store.domain_names)) if i != target], target


__all__ = ["train_pass", "Trainer", "StudentUnit", "Member", "train_together", "EPOCH_COLUMNS", "TRAIN", "VAL"]
