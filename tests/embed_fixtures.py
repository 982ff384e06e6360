"""Tiny shard sets for the embed tests, written per docs/contracts.md with the project's tar writer.

Images are small seeded pictures (a coloured background with a coloured square), so clean views and
augmented views differ and a planted duplicate is recognisable.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.extract.writer import encode_sample, write_tar
from pipeline.io import sha256_file, write_json
from pipeline.shards import checksum_of_entries

CLASSES = ["Alarm_Clock", "dog"]
DOMAINS = ["art_painting", "photo"]


def image_bytes(seed: int, size: tuple[int, int] = (40, 48), fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.empty((h, w, 3), np.uint8)
    arr[:] = rng.integers(0, 256, 3)
    y, x = rng.integers(0, h // 2), rng.integers(0, w // 2)
    arr[y:y + h // 2, x:x + w // 2] = rng.integers(0, 256, 3)
    arr = np.clip(arr.astype(int) + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, quality=95)
    return buf.getvalue()


def sample_rows(domain: str, n: int, seed0: int) -> list[dict]:
    """n samples of one domain: keys sorted, every 4th sample in the val split."""
    rows = []
    for i in range(n):
        cls = i % len(CLASSES)
        rows.append({"key": f"{domain}/{CLASSES[cls]}/img{i:03d}", "domain": domain, "cls": cls,
                     "split": "val" if i % 4 == 3 else "train", "data": image_bytes(seed0 + i), "ext": "jpg"})
    return rows


def write_shard_set(work: Path, rows_by_shard: dict[str, list[dict]]) -> Path:
    """Write shards (relative path -> rows) and index.json under WORK/shards; returns WORK."""
    root = Path(work) / "shards"
    entries = []
    for rel, rows in sorted(rows_by_shard.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        layout = []
        with open(path, "wb") as f:
            write_tar(f, [encode_sample(r["key"], r["ext"], r["data"], r["cls"], {
                "key": r["key"], "domain": r["domain"], "class_name": CLASSES[r["cls"]], "class_index": r["cls"],
                "split": r["split"]}) for r in sorted(rows, key=lambda r: r["key"])], layout)
        offsets = [list(m) for m in layout if m[1] not in ("cls", "json")]  # the image member of each sample
        entries.append({"path": rel, "domain": rows[0]["domain"], "sha256": sha256_file(path), "n": len(rows),
                        "samples": offsets})
    write_json(root / "index.json", {"classes": CLASSES, "domains": sorted({e["domain"] for e in entries}),
                                     "shards": entries, "shard_set_sha256": checksum_of_entries(entries)})
    return Path(work)


def default_shards(n: int = 6) -> dict[str, list[dict]]:
    """Two domains, each split over two shards."""
    out = {}
    for d, domain in enumerate(DOMAINS):
        rows = sample_rows(domain, n, seed0=100 * d)
        half = len(rows) // 2
        out[f"{domain}/{domain}-000000.tar"] = rows[:half]
        out[f"{domain}/{domain}-000001.tar"] = rows[half:]
    return out


def index_of(work: Path) -> dict:
    return json.loads((Path(work) / "shards" / "index.json").read_text())
