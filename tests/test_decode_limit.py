"""One decode limit from shard to distill: with `shard.max_pixels` above the library default, an image whose
pixel count lies between the two is kept by the shard step, embedded by the embed step and decoded by
distill's streams. Every step reads the limit the shard step recorded; one that decoded with the library
default instead (a call site that forgot to pass the limit) would drop these images.

The library default is lowered to 3000 pixels for the test (everywhere it was baked in as a default), so
small images stand in for large ones.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import pipeline.distill.data
import pipeline.extract.embed_step
import pipeline.extract.parts
import pipeline.extract.probe
import pipeline.extract.shard_step
import pipeline.extract.writer
import pipeline.images
import pipeline.shards
from pipeline.augment import ViewParams, apply_view
from pipeline.distill.data import TRAIN, EvalItems, TrainItems, select_rows
from pipeline.distill.loader import RowLocations, StoreImages
from pipeline.errors import BadSample
from pipeline.extract.embed_step import EmbedConfig
from pipeline.extract.embed_step import run as embed_run
from pipeline.extract.shard_step import ShardConfig
from pipeline.extract.shard_step import run as shard_run
from pipeline.images import MAX_PIXELS, decode_rgb
from pipeline.shards import decode_limit, load_index
from pipeline.store import StoreReader

LOW_DEFAULT = 3000       # the library default during the test
SETTING = 20_000         # shard.max_pixels: above the default
SIDES = (64, 100)        # 4096 and 10000 pixels: between the two
TOO_BIG = 160            # 25600 pixels: above the setting, skipped
MODULES = (pipeline.images, pipeline.shards, pipeline.extract.probe, pipeline.extract.writer, pipeline.extract.parts,
           pipeline.extract.embed_step, pipeline.extract.shard_step, pipeline.distill.data)


def _lower_library_default(monkeypatch) -> int:
    """MAX_PIXELS -> LOW_DEFAULT in every module that holds it, and in every default argument or dataclass
    field default that was set from it at import time; returns how many defaults were replaced."""
    replaced = 0
    for module in MODULES:
        for name, obj in list(vars(module).items()):
            if name == "MAX_PIXELS":
                monkeypatch.setattr(module, name, LOW_DEFAULT)
            elif getattr(obj, "__module__", None) != module.__name__:
                continue
            elif inspect.isfunction(obj) and MAX_PIXELS in (obj.__defaults__ or ()):
                monkeypatch.setattr(obj, "__defaults__",
                                    tuple(LOW_DEFAULT if d == MAX_PIXELS else d for d in obj.__defaults__))
                replaced += 1
            elif dataclasses.is_dataclass(obj) and MAX_PIXELS in (obj.__init__.__defaults__ or ()):
                monkeypatch.setattr(obj.__init__, "__defaults__", tuple(
                    LOW_DEFAULT if d == MAX_PIXELS else d for d in obj.__init__.__defaults__))
                replaced += 1
    return replaced


def _dataset(root):
    """root/<domain>/<class>/<n>.png: 64x64 and 100x100 images (kept), plus one 160x160 per domain (skipped)."""
    rng = np.random.default_rng(0)
    for domain in ("photo", "sketch"):
        for cls in ("cat", "dog"):
            (root / domain / cls).mkdir(parents=True)
            for n in range(6):
                side = SIDES[n % 2]
                Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / domain / cls / f"{n}.png")
        Image.fromarray(rng.integers(0, 256, (TOO_BIG, TOO_BIG, 3), dtype=np.uint8)).save(root / domain / "cat" / "big.png")
    return root


def test_images_between_default_and_setting_survive_every_step(tmp_path, monkeypatch, caplog):
    assert _lower_library_default(monkeypatch) >= 3  # decode_rgb, the probe's functions, EmbedSpec at least
    assert all(LOW_DEFAULT < s * s <= SETTING < TOO_BIG * TOO_BIG for s in SIDES)
    work = tmp_path / "work"

    # shard: kept under the setting, not under the (lowered) default
    summary = shard_run(ShardConfig(max_pixels=SETTING, val_fraction=0.25, shard_size=5, workers=1),
                        data_root=_dataset(tmp_path / "data"), work=work)
    assert summary["kept"] == 24 and summary["skipped_by_reason"] == {"decompression_bomb": 2}
    assert decode_limit(load_index(work)) == SETTING
    rows = [json.loads(line) for line in (work / "manifest.jsonl").read_text().splitlines()]
    kept = {r["key"] for r in rows if r["status"] == "kept"}
    assert len(kept) == 24 and all("big" not in k for k in kept)

    # embed: every kept image embedded (clean view and, for training images, its views)
    embed_run(EmbedConfig(model="RISE-micro-ViT", pretrained="random", views=2, workers=0, device="cpu",
                          batch_size=16, dtype="float32"), work)
    report = json.loads((work / "teacher_report.json").read_text())
    assert report["skipped"] == 0, report["skipped_samples"]
    store = StoreReader(work / "embeddings.h5")
    assert set(store.keys) == kept
    assert set(store.view_keys) == {k for k, s in zip(store.keys, store.splits, strict=True) if s == TRAIN}
    assert store.attrs["max_pixels"] == SETTING

    # distill: training and evaluation items decode every image they read
    caplog.set_level(logging.WARNING, logger="pipeline.distill")
    domains = list(range(len(store.domain_names)))
    locations = RowLocations(work, store.keys)
    train = StoreImages(locations, TrainItems(store, image_size=16, seed=0))
    train_rows = np.flatnonzero(select_rows(store, domains, [TRAIN])).tolist()
    assert [train[r].row for r in train_rows] == train_rows  # None (skipped) would fail here
    evaluation = StoreImages(locations, EvalItems(store, 16))
    eval_rows = [evaluation[r].row for r in range(len(store))]
    assert eval_rows == list(range(len(store))) and len(eval_rows) == 24
    assert not [r for r in caplog.records if "skipping sample" in r.getMessage()]


def test_the_setting_still_limits():
    """The recorded limit is applied, not ignored: an image above it is refused, one at it is decoded."""
    buf = io.BytesIO()
    Image.new("RGB", (TOO_BIG, TOO_BIG)).save(buf, format="PNG")
    with pytest.raises(BadSample, match="decompression_bomb"):
        decode_rgb(buf.getvalue(), SETTING)
    assert decode_rgb(buf.getvalue(), TOO_BIG * TOO_BIG).size == (TOO_BIG, TOO_BIG)


# --- PIL's own limit ----------------------------------------------------------------------------------------
# PIL refuses images above twice PIL.Image.MAX_IMAGE_PIXELS (~179M pixels by default), at open, at load for
# some formats, and for crop boxes. Lowered here to 1000 (refused above 2000), small images stand in for
# images between ~179M pixels and a larger shard.max_pixels.

PIL_LIMIT = 1000
LIMIT = 5000          # shard.max_pixels
BETWEEN, ABOVE = 60, 80  # 3600 pixels: above PIL's (lowered) limit, within ours; 6400: above ours


def _encoded(side: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(side)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF", "GIF", "WEBP", "BMP"])
def test_max_pixels_is_the_only_limit(monkeypatch, fmt):
    """The probe (shard step) and decode_rgb (embed, distill) keep an image between PIL's limit and
    max_pixels, its views render, and both still refuse one above max_pixels. PIL's setting is left as it
    was."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIL_LIMIT)
    assert 2 * PIL_LIMIT < BETWEEN ** 2 <= LIMIT < ABOVE ** 2
    between, above = _encoded(BETWEEN, fmt), _encoded(ABOVE, fmt)
    with pytest.raises(Image.DecompressionBombError):  # PIL alone refuses it
        Image.open(io.BytesIO(between))

    info = pipeline.extract.probe.inspect_bytes(between, LIMIT)
    assert (info["width"], info["height"]) == (BETWEEN, BETWEEN)
    smaller, meta = pipeline.extract.probe.reencode(between, BETWEEN // 2, LIMIT)
    assert (meta["width"], meta["height"]) == (BETWEEN // 2, BETWEEN // 2)
    assert Image.open(io.BytesIO(smaller)).size == (BETWEEN // 2, BETWEEN // 2)
    img = decode_rgb(between, LIMIT)
    assert img.size == (BETWEEN, BETWEEN)
    # a crop box above PIL's limit (PIL checks crops too; the whole image would be a plain copy)
    view = ViewParams(top=1, left=1, height=BETWEEN - 2, width=BETWEEN - 1, flip=False, brightness=1.0,
                      contrast=1.0, saturation=1.0, hue=0.0, order=(0, 1, 2, 3), grayscale=False)
    assert view.height * view.width > 2 * PIL_LIMIT
    assert apply_view(img, view, 16).size == (16, 16)

    for step in (lambda d: pipeline.extract.probe.inspect_bytes(d, LIMIT),
                 lambda d: pipeline.extract.probe.reencode(d, BETWEEN // 2, LIMIT),
                 lambda d: decode_rgb(d, LIMIT)):
        with pytest.raises(BadSample) as refused:
            step(above)
        assert refused.value.reason == "decompression_bomb"
    assert Image.MAX_IMAGE_PIXELS == PIL_LIMIT


def test_pils_limit_comes_back_after_concurrent_decodes(monkeypatch):
    """Threads decoding at once all get our limit, and PIL's comes back once the last one is done."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PIL_LIMIT)
    data = [_encoded(BETWEEN, "PNG"), _encoded(ABOVE, "PNG")] * 32

    def decode(d):
        try:
            return decode_rgb(d, LIMIT).size
        except BadSample as e:
            return e.reason

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(decode, data))
    assert got == [(BETWEEN, BETWEEN), "decompression_bomb"] * 32
    assert Image.MAX_IMAGE_PIXELS == PIL_LIMIT
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(data[0]))
