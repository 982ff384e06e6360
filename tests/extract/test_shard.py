"""The shard step end to end on a small dataset with every kind of good and bad file."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile

import pytest
import webdataset as wds
from PIL import Image
from shard_fixtures import all_files, bad_files, make_plain, special_images, tar_bytes, tree_bytes, write

from pipeline import shards
from pipeline.errors import UserError
from pipeline.extract import writer as shard_writer
from pipeline.extract.manifest import read_manifest
from pipeline.extract.shard_step import ShardConfig, run


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = make_plain(tmp_path_factory.mktemp("data") / "DATA", per_class=5)
    for name, (data, _, _) in special_images(50).items():
        write(root / "photo" / "cat" / name, data)
    for name, (data, _) in bad_files(70).items():
        write(root / "sketch" / "dog" / name, data)
    # Duplicates: the same bytes in another domain/class; the smallest key is kept.
    write(root / "sketch" / "cat" / "copy of img_0.jpg", (root / "photo" / "cat" / "img_0.jpg").read_bytes())
    write(root / "Thumbs.db", bad_files(0)["Thumbs.db"][0])              # outside any domain
    write(root / "photo" / "loose.jpg", special_images(0)["scan.bmp"][0])  # outside a class folder
    write(root / ".hidden" / "x" / "y.jpg", special_images(1)["scan.bmp"][0])
    return root


@pytest.fixture(scope="module")
def work(dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    summary = run(ShardConfig(shard_size=4, workers=1), data_root=dataset, work=work)
    return work, summary


def samples_by_key(work):
    return {s.key: s for s in shards.iter_samples(shards.shard_paths(work))}


def test_every_file_has_a_manifest_row(dataset, work):
    rows = read_manifest(work[0] / "manifest.jsonl")
    assert [r["source"] for r in rows] == all_files(dataset)
    fate = {r["source"]: r for r in rows}
    for name, (_, reason) in bad_files(70).items():
        row = fate[f"sketch/dog/{name}"]
        assert (row["status"], row["reason"]) == ("skipped", reason), name
    assert fate["Thumbs.db"]["reason"] == "outside_class_folder"
    assert fate["photo/loose.jpg"]["reason"] == "outside_class_folder"
    assert fate[".hidden/x/y.jpg"]["reason"] == "ignored_folder"
    dup = fate["sketch/cat/copy of img_0.jpg"]
    assert dup["reason"] == "duplicate" and dup["duplicate_of"] == "photo/cat/img_0~2Ejpg"
    assert fate["photo/cat/img_0.jpg"]["status"] == "kept"


def test_samples_hold_original_bytes_real_extension_and_metadata(dataset, work):
    work_dir, summary = work
    got = samples_by_key(work_dir)
    rows = [r for r in read_manifest(work_dir / "manifest.jsonl") if r["status"] == "kept"]
    assert len(got) == len(rows) == summary["kept"]
    index = shards.load_index(work_dir)
    assert index["classes"] == ["cat", "dog"] and index["domains"] == ["photo", "sketch"]
    specials = special_images(50)
    for row in rows:
        s = got[row["key"]]
        original = (dataset / row["source"]).read_bytes()
        assert s.data == original
        assert s.meta["sha256"] == hashlib.sha256(original).hexdigest()
        assert s.cls == index["classes"].index(row["source"].split("/")[1])
        assert (s.meta["source"], s.meta["split"], s.meta["domain"]) == (row["source"], row["split"], row["domain"])
        with Image.open(io.BytesIO(original)) as im:
            assert (s.meta["width"], s.meta["height"]) == im.size
        name = row["source"].split("/")[-1]
        if name in specials:
            _, ext, mode = specials[name]
            assert (s.ext, s.meta["mode"]) == (ext, mode), name
        else:
            assert s.ext == "jpg"
    assert got["photo/cat/rotated~2Ejpg"].meta["exif_orientation"] == 6


def test_keys_survive_webdataset_unchanged(work):
    """Keys are cut by webdataset at the first dot: read the raw tars and compare with the manifest."""
    work_dir, _ = work
    kept = {r["key"]: r for r in read_manifest(work_dir / "manifest.jsonl") if r["status"] == "kept"}
    raw_keys = []
    for entry in shards.load_index(work_dir)["shards"]:
        ds = wds.WebDataset(str(work_dir / "shards" / entry["path"]), shardshuffle=False)
        for sample in ds:
            raw_keys.append(sample["__key__"])
            assert kept[sample["__key__"]]["shard"] == entry["path"]
    assert sorted(raw_keys) == sorted(kept) and len(set(raw_keys)) == len(raw_keys)
    assert all("." not in k for k in raw_keys)
    assert any("caf" in k for k in raw_keys) and any("v2" in k for k in raw_keys)


def test_shards_are_one_domain_sorted_and_deterministic_tar_headers(work):
    work_dir, _ = work
    kept = [r for r in read_manifest(work_dir / "manifest.jsonl") if r["status"] == "kept"]
    for entry in shards.load_index(work_dir)["shards"]:
        path = work_dir / "shards" / entry["path"]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        in_shard = sorted((r["position"], r["key"]) for r in kept if r["shard"] == entry["path"])
        assert [k for _, k in in_shard] == sorted(k for _, k in in_shard)
        assert {r["domain"] for r in kept if r["shard"] == entry["path"]} == {entry["domain"]}
        assert entry["n"] == len(in_shard) <= 4
        with tarfile.open(path) as tf:
            for m in tf.getmembers():
                assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "rise", "rise")


def test_stats_and_summary_count_the_manifest(work):
    work_dir, summary = work
    rows = read_manifest(work_dir / "manifest.jsonl")
    stats = json.loads((work_dir / "shards" / "stats.json").read_text())
    for domain, per_class in stats["domains"].items():
        for cls, per_split in per_class.items():
            for split, n in per_split.items():
                assert n == sum(1 for r in rows if r["status"] == "kept" and (r["domain"], r["class_name"], r["split"])
                                == (domain, cls, split))
    reasons = {}
    for r in rows:
        if r["status"] == "skipped":
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    assert summary["skipped_by_reason"] == stats["skipped_by_reason"] == reasons
    assert summary["kept"] + summary["skipped"] == len(rows)
    assert sum(s["n"] for s in stats["shards"].values()) == summary["kept"]


def test_rerun_is_byte_identical_and_reuses_every_shard(dataset, work, tmp_path):
    work_dir, _ = work
    before = tree_bytes(work_dir)
    again = run(ShardConfig(shard_size=4, workers=1), data_root=dataset, work=work_dir)
    assert again["reused"] == again["shards"]
    assert tree_bytes(work_dir) == before
    fresh = tmp_path / "fresh"
    run(ShardConfig(shard_size=4, workers=1), data_root=dataset, work=fresh)
    assert tree_bytes(fresh) == before


def test_split_is_seeded_and_near_the_fraction(tmp_path):
    root = make_plain(tmp_path / "DATA", domains=("a",), classes=("x",), per_class=200)
    splits = {}
    for seed in (0, 1):
        run(ShardConfig(seed=seed, val_fraction=0.25, workers=1), data_root=root, work=tmp_path / f"w{seed}")
        rows = read_manifest(tmp_path / f"w{seed}" / "manifest.jsonl")
        splits[seed] = {r["key"]: r["split"] for r in rows}
        n_val = sum(1 for s in splits[seed].values() if s == "val")
        assert 30 <= n_val <= 70  # 25% of 200, binomial sd ~6
    assert splits[0] != splits[1]


def test_max_side_reencodes_large_images_upright(tmp_path):
    from shard_fixtures import exif_rotated_jpeg, jpeg

    root = tmp_path / "DATA"
    write(root / "a" / "x" / "big.jpg", jpeg(1, 300, 200))
    write(root / "a" / "x" / "turned.jpg", exif_rotated_jpeg(2, 240, 120, orientation=6))
    write(root / "a" / "x" / "small.jpg", small := jpeg(3, 50, 40))
    run(ShardConfig(max_side=100, workers=1), data_root=root, work=tmp_path / "w")
    got = samples_by_key(tmp_path / "w")
    big, turned, kept = got["a/x/big~2Ejpg"], got["a/x/turned~2Ejpg"], got["a/x/small~2Ejpg"]
    with Image.open(io.BytesIO(big.data)) as im:
        assert im.size == (100, 67) and im.format == "JPEG"
    assert (big.meta["width"], big.meta["height"], big.meta["resized_from"]) == (100, 67, [300, 200])
    with Image.open(io.BytesIO(turned.data)) as im:
        assert im.size == (50, 100)  # orientation 6 = rotated 90 degrees: upright is portrait
    assert turned.meta["exif_orientation"] == 1 and turned.meta["resized_from"] == [240, 120]
    assert kept.data == small and kept.meta["resized_from"] is None


def test_read_api_rejects_truncated_shard_and_unknown_domain(work, tmp_path):
    work_dir, _ = work
    path = shards.shard_paths(work_dir, ["sketch"])[0]
    assert path.parent.name == "sketch"
    with pytest.raises(UserError, match="unknown domain"):
        shards.shard_paths(work_dir, ["nope"])
    data = path.read_bytes()
    for cut in (len(data) // 2, 1536):
        bad = tmp_path / path.name
        bad.write_bytes(data[:cut])
        with pytest.raises(UserError, match=str(bad)):
            list(shards.iter_samples([bad]))
    # A shard cut exactly between samples is still a valid tar: the index's count catches it.
    short = list(shards.iter_samples([path]))[:-1]
    copy = tmp_path / "copy"
    shutil.copytree(work_dir / "shards", copy / "shards")
    (copy / "shards" / "sketch" / path.name).write_bytes(tar_bytes(
        shard_writer.encode_sample(s.key, s.ext, s.data, s.cls, s.meta) for s in short))
    with pytest.raises(UserError, match=f"holds {len(short)} samples but the index says {len(short) + 1}"):
        list(shards.iter_samples(shards.shard_paths(copy, ["sketch"])))
    lines = sorted(f"{e['path']} {hashlib.sha256((work_dir / 'shards' / e['path']).read_bytes()).hexdigest()}\n"
                   for e in shards.load_index(work_dir)["shards"])
    assert shards.shard_set_checksum(work_dir) == hashlib.sha256("".join(lines).encode()).hexdigest()
    with pytest.raises(UserError, match="no shard index"):
        shards.load_index(tmp_path / "empty")


def test_tar_layout_is_webdatasets_own(tmp_path):
    """Our tarfile writer gives the very bytes webdataset's TarWriter gives with the same fixed fields."""
    samples = [shard_writer.encode_sample(shard_writer.make_key(f"d/c/{'long ' * 40}{i}.x.jpg"), "jpg", bytes([i]) * 700, i,
                                    {"i": i, "name": "ü"}) for i in range(3)]
    buf = io.BytesIO()
    with wds.TarWriter(buf, encoder=False, mtime=0, user="rise", group="rise", mode=0o444,
                       format="PAX_FORMAT") as writer:
        for s in samples:
            writer.write(s)
    assert tar_bytes(samples) == buf.getvalue()
