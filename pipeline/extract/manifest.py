"""The fate of every input file (the manifest), the kept samples' counts (stats) and the summary line.

`decide` turns scan entries + probe results into one row per file: `kept` (key, domain, class, split;
shard and position are filled in once shards are planned) or `skipped` with a reason. Duplicates
(same sha256) keep the sample with the smallest key; the others name it in `duplicate_of`.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from ..io import atomic_path
from .sources import FileEntry
from .writer import make_key, split_of

# Fields of a kept sample's json that come from probing (the rest come from the plan).
IMAGE_FIELDS = ("width", "height", "format", "mode", "exif_orientation")


def decide(entries: Iterable[FileEntry], probes: dict[str, dict], classes: list[str], *,
           seed: int, val_fraction: float) -> list[dict]:
    """One manifest row per entry, sorted by source path. `probes` maps source -> probe_file result."""
    class_index = {c: i for i, c in enumerate(classes)}
    rows, candidates = [], []
    for e in entries:
        row = {"source": e.source, "status": "skipped", "reason": e.skip, "detail": e.detail,
               "key": None, "domain": e.domain, "class_name": e.class_name, "split": None,
               "shard": None, "position": None, "sha256": None, "duplicate_of": None}
        rows.append(row)
        if e.skip is not None:
            continue
        probe = probes[e.source]
        row["sha256"] = probe.get("sha256")
        if "skip" in probe:
            row.update(reason=probe["skip"], detail=probe["detail"])
            continue
        row["key"] = make_key(e.source)
        candidates.append((row, probe, e))
    kept_by_sha: dict[str, str] = {}
    for row, probe, e in sorted(candidates, key=lambda c: c[0]["key"]):
        first = kept_by_sha.setdefault(probe["sha256"], row["key"])
        if first != row["key"]:
            row.update(reason="duplicate", detail="same sha256 as a kept file", duplicate_of=first)
            continue
        row.update(status="kept", reason=None, detail="", split=split_of(row["key"], seed, val_fraction))
        row["meta"] = {"key": row["key"], "domain": e.domain, "class_name": e.class_name,
                       "class_index": class_index[e.class_name], "split": row["split"], "source": e.source,
                       "sha256": probe["sha256"], "resized_from": None,
                       **{f: probe[f] for f in IMAGE_FIELDS}}
        row["ext"] = probe["ext"]
        row["path"] = e.path
    rows.sort(key=lambda r: r["source"])
    return rows


def public_row(row: dict) -> dict:
    """What the manifest file holds for a row (the plan's private fields are dropped)."""
    return {k: v for k, v in row.items() if k not in ("meta", "ext", "path")}


def write_manifest(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(public_row(row), sort_keys=True, ensure_ascii=False) + "\n")


def read_manifest(path: str | os.PathLike) -> list[dict]:
    with open(Path(path), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def compute_stats(rows: list[dict], domains: list[str], classes: list[str]) -> dict:
    """Counts per domain x class x split, per shard, skips per reason, and totals."""
    per_domain = {d: {c: {"train": 0, "val": 0} for c in classes} for d in domains}
    per_shard: dict[str, dict] = defaultdict(lambda: {"train": 0, "val": 0, "n": 0})
    skipped = Counter()
    for r in rows:
        if r["status"] == "kept":
            per_domain[r["domain"]][r["class_name"]][r["split"]] += 1
            s = per_shard[r["shard"]]
            s[r["split"]] += 1
            s["n"] += 1
        else:
            skipped[r["reason"]] += 1
    kept = sum(1 for r in rows if r["status"] == "kept")
    return {"files": len(rows), "kept": kept, "skipped": sum(skipped.values()),
            "skipped_by_reason": dict(sorted(skipped.items())), "domains": per_domain,
            "shards": dict(sorted(per_shard.items())),
            "kept_by_domain": {d: sum(v["train"] + v["val"] for v in per_domain[d].values()) for d in domains}}


def summary_line(stats: dict, reused: int) -> str:
    kept = ", ".join(f"{d} {n}" for d, n in stats["kept_by_domain"].items())
    skipped = ", ".join(f"{r} {n}" for r, n in stats["skipped_by_reason"].items()) or "none"
    return (f"shard: {stats['files']} files, kept {stats['kept']} ({kept}); skipped {stats['skipped']} "
            f"({skipped}); {len(stats['shards'])} shards ({reused} reused)")
