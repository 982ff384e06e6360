"""The HDF5 store: schema as documented (read with h5py alone), reader = writer input, bounded reads."""

from __future__ import annotations

import pickle
import time

import h5py
import numpy as np
import pytest

from pipeline.augment import PARAM_COLUMNS
from pipeline.errors import UserError
from pipeline.store import SCHEMA_VERSION, ImageChunk, StoreReader, write_store, zero_shot_hits

C, D, K, P, A = 3, 8, 2, 2, 2


def _chunks(rng, sizes):
    out, start = [], 0
    for n in sizes:
        keys = np.array([f"d{start + i:03d}" for i in range(n)], dtype=object)
        splits = (np.arange(n) % 3 == 0).astype(np.uint8)
        train = splits == 0
        out.append(ImageChunk(keys=keys, labels=rng.integers(0, C, n), domains=rng.integers(0, 2, n),
                              splits=splits, clean=rng.normal(size=(n, D)).astype(np.float32),
                              view_keys=keys[train], view_emb=rng.normal(size=(train.sum(), K, D)),
                              view_params=rng.normal(size=(train.sum(), K, 14))))
        start += n
    return out


def _write(path, chunks, dtype="float16"):
    rng = np.random.default_rng(1)
    attrs = dict(schema_version=SCHEMA_VERSION, model="m", pretrained="p", embed_dim=D, views=K, shard_set_sha256="abc",
                 dtype=dtype, augment={"flip_p": 0.5}, preprocess={"size": [32, 32]})
    text = dict(per_template=rng.normal(size=(P, C, D)), class_raw=rng.normal(size=(C, D)),
                **{"class": rng.normal(size=(C, D))}, anchor=rng.normal(size=(A, C, D)),
                anchor_domain=np.array([0, -1]))
    write_store(path, attrs=attrs, class_names=["a_b", "c", "d"], display_names=["a b", "c", "d"],
                domain_names=["x", "y"], templates=["a {}.", "b {}."], anchors=["x", "y"], text=text,
                n_images=sum(len(c.keys) for c in chunks), n_views=sum(len(c.view_keys) for c in chunks),
                chunks=chunks, param_columns=PARAM_COLUMNS)
    return text


def test_schema_readable_with_h5py_alone(tmp_path):
    chunks = _chunks(np.random.default_rng(0), [5, 4])
    text = _write(tmp_path / "s.h5", chunks)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION and f.attrs["views"] == K
        assert list(f["classes/names"].asstr()[()]) == ["a_b", "c", "d"]
        assert f["text/per_template"].shape == (P, C, D) and f["text/anchor"].shape == (A, C, D)
        np.testing.assert_allclose(f["text/class"][()], text["class"], rtol=1e-6)
        assert f["images/clean"].dtype == np.float16 and f["images/clean"].shape == (9, D)
        assert f["images/clean"].chunks is None and f["images/clean"].compression is None
        assert f["views/emb"].shape == (5, K, D) and f["views/params"].shape == (5, K, 14)
        assert f["images/split"].dtype == np.uint8 and f["images/label"].dtype == np.int64
        keys = list(f["images/key"].asstr()[()])
        row = keys.index("d007")
        np.testing.assert_allclose(f["images/clean"][row], chunks[1].clean[2].astype(np.float16))


def test_reader_matches_written_rows(tmp_path):
    chunks = _chunks(np.random.default_rng(0), [5, 4])
    _write(tmp_path / "s.h5", chunks, dtype="float32")
    r = StoreReader(tmp_path / "s.h5")
    keys = np.concatenate([c.keys for c in chunks])
    clean = np.concatenate([c.clean for c in chunks])
    rows = [r.row_of(k) for k in ["d008", "d000", "d004"]]
    np.testing.assert_array_equal(r.clean(rows), clean[[8, 0, 4]])
    assert list(r.keys) == list(keys) and r.display_names == ["a b", "c", "d"]
    vk = np.concatenate([c.view_keys for c in chunks])
    ve = np.concatenate([c.view_emb for c in chunks]).astype(np.float32)
    vp = np.concatenate([c.view_params for c in chunks]).astype(np.float32)
    vr = [r.view_row_of(k) for k in vk[::-1]]
    ks = [1, 0, 1, 0, 1]
    np.testing.assert_array_equal(r.view_embedding(vr, ks), ve[::-1][np.arange(5), ks])
    np.testing.assert_array_equal(r.view_params(vr, ks), vp[::-1][np.arange(5), ks])
    assert r.attrs["augment"] == {"flip_p": 0.5} and r.has_views and r.views_k == K
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.clean([3]), clean[[3]])
    with pytest.raises(KeyError, match="d999"):
        r.row_of("d999")


def test_bytes_deterministic(tmp_path):
    _write(tmp_path / "a.h5", _chunks(np.random.default_rng(0), [5, 4]))
    time.sleep(1.1)  # HDF5 object timestamps have 1 s resolution
    _write(tmp_path / "b.h5", _chunks(np.random.default_rng(0), [5, 4]))
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_not_a_store_refused(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["foo"] = 1
    with pytest.raises(UserError, match="not a teacher store: missing classes/names"):
        StoreReader(tmp_path / "x.h5")
    with pytest.raises(UserError, match="not found"):
        StoreReader(tmp_path / "nope.h5")


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_zero_shot_hits_match_numpy_on_the_file(tmp_path, dtype):
    _write(tmp_path / "s.h5", _chunks(np.random.default_rng(3), [20, 17, 9]), dtype=dtype)
    r = StoreReader(tmp_path / "s.h5")
    # independent reference: the file read with h5py alone, one matrix product for all rows
    with h5py.File(tmp_path / "s.h5", "r") as f:
        clean = f["images/clean"][()].astype(np.float32)
        want = (clean @ f["text/class"][()].T).argmax(1) == f["images/label"][()]
    assert 0 < want.sum() < len(want)  # both outcomes occur, so a constant answer cannot pass
    for block in (1, 4, 7, 65536):  # blocks that split the rows unevenly, and one block for all
        hits = zero_shot_hits(r, block=block)
        assert hits.dtype == bool
        np.testing.assert_array_equal(hits, want)
    rows = np.random.default_rng(0).permutation(len(r))[:25]
    rows = np.concatenate([rows, rows[:3]])  # any order, repeats allowed: one answer per requested row
    np.testing.assert_array_equal(zero_shot_hits(r, rows, block=4), want[rows])
    assert zero_shot_hits(r, np.array([], dtype=np.int64)).shape == (0,)
