"""Input layouts (folder, CSV, JSONL), class names, and the user errors of the shard step via the real CLI."""

from __future__ import annotations

import csv
import json

import pytest
from shard_fixtures import jpeg, make_plain, tree_bytes, write

from pipeline import shards
from pipeline.extract.manifest import read_manifest
from pipeline.extract.shard_step import ShardConfig, run

SHARD = ("extract", "--steps", "shard")  # run in this process: these tests check statuses and messages


def assert_user_error(result, *fragments: str) -> None:
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_bad_roots_are_one_line_errors_naming_the_path(tmp_path, cli):
    missing = tmp_path / "nowhere"
    assert_user_error(cli(*SHARD, "--data-root", missing, "--out", tmp_path / "w", in_process=True),
                      "data root not found", str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(cli(*SHARD, "--data-root", empty, "--out", tmp_path / "w", in_process=True),
                      "data root is empty", str(empty))
    flat = tmp_path / "flat"
    write(flat / "a.jpg", jpeg(1))
    assert_user_error(cli(*SHARD, "--data-root", flat, "--out", tmp_path / "w", in_process=True),
                      "no domain folders", str(flat))


def test_domain_without_images_is_an_error_naming_it(tmp_path, cli):
    root = make_plain(tmp_path / "DATA", domains=("photo",))
    (root / "sketch" / "dog").mkdir(parents=True)
    assert_user_error(cli(*SHARD, "--data-root", root, "--out", tmp_path / "w", in_process=True),
                      "has no images", str(root / "sketch"))
    write(root / "sketch" / "dog" / "readme.txt", b"not a picture")
    write(root / "sketch" / "dog" / "zero.jpg", b"")
    result = cli(*SHARD, "--data-root", root, "--out", tmp_path / "w2", in_process=True)
    assert_user_error(result, "no usable images", str(root / "sketch"))
    reasons = {r["source"]: r["reason"] for r in read_manifest(tmp_path / "w2" / "manifest.jsonl")}
    assert reasons["sketch/dog/readme.txt"] == "not_image" and reasons["sketch/dog/zero.jpg"] == "empty"


def test_clashing_class_names_are_listed_and_a_class_map_resolves_them(tmp_path, cli):
    root = make_plain(tmp_path / "DATA", domains=("photo", "sketch"), classes=("big_cat",), per_class=2)
    write(root / "art" / "Big Cat" / "a.jpg", jpeg(501))
    write(root / "art" / "bigcat" / "b.jpg", jpeg(502))
    write(root / "art" / "Dog" / "c.jpg", jpeg(503))
    write(root / "photo" / "dog" / "d.jpg", jpeg(504))
    result = cli(*SHARD, "--data-root", root, "--out", tmp_path / "w", in_process=True)
    assert_user_error(result, "'Big Cat' (art)", "'big_cat' (photo, sketch)", "'bigcat' (art)",
                      "'Dog' (art)", "'dog' (photo)", "class_map")
    params = tmp_path / "params.yaml"
    params.write_text("shard:\n  class_map: {'Big Cat': big_cat, bigcat: big_cat, Dog: dog}\n")
    result = cli(*SHARD, "--data-root", root, "--out", tmp_path / "w", "--params", params, in_process=True)
    assert result.code == 0, result.err
    assert "warning: class 'dog' is missing from domain(s) sketch" in result.err
    index = shards.load_index(tmp_path / "w")
    assert index["classes"] == ["big_cat", "dog"]
    got = {s.key: s for s in shards.iter_samples(shards.shard_paths(tmp_path / "w", ["art"]))}
    assert got["art/Big~20Cat/a~2Ejpg"].meta["class_name"] == "big_cat"
    assert got["art/Dog/c~2Ejpg"].cls == 1


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_index_file_gives_the_same_shards_as_the_folder(tmp_path, fmt):
    root = make_plain(tmp_path / "DATA", per_class=3)
    folder = tmp_path / "from_folder"
    run(ShardConfig(shard_size=4, workers=1), data_root=root, work=folder)
    rows = [{"path": p, "domain": p.split("/")[0], "class": p.split("/")[1]}
            for p in sorted(r["source"] for r in read_manifest(folder / "manifest.jsonl"))]
    rows.append({"path": "photo/cat/gone.jpg", "domain": "photo", "class": "cat"})
    rows.append(dict(rows[0]))
    rows.append({"path": "photo/cat/escape.jpg", "domain": "../../escape", "class": "cat"})
    index = root / f"index.{fmt}"
    if fmt == "csv":
        with open(index, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["path", "domain", "class"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        index.write_text("".join(json.dumps(r) + "\n" for r in rows))
    indexed = tmp_path / "from_index"
    summary = run(ShardConfig(shard_size=4, workers=1), data_root=index, work=indexed)
    assert summary["skipped_by_reason"] == {"bad_index_row": 1, "duplicate_row": 1, "missing_file": 1}
    assert {k: v for k, v in tree_bytes(indexed).items() if k.startswith("shards/") and k != "shards/stats.json"} \
        == {k: v for k, v in tree_bytes(folder).items() if k.startswith("shards/") and k != "shards/stats.json"}


def test_bad_index_files_are_user_errors(tmp_path, cli):
    bad_csv = tmp_path / "i.csv"
    bad_csv.write_text("path,domain\na.jpg,x\n")
    assert_user_error(cli(*SHARD, "--data-root", bad_csv, "--out", tmp_path / "w", in_process=True),
                      "lacks column(s) class", str(bad_csv))
    bad_jsonl = tmp_path / "i.jsonl"
    bad_jsonl.write_text('{"path": "a.jpg", "domain": "x", "class": "y"}\n{oops\n')
    assert_user_error(cli(*SHARD, "--data-root", bad_jsonl, "--out", tmp_path / "w", in_process=True),
                      "line 2 is not JSON", str(bad_jsonl))
    other = tmp_path / "list.txt"
    other.write_text("a.jpg\n")
    assert_user_error(cli(*SHARD, "--data-root", other, "--out", tmp_path / "w", in_process=True),
                      "not a .csv or .jsonl")


def test_bad_options_are_user_errors(tmp_path, cli):
    root = make_plain(tmp_path / "DATA", per_class=1)
    args = ("--data-root", root, "--out", tmp_path / "w")
    assert_user_error(cli(*SHARD, *args, "--val-fraction", "1.5", in_process=True), "val_fraction")
    assert_user_error(cli(*SHARD, *args, "--shard-size", "0", in_process=True), "shard_size")


def test_symlinked_domain_is_followed_and_out_inside_root_is_refused(tmp_path, cli):
    elsewhere = make_plain(tmp_path / "elsewhere", domains=("sketch",), per_class=2, seed=7)
    root = make_plain(tmp_path / "DATA", domains=("photo",), per_class=2)
    (root / "sketch").symlink_to(elsewhere / "sketch", target_is_directory=True)
    (root / "sketch" / "cat" / "loop").symlink_to(root, target_is_directory=True)
    summary = run(ShardConfig(workers=1), data_root=root, work=tmp_path / "w")
    assert summary["kept_by_domain"] == {"photo": 4, "sketch": 4}
    assert_user_error(cli(*SHARD, "--data-root", root, "--out", root / "work", in_process=True),
                      "inside the data root")
