"""The distill step: check the inputs, skip a finished identical run, else train one student.

Leave-one-domain-out: train on the train split of every domain but the target, select the epoch by their
validation split, test on the whole target domain. The teacher never runs here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import to_dict
from ..errors import UserError
from .config import DistillConfig, result_differences, validate

log = logging.getLogger(__name__)


def run(cfg: DistillConfig, work: str | Path, out: str | Path, restart_stale: bool = False) -> dict:
    """Check inputs, skip a finished identical run, else train (resuming from RUN/checkpoints/last.pt)."""
    validate(cfg)
    from ..store import verify_store

    store = verify_store(work)
    if cfg.target_domain not in store.domain_names:
        raise UserError(f"unknown target domain {cfg.target_domain!r}; valid: {', '.join(store.domain_names)}")
    # torch and timm: imported after the cheap checks
    from .checkpoints import store_identity
    from .students import check_student_name
    from .trainer import run as train_run

    check_student_name(cfg.student)
    if len(store.domain_names) < 2:
        raise UserError("leave-one-domain-out needs at least two domains in the store")
    done = Path(out) / "metrics.json"
    if done.is_file():
        try:
            previous = json.loads(done.read_text())
        except ValueError:
            previous = {}
        if previous.get("status") == "complete" and isinstance(previous.get("config"), dict) \
                and not result_differences(previous["config"], to_dict(cfg)) \
                and previous.get("store_id") == store_identity(store):
            log.info("%s: up to date (metrics.json complete with the same config and store)", out)
            return previous
    if store.has_views and cfg.epochs > store.views_k:
        log.warning("note: %d epochs > %d stored views: views repeat after epoch %d", cfg.epochs,
                    store.views_k, store.views_k)
    if not store.has_views:
        log.warning("note: the store holds no augmented views; the student is augmented freshly and the KD "
                    "target is the clean view (an approximation of RISE)")
    metrics = train_run(cfg, store, work, out, restart_stale)
    log.info("%s -> %s: target acc %.4f at epoch %d (source-val %.4f; teacher zero-shot %.4f)", cfg.method,
             cfg.target_domain, metrics["target_acc"], metrics["selected_epoch"], metrics["source_val_acc"],
             metrics["teacher_target_acc"])
    return metrics
