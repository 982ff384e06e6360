"""The faiss audit finds planted near-duplicates, groups them, and searches in bounded blocks."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.augment import PARAM_COLUMNS
from pipeline.extract.audit import audit, near_duplicates
from pipeline.store import SCHEMA_VERSION, ImageChunk, StoreReader, write_store

D = 64


def _store(path, emb, domains, splits):
    n = len(emb)
    keys = np.array([f"k{i:04d}" for i in range(n)], dtype=object)
    chunk = ImageChunk(keys=keys, labels=np.zeros(n, np.int64), domains=np.asarray(domains, np.int64),
                       splits=np.asarray(splits, np.uint8), clean=emb, view_keys=keys[:0],
                       view_emb=np.zeros((0, 0, D)), view_params=np.zeros((0, 0, 14)))
    z = np.zeros((1, 1, D), np.float32)
    write_store(path, attrs=dict(schema_version=SCHEMA_VERSION, model="m", pretrained="p", embed_dim=D, views=0,
                                 shard_set_sha256="x", dtype="float32"),
                class_names=["c"], display_names=["c"], domain_names=["art", "photo"], templates=["{}"],
                anchors=["a"], text={"per_template": z, "class_raw": z[0], "class": z[0], "anchor": z,
                                                "anchor_domain": np.array([-1])},
                n_images=n, n_views=0, chunks=[chunk], param_columns=PARAM_COLUMNS)
    return StoreReader(path)


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@pytest.mark.cuda
@pytest.mark.parametrize("use_gpu", [False, pytest.param(True, marks=pytest.mark.skipif(
    _faiss_gpus() == 0, reason="faiss sees no GPU"))])
def test_planted_duplicates_found_and_grouped(tmp_path, use_gpu):
    rng = np.random.default_rng(0)
    n = 300
    emb = rng.normal(size=(n, D)).astype(np.float32)
    domains = np.arange(n) % 2
    splits = (np.arange(n) % 10 == 0).astype(np.uint8)
    planted = {(3, 150): "cross_domain", (10, 12): "cross_split", (4, 6): "within", (5, 298): "cross_domain"}
    for (a, b) in planted:
        emb[b] = emb[a] + 0.01 * rng.normal(size=D)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    r = _store(tmp_path / "s.h5", emb, domains, splits)
    # Blocks smaller than N: pairs whose rows sit in different query blocks are still found once.
    pairs, cos, saturated, kind = near_duplicates(r, 0.95, k=5, block=64, use_gpu=use_gpu)
    assert {tuple(p) for p in pairs} == set(planted) and kind == ("gpu" if use_gpu else "cpu") and saturated == 0
    want = np.array([emb[a] @ emb[b] for a, b in pairs])
    np.testing.assert_allclose(cos, want, rtol=1e-5)
    out = audit(r, threshold=0.95, k=5, use_gpu=use_gpu)
    assert out["counts"] == {"cross_domain": 2, "cross_split": 1, "within": 1}
    got = {(p["a"], p["b"]): p["group"] for p in out["listed"]}
    assert got == {(f"k{a:04d}", f"k{b:04d}"): g for (a, b), g in planted.items()}
    assert out["by_domain_pair"] == {"art | photo": 2, "art | art": 2}


def test_no_pairs_below_threshold(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(50, D)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    out = audit(_store(tmp_path / "s.h5", emb, np.zeros(50), np.zeros(50)), threshold=0.9, use_gpu=False)
    assert out["pairs"] == 0 and out["listed"] == [] and out["rows"] == 50
