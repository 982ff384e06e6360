"""Step "shard" of `rise-pipeline extract`: DATA -> WORK/shards/*.tar + index/stats + WORK/manifest.jsonl.

Order of work: scan (every file) -> probe (parallel: hash + full decode) -> decide each file's fate ->
plan shards -> write shards (parallel, each atomic and reusable) -> manifest, stats, and the index
last, so an index only exists for a complete shard set.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

from .. import layout, shards
from ..config import field, to_dict
from ..devices import ONE_PER_CORE, ONE_PER_CORE_HELP, worker_count
from ..errors import UserError
from ..images import MAX_PIXELS
from ..io import write_json
from ..parallel import dask_client, run_tasks
from . import manifest, probe, sources, writer

log = logging.getLogger(__name__)
PROBE_BATCH = 64            # files per probe task: large enough to amortise dask's per-task cost
INLINE_BELOW = 1000         # with workers=-1 (one per core), smaller datasets run in-process (no cluster start-up)


@dataclass
class ShardConfig:
    val_fraction: float = field(0.1, "Share of each domain held out as validation (seeded hash of the key).")
    seed: int = field(0, "Seed of the train/val split.")
    shard_size: int = field(1000, "Most samples per shard tar (boundaries are content-defined; see docs/shard.md).")
    max_side: int = field(0, "Re-encode images whose longer side exceeds this many pixels; 0 keeps originals.")
    max_pixels: int = field(MAX_PIXELS, "Images with more pixels are skipped as decompression bombs.")
    workers: int = field(ONE_PER_CORE, f"Local dask worker processes; 0 or 1: in this process, {ONE_PER_CORE_HELP} "
                                       f"(in this process under {INLINE_BELOW} files).")
    class_map: dict = field({}, "Rename class folders before they are merged, e.g. {'Dog': 'dog'}.", cli=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_size < 1:
            raise UserError(f"shard_size must be >= 1, got {self.shard_size}")
        if self.max_side < 0 or self.max_pixels < 1 or self.workers < ONE_PER_CORE:
            raise UserError(f"max_side must be >= 0, max_pixels >= 1 and workers >= {ONE_PER_CORE}")
        bad = {k: v for k, v in self.class_map.items() if not isinstance(v, str) or not v.strip()}
        if bad:
            raise UserError(f"class_map values must be class names, got {bad}")


def _workers(cfg: ShardConfig, n_files: int) -> int:
    if cfg.workers != ONE_PER_CORE:
        return cfg.workers
    return 1 if n_files < INLINE_BELOW else worker_count(ONE_PER_CORE)


def run(cfg: ShardConfig, data_root: str | Path, work: str | Path, scheduler: str | None = None,
        expected_domains: list[str] | None = None) -> dict:
    """Shard `data_root` into `work`; returns the summary (counts, shards, reused, shard_set_sha256).

    `expected_domains` (the domains later stages will hold out) must all be in the data: checked right
    after the scan, so a misspelt domain fails here in seconds instead of at distill, after the embed step."""
    work = Path(work)
    if Path(data_root).is_dir() and Path(work).resolve().is_relative_to(Path(data_root).resolve()):
        raise UserError(f"--out {work} is inside the data root {data_root}; its files would be scanned as data")
    source = sources.scan(data_root, cfg.class_map)
    check_expected_domains(expected_domains or [], source.domains, data_root)
    candidates = [e for e in source.entries if e.skip is None]
    workers = _workers(cfg, len(candidates))

    with _shared_cluster(workers, scheduler) as scheduler:
        rows, units, written = _probe_plan_write(cfg, source, candidates, work, workers, scheduler)

    stats = manifest.compute_stats(rows, source.domains, source.classes)
    manifest.write_manifest(layout.manifest(work), rows)
    write_json(layout.shard_stats(work), stats)
    entries = [{"path": u["name"], "domain": u["domain"], "sha256": written[u["name"]]["sha256"],
                "n": written[u["name"]]["n"], "samples": written[u["name"]]["samples"]} for u in units]
    index = {"classes": source.classes, "domains": source.domains, "shards": entries,
             "shard_set_sha256": shards.checksum_of_entries(entries), "config": _recorded_config(cfg)}
    write_json(layout.shard_index(work), index)

    reused = sum(1 for r in written.values() if r["reused"])
    log.info(manifest.summary_line(stats, reused))
    return {"files": stats["files"], "kept": stats["kept"], "skipped": stats["skipped"],
            "skipped_by_reason": stats["skipped_by_reason"], "kept_by_domain": stats["kept_by_domain"],
            "shards": len(units), "reused": reused, "warnings": source.warnings,
            "shard_set_sha256": index["shard_set_sha256"]}


def check_expected_domains(expected: list[str], found: list[str], data_root: str | Path) -> None:
    """Refuse held-out domains the data does not have (names compare exactly: they name shard folders)."""
    unknown = [d for d in expected if d not in found]
    if unknown:
        raise UserError(f"sweep.domains lists {', '.join(repr(d) for d in unknown)}, not a domain of {data_root} "
                        f"(its domains: {', '.join(found)}); run `rise-pipeline preset NAME --data-root "
                        f"{data_root}` or edit sweep.domains in params.yaml")


def _probe_plan_write(cfg: ShardConfig, source: sources.Source, candidates: list, work: Path, workers: int,
                      scheduler: str | None) -> tuple[list[dict], list[dict], dict]:
    probes: dict[str, dict] = {}
    by_path = {e.path: e.source for e in candidates}
    paths = list(by_path)
    batches = [paths[i:i + PROBE_BATCH] for i in range(0, len(paths), PROBE_BATCH)]
    for batch, results in run_tasks(probe.probe_batch, batches, workers=workers, scheduler=scheduler,
                                    desc="probe", unit="batch", extra=(cfg.max_pixels,)):
        probes.update(zip((by_path[p] for p in batch), results, strict=True))

    rows = manifest.decide(source.entries, probes, source.classes, seed=cfg.seed, val_fraction=cfg.val_fraction)
    kept_domains = {r["domain"] for r in rows if r["status"] == "kept"}
    empty = [d for d in source.domains if d not in kept_domains]
    if empty:
        # The manifest says why each file was skipped; write it before refusing the data.
        manifest.write_manifest(layout.manifest(work), rows)
        raise UserError(f"no usable images in {source.domain_path(empty[0])} (every file was skipped; "
                        f"reasons in {layout.manifest(work)})")
    for warning in source.warnings:
        log.warning("warning: %s", warning)

    root = layout.shards_dir(work)
    units = writer.plan_units(rows, cfg.shard_size, cfg.max_side)
    written = {}
    for _, result in run_tasks(writer.write_shard, units, workers=workers, scheduler=scheduler,
                               desc="shards", unit="shard", extra=(str(root), cfg.max_pixels)):
        written[result["name"]] = result
    _remove_stale(root, {u["name"] for u in units})
    return rows, units, written


@contextlib.contextmanager
def _shared_cluster(workers: int, scheduler: str | None):
    """One local dask cluster for both parallel phases (its start-up costs seconds: pay it once)."""
    if scheduler or workers <= 1:
        yield scheduler
        return
    with dask_client(workers) as client:
        yield client.scheduler.address


def _recorded_config(cfg: ShardConfig) -> dict:
    # Worker count changes speed, never bytes: leave it out so the index is identical across machines.
    return {k: v for k, v in to_dict(cfg).items() if k != "workers"}


def _remove_stale(root: Path, planned: set[str]) -> None:
    """Delete shards (and sidecars, temp files) of earlier plans so the folder holds exactly this set."""
    if not root.is_dir():
        return
    for path in sorted(root.glob("*/*")):
        rel = path.relative_to(root).as_posix()
        name = rel[:-3] + ".tar" if rel.endswith(".fp") else rel
        if path.is_file() and (path.name.startswith(".") or name not in planned) and path.suffix in (".tar", ".fp", ".tmp"):
            path.unlink()
    for d in sorted(root.iterdir()):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
