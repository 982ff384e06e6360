"""A tiny real work folder for distill tests: generated images -> real shards (pipeline.extract.shard_step) -> real teacher
store (pipeline.extract.embed_step, RISE-micro-ViT with seeded random weights). Built once per session and per K
(`shared_work`); tests that modify a work folder copy it first."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DOMAINS = ("cartoon", "photo", "sketch")
CLASSES = ("dog", "house")
PER_CELL = 10  # images per domain x class: 60 in all, ~18 train / ~2 val per source domain


def make_dataset(root: Path, seed: int = 0) -> Path:
    """DomainBed layout root/<domain>/<class>/<n>.png with varied sizes (crop boxes differ per image)."""
    rng = np.random.default_rng(seed)
    for d_i, domain in enumerate(DOMAINS):
        for c_i, cls in enumerate(CLASSES):
            folder = root / domain / cls
            folder.mkdir(parents=True, exist_ok=True)
            for n in range(PER_CELL):
                w, h = int(rng.integers(36, 56)), int(rng.integers(36, 56))
                base = np.full((h, w, 3), 40 + 70 * d_i, dtype=np.uint8)
                base[h // 4: 3 * h // 4, w // 4: 3 * w // 4, c_i] = 230  # class = colour of a central square
                noise = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(folder / f"{n:03d}.png")
    return root


def make_work(tmp: Path, views: int) -> Path:
    """Shard and embed the generated dataset into tmp/work; returns the work folder."""
    from pipeline.extract.embed_step import EmbedConfig
    from pipeline.extract.embed_step import run as embed_run
    from pipeline.extract.shard_step import ShardConfig
    from pipeline.extract.shard_step import run as shard_run

    data = make_dataset(tmp / "data")
    work = tmp / "work"
    shard_run(ShardConfig(val_fraction=0.15, seed=0, shard_size=8, workers=1), data_root=data, work=work)
    embed_run(EmbedConfig(model="RISE-micro-ViT", pretrained="random", views=views, batch_size=64, device="cpu",
                          workers=0, seed=0, dtype="float32"), work=work)
    return work


_CACHE: dict[int, Path] = {}


def shared_work(views: int) -> Path:
    """One work folder per K for the whole test session (building it is the slow part)."""
    if views not in _CACHE:
        tmp = Path(tempfile.mkdtemp(prefix=f"distill_k{views}_"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        _CACHE[views] = make_work(tmp, views)
    return _CACHE[views]
