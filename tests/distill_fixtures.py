"""A tiny real work folder for distill tests: generated images -> real shards (pipeline.extract.shard_step) -> real teacher
store (pipeline.extract.embed_step, RISE-micro-ViT with seeded random weights). Built once per test session
and per K (`shared_work`, which tests reach as the `distill_work` fixture of tests/conftest.py); tests that
modify a work folder copy it first."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

DOMAINS = ("cartoon", "photo", "sketch")
CLASSES = ("dog", "house")
PER_CELL = 10  # images per domain x class: 60 in all, ~18 train / ~2 val per source domain


def distill_config(**overrides):
    """The DistillConfig the distill tests train with: the tiny `test_resnet` from scratch at 32 px, 2 epochs,
    batches of 8, no loader processes, on the CPU, DOMAINS[0] held out; `overrides` replace any field."""
    from pipeline.distill.config import DistillConfig

    base = dict(target_domain=DOMAINS[0], student="test_resnet", pretrained=False, epochs=2, image_size=32,
                batch_size=8, workers=0, device="cpu")
    return DistillConfig(**{**base, **overrides})


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


_BUILT: dict[int, Path] = {}
_mktemp: Callable[[str], Path] | None = None  # the test session's tmp_path_factory.mktemp, while it runs


def start_session(mktemp: Callable[[str], Path]) -> None:
    """Build this session's folders with `mktemp(name)` (tests/conftest.py passes tmp_path_factory's)."""
    global _mktemp
    _mktemp = mktemp


def end_session() -> None:
    """Remove the folders built this session (tests/conftest.py, at the end of the session)."""
    global _mktemp
    for work in _BUILT.values():
        shutil.rmtree(work.parent, ignore_errors=True)
    _BUILT.clear()
    _mktemp = None


def shared_work(views: int) -> Path:
    """One work folder per K for the whole test session (building it is the slow part). Import this module
    as `tests.distill_fixtures` (the one tests/conftest.py sets up); outside a test session, call
    `make_work(folder, views)`."""
    if views not in _BUILT:
        if _mktemp is None:
            raise RuntimeError("shared_work() runs inside a pytest session set up by tests/conftest.py "
                               "(import tests.distill_fixtures); elsewhere use make_work(folder, views)")
        _BUILT[views] = make_work(_mktemp(f"distill_k{views}"), views)
    return _BUILT[views]
