"""The embed step end to end on tiny shards: embeddings equal open_clip called directly, replayed views,
resume, incremental reuse, deterministic bytes, schema as documented, bad inputs."""

from __future__ import annotations

import io
import json
import re
import shutil

import h5py
import numpy as np
import open_clip
import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import REPO as ROOT
from embed_fixtures import default_shards, image_bytes, index_of, sample_rows, write_shard_set
from PIL import Image, ImageOps

import pipeline.extract.parts
from pipeline.augment import ViewParams, apply_view, sample_views
from pipeline.errors import UserError
from pipeline.extract.embed_step import EmbedConfig, run
from pipeline.extract.project_models import register_project_models
from pipeline.shards import iter_samples, shard_paths
from pipeline.store import StoreReader, verify_store

K = 3


def _cfg(**kw) -> EmbedConfig:
    base = dict(model="RISE-micro-ViT", pretrained="random", views=K, workers=0, batch_size=16, dtype="float32")
    return EmbedConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    work = write_shard_set(tmp_path_factory.mktemp("w") / "work", default_shards())
    run(_cfg(), work)
    return work


def _reference():
    register_project_models()
    torch.manual_seed(0)  # the teacher's documented seeded random init
    model, _, preprocess = open_clip.create_model_and_transforms("RISE-micro-ViT")
    return model.eval(), preprocess


def _upright(data: bytes) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


def test_image_embeddings_equal_open_clip_directly(built):
    model, preprocess = _reference()
    r = StoreReader(built / "embeddings.h5")
    samples = list(iter_samples(shard_paths(built)))
    assert sorted(r.keys) == sorted(s.key for s in samples)
    x = torch.stack([preprocess(_upright(s.data)) for s in samples])
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
    got = r.clean([r.row_of(s.key) for s in samples])
    np.testing.assert_allclose(got, want, atol=1e-5)
    for s in samples:
        row = r.row_of(s.key)
        assert r.class_names[r.labels[row]] == s.meta["class_name"]
        assert r.domain_names[r.domains[row]] == s.meta["domain"]
        assert ("train", "val")[r.splits[row]] == s.meta["split"]
    assert r.display_names == ["alarm clock", "dog"] and r.anchors == ["art painting", "photo"]


def test_store_text_is_the_references_raw_template_mean(built):
    """t_raw in the store = mean over templates of open_clip's raw text features (RISE's reference);
    t_hat = its normalisation; every default anchor is tagged with the domain it names."""
    model, _ = _reference()
    tok = open_clip.get_tokenizer("RISE-micro-ViT")
    r = StoreReader(built / "embeddings.h5")
    with torch.no_grad():
        per = np.stack([model.encode_text(tok([t.format(c) for c in r.display_names])).numpy() for t in r.templates])
    raw = per.mean(0)
    np.testing.assert_allclose(r.text_class_raw, raw, atol=1e-5)
    np.testing.assert_allclose(r.text_class, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-5)
    assert r.attrs["text_average"] == "raw"
    assert r.anchor_domains.tolist() == list(range(len(r.domain_names)))


def test_replayed_view_gives_stored_embedding(built):
    model, preprocess = _reference()
    r = StoreReader(built / "embeddings.h5")
    train = [s for s in iter_samples(shard_paths(built)) if s.meta["split"] == "train"]
    assert r.has_views and r.views_k == K and sorted(r.view_keys) == sorted(s.key for s in train)
    norm = preprocess.transforms[-1]
    for s in train[:3]:
        img = _upright(s.data)
        vrow = r.view_row_of(s.key)
        expected = sample_views(s.key, 0, K, img.width, img.height)  # independently re-sampled
        for k in range(K):
            params = ViewParams.from_array(r.view_params([vrow], [k])[0])
            assert params == expected[k]
            x = TF.normalize(TF.to_tensor(apply_view(img, params, 32)), norm.mean, norm.std)[None]
            with torch.no_grad():
                want = torch.nn.functional.normalize(model.encode_image(x), dim=-1).numpy()
            np.testing.assert_allclose(r.view_embedding([vrow], [k]), want, atol=1e-5)
    assert not np.allclose(r.view_embedding([0], [0]), r.view_embedding([0], [1]))


def test_schema_is_as_documented(built):
    doc = (ROOT / "docs" / "contracts.md").read_text()
    block = doc[doc.index("## The store"):].split("```")[1]
    attrs = re.search(r"attrs\s+(.*?)\n/", block, re.S).group(1)
    names = [a.strip() for a in re.sub(r"\([^()]*(\([^()]*\)[^()]*)*\)", "", attrs).replace("\n", " ").split(",")]
    rows = re.findall(r"^(/\S+)\s+\(([^)]*)\)\s+(\w+)", block, re.M)
    assert len(rows) >= 17 and "schema_version" in names
    with h5py.File(built / "embeddings.h5", "r") as f:
        assert set(names) <= set(f.attrs), set(names) - set(f.attrs)
        sizes = {"C": 2, "Dm": 2, "P": 7, "A": 2, "D": 32, "K": K, "N": 12, "M": 10, "14": 14}
        for name, shape, dtype in rows:
            ds = f[name]
            assert ds.shape == tuple(sizes[s.strip()] for s in shape.split(",")), name
            kinds = {"str": "O", "f32": "<f4", "f16": "<f4", "i64": "<i8", "u8": "|u1"}  # store built in float32
            assert (ds.dtype.kind == "O") if dtype == "str" else ds.dtype.str == kinds[dtype], name
            assert ds.chunks is None and ds.compression is None, name


def test_resume_and_incremental_reuse(built, tmp_path, monkeypatch):
    shards = default_shards()
    work = write_shard_set(tmp_path / "work", shards)
    calls = []
    real = pipeline.extract.parts.write_part

    def killed_after_two(item, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while the third shard is being finished
        calls.append(item["rel"])
        return real(item, *args)

    monkeypatch.setattr(pipeline.extract.parts, "write_part", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(), work)
    assert not (work / "embeddings.h5").exists() and len(list((work / "parts").glob("*.npz"))) == 2
    monkeypatch.setattr(pipeline.extract.parts, "write_part", lambda item, *a: calls.append(item["rel"]) or real(item, *a))
    run(_cfg(), work)
    assert len(calls) == 4 and len(set(calls)) == 4  # the resumed run embedded only the two missing shards
    assert (work / "embeddings.h5").read_bytes() == (built / "embeddings.h5").read_bytes()

    calls.clear()
    shards["photo/photo-000002.tar"] = sample_rows("photo", 2, seed0=900)
    for r in shards["photo/photo-000002.tar"]:
        r["key"] = r["key"].replace("img", "new")
    write_shard_set(work, shards)
    with pytest.raises(UserError, match="different shard set"):
        verify_store(work)  # the old store no longer matches the shards: refused
    run(_cfg(), work)
    assert calls == ["photo/photo-000002.tar"]
    assert len(verify_store(work)) == 14


def test_loader_workers_and_float16_give_same_rows(built, tmp_path):
    work = write_shard_set(tmp_path / "work", default_shards())
    run(_cfg(workers=2, dtype="float16", batch_size=7), work)
    a, b = StoreReader(built / "embeddings.h5"), StoreReader(work / "embeddings.h5")
    assert list(a.keys) == list(b.keys) and list(a.view_keys) == list(b.view_keys)
    np.testing.assert_allclose(b.clean(range(12)), a.clean(range(12)), atol=2e-3)
    np.testing.assert_array_equal(b.view_params(range(9), [2] * 9), a.view_params(range(9), [2] * 9))
    with h5py.File(work / "embeddings.h5") as f:
        assert f["images/clean"].dtype == np.float16 and f["views/emb"].dtype == np.float16


def test_reports(built):
    rep = json.loads((built / "teacher_report.json").read_text())
    r = StoreReader(built / "embeddings.h5")
    pred = (r.clean(range(len(r))) @ r.text_class.T).argmax(1)
    photo_val = (r.domains == 1) & (r.splits == 1)
    assert rep["per_domain"]["photo"]["val"]["n"] == int(photo_val.sum())
    assert rep["per_domain"]["photo"]["val"]["acc"] == pytest.approx((pred == r.labels)[photo_val].mean())
    assert rep["zero_shot_acc"] == pytest.approx((pred == r.labels).mean(), abs=1e-6)
    audit = json.loads((built / "audit.json").read_text())
    assert audit["rows"] == 12 and set(audit["counts"]) == {"cross_domain", "cross_split", "within"}


def test_undecodable_sample_skipped_and_recorded(tmp_path):
    shards = default_shards(4)
    shards["photo/photo-000000.tar"][0]["data"] = b"this is not a jpeg"
    bad_key = shards["photo/photo-000000.tar"][0]["key"]
    work = write_shard_set(tmp_path / "work", shards)
    run(_cfg(views=0, audit_threshold=0.9999), work)
    r = StoreReader(work / "embeddings.h5")
    assert bad_key not in set(r.keys) and len(r) == 7 and not r.has_views
    rep = json.loads((work / "teacher_report.json").read_text())
    assert rep["skipped"] == 1 and rep["skipped_samples"][0]["key"] == bad_key
    assert rep["skipped_samples"][0]["reason"] == "undecodable"


def test_audit_finds_planted_duplicate_images(tmp_path):
    shards = default_shards(4)
    dup = shards["art_painting/art_painting-000000.tar"][0]
    shards["photo/photo-000001.tar"][0]["data"] = dup["data"]  # the same picture in another domain
    work = write_shard_set(tmp_path / "work", shards)
    run(_cfg(views=0, audit_threshold=0.9999), work)
    audit = json.loads((work / "audit.json").read_text())
    top = audit["listed"][0]
    assert {top["a"], top["b"]} == {dup["key"], shards["photo/photo-000001.tar"][0]["key"]}
    assert top["group"] == "cross_domain" and top["cosine"] > 0.9999


def test_cli_bad_inputs(tmp_path, cli):
    work = write_shard_set(tmp_path / "work", {"photo/photo-000000.tar": sample_rows("photo", 3, 0)})
    res = cli("extract", "--out", work, "--steps", "embed", "--model", "ViT-B-99", "--pretrained", "openai",
              in_process=True)
    assert res.code == 2 and "Traceback" not in res.err
    assert "error: unknown open_clip model 'ViT-B-99'" in res.err and "open_clip.list_pretrained()" in res.err
    tar = work / "shards" / "photo" / "photo-000000.tar"
    tar.write_bytes(tar.read_bytes()[:1536])
    res = cli("extract", "--out", work, "--steps", "embed", "--model", "RISE-micro-ViT", "--pretrained",
              "random", "--views", "1", "--workers", "0", in_process=True)
    assert res.code == 2 and "Traceback" not in res.err, res.err
    assert re.search(r"error: shard \S*photo-000000\.tar is corrupt", res.err), res.err


def test_corrupt_shard_with_matching_index_names_the_shard(tmp_path):
    work = write_shard_set(tmp_path / "work", {"photo/photo-000000.tar": sample_rows("photo", 3, 0)})
    tar = work / "shards" / "photo" / "photo-000000.tar"
    tar.write_bytes(tar.read_bytes()[:1536] + bytes(1024))  # cut inside a member, then an end marker
    idx = index_of(work)
    from pipeline.io import sha256_file, write_json
    idx["shards"][0]["sha256"] = sha256_file(tar)  # the index agrees with the damaged file
    write_json(work / "shards" / "index.json", idx)
    with pytest.raises(UserError, match=r"shard \S*photo-000000\.tar"):
        run(_cfg(workers=1), work)
    shutil.rmtree(work)


def test_image_bytes_fixture_is_deterministic():
    assert image_bytes(3) == image_bytes(3) != image_bytes(4)
