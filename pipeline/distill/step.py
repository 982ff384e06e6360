"""The distill step: check the inputs, skip finished identical runs, train the rest.

Leave-one-domain-out: train on the train split of every domain but the target, select the epoch by their
validation split, test on the whole target domain. The teacher never runs here.

`run` trains one student into OUT; `run_group` trains a group (methods x grid configs, one held-out domain
and seed; each distinct student once) into OUT/<method>-<hash>/, one data pass per set of members that can
share batches (`group`); `run_members` trains members already resolved (a sweep plan's).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from ..config import to_dict
from ..errors import UserError
from .config import DistillConfig, check_run, effective, pin_checkpoint, result_differences
from .group import GroupMember, members, passes, refuse_legacy

log = logging.getLogger(__name__)


def _compatible(name: str, store, first, first_name: str) -> None:
    """Another teacher's store must hold the same samples, classes, domains and replayable views as the
    first, row for row (built from the same shards with the same views), or its targets would not match."""
    same = [("samples", list(store.keys) == list(first.keys)), ("classes", store.class_names == first.class_names),
            ("domains", store.domain_names == first.domain_names),
            ("views", all(store.attrs.get(k) == first.attrs.get(k) for k in ("views", "seed", "augment")))]
    bad = [what for what, ok in same if not ok]
    if bad:
        raise UserError(f"teacher store {name!r} differs from {first_name!r} in its {', '.join(bad)}: build both "
                        "with `rise-pipeline extract --steps embed --store NAME` from the same shards and the same "
                        "embed.seed / embed.views")


def _runnable(cfgs: list[DistillConfig]) -> list[DistillConfig]:
    """The configs as they train: each checked as a run (`check_run`), its local weights pinned
    (`pin_checkpoint`)."""
    for cfg in cfgs:
        check_run(cfg)
    return [pin_checkpoint(cfg) for cfg in cfgs]


def _store_for(cfgs: list[DistillConfig], work) -> dict:
    """Open every teacher store the configs name and check them against the configs, before any training
    starts (one-line errors); returns {store name: StoreReader}."""
    from .. import layout
    from ..store import verify_store

    names = list(dict.fromkeys(name for cfg in cfgs for name in cfg.teachers))
    stores = {}
    for name in names:
        path = layout.store(work, name)
        if name != layout.DEFAULT_STORE and not path.is_file():
            raise UserError(f"teacher store {name!r} not found: {path} (build it with `rise-pipeline extract "
                            f"--steps embed --store {name} --model ...`)")
        stores[name] = verify_store(work, name)
    first_name = names[0]
    for name in names[1:]:
        _compatible(name, stores[name], stores[first_name], first_name)
    store = stores[first_name]
    for cfg in cfgs:
        if cfg.target_domain not in store.domain_names:
            raise UserError(f"unknown target domain {cfg.target_domain!r}; valid: {', '.join(store.domain_names)}")
    if len(store.domain_names) < 2:
        raise UserError("leave-one-domain-out needs at least two domains in the store")
    from .students import check_student_name  # imports timm: after the cheap checks

    for student in sorted({cfg.student for cfg in cfgs}):
        check_student_name(student)
    if store.has_views and max(cfg.epochs for cfg in cfgs) > store.views_k:
        log.warning("note: %d epochs > %d stored views: views repeat after epoch %d",
                    max(cfg.epochs for cfg in cfgs), store.views_k, store.views_k)
    if not store.has_views:
        log.warning("note: the store holds no augmented views; the student is augmented freshly and the KD "
                    "target is the clean view (an approximation of RISE)")
    return stores


def finished(cfg: DistillConfig, stores: dict, out: Path) -> dict | None:
    """The metrics of a complete run in `out` with the same result config and teacher stores, else None."""
    from .checkpoints import run_identity

    done = Path(out) / "metrics.json"
    if not done.is_file():
        return None
    try:
        previous = json.loads(done.read_text())
    except ValueError:
        return None
    if previous.get("status") == "complete" and isinstance(previous.get("config"), dict) \
            and not result_differences(previous["config"], to_dict(cfg)) \
            and previous.get("store_id") == run_identity([stores[name] for name in cfg.teachers]):
        return previous
    return None


def _train(runs: list[tuple[DistillConfig, Path]], stores: dict, work, restart_stale: bool,
           max_members: int) -> tuple[dict, set[Path]]:
    """Train the runs that are not finished, one data pass per set that shares batches; ({out: metrics}, the
    outs trained now)."""
    from .trainer import train_pass

    results: dict[Path, dict] = {}
    todo = []
    for cfg, out in runs:
        previous = finished(cfg, stores, out)
        if previous is not None:
            log.info("%s: up to date (metrics.json complete with the same config and store)", out)
            results[out] = previous
        else:
            todo.append((cfg, out))
    outs = {id(cfg): out for cfg, out in todo}
    for group in passes([GroupMember(cfg.method, str(i), cfg) for i, (cfg, _) in enumerate(todo)]):
        start = time.perf_counter()
        pass_runs = [(m.cfg, outs[id(m.cfg)]) for m in group]
        for (cfg, out), metrics in zip(pass_runs, train_pass(pass_runs, stores, work, restart_stale, max_members),
                                       strict=True):
            results[out] = metrics
            log.info("%s%s -> %s: target acc %.4f at epoch %d (source-val %.4f; teacher zero-shot %.4f)",
                     f"{out.name}: " if len(runs) > 1 else "", cfg.method, cfg.target_domain, metrics["target_acc"],
                     metrics["selected_epoch"], metrics["source_val_acc"], metrics["teacher_target_acc"])
        if len(group) > 1:
            log.info("one data pass trained %d students in %.1f s", len(group), time.perf_counter() - start)
    return results, {out for _, out in todo}


def run(cfg: DistillConfig, work: str | Path, out: str | Path, restart_stale: bool = False) -> dict:
    """Check inputs, skip a finished identical run, else train (resuming from OUT/checkpoints/last.pt). The
    method's weight preset is applied first (`effective`): config.json states the weights it trains with."""
    [cfg] = _runnable([effective(cfg)])
    stores = _store_for([cfg], work)
    return _train([(cfg, Path(out))], stores, work, restart_stale, 0)[0][Path(out)]


def run_group(base: DistillConfig, methods: list[str], grid: list[dict], work: str | Path, out: str | Path,
              restart_stale: bool = False, max_members: int = 0) -> dict[str, dict]:
    """Train every distinct student of methods x grid (`group.members`) into OUT/<member name>/; returns
    {member name: metrics}. Complete members are skipped, killed ones resume from their own checkpoints, and
    a member whose store or weights changed restarts alone (under `restart_stale`)."""
    results = run_members(members(base, methods, grid), work, out, restart_stale, max_members)
    return {name: metrics for name, (metrics, _) in results.items()}


def run_members(group: list[GroupMember], work: str | Path, out: str | Path, restart_stale: bool = False,
                max_members: int = 0) -> dict[str, tuple[dict, bool]]:
    """Train resolved members into OUT/<member name>/; returns {member name: (metrics, trained now)} -- a
    member that was already complete is (its metrics, False). Run folders named by grid position (earlier
    releases) in OUT are refused with one line (`group.refuse_legacy`)."""
    out = Path(out)
    refuse_legacy(out)
    group = [dataclasses.replace(m, cfg=cfg) for m, cfg in zip(group, _runnable([m.cfg for m in group]), strict=True)]
    stores = _store_for([m.cfg for m in group], work)
    results, trained = _train([(m.cfg, out / m.name) for m in group], stores, work, restart_stale, max_members)
    return {m.name: (results[out / m.name], out / m.name in trained) for m in group}
