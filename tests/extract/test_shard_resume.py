"""Atomic, resumable, stable-under-growth and parallel shard writing."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

from shard_fixtures import REPO, jpeg, make_plain, tree_bytes, write

from pipeline import shards
from pipeline.extract.manifest import read_manifest
from pipeline.extract.shard_step import ShardConfig, run

KILLER = textwrap.dedent("""
    import os, signal, sys, tarfile
    from pipeline.extract.shard_step import ShardConfig, run

    kill_after, count = int(sys.argv[3]), [0]
    original = tarfile.TarFile.addfile

    def addfile(self, info, fileobj=None):  # hard kill (no clean-up) in the middle of a shard
        count[0] += 1
        if count[0] > kill_after:
            self.fileobj.fileobj.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, info, fileobj)

    tarfile.TarFile.addfile = addfile
    run(ShardConfig(shard_size=4, workers=1), data_root=sys.argv[1], work=sys.argv[2])
""")


def test_killed_run_leaves_no_partial_shard_and_resumes_to_identical_bytes(tmp_path):
    root = make_plain(tmp_path / "DATA", domains=("a", "b"), per_class=6)
    reference = tmp_path / "reference"
    run(ShardConfig(shard_size=4, workers=1), data_root=root, work=reference)

    work = tmp_path / "work"
    killed = subprocess.run([sys.executable, "-c", KILLER, str(root), str(work), "30"], cwd=REPO,
                            capture_output=True, timeout=120)
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    finals = sorted((work / "shards").glob("*/*.tar"))
    assert finals and len(finals) < len(shards.load_index(reference)["shards"])
    assert list((work / "shards").glob("*/.*.tmp"))  # the shard being written was left under a temp name
    assert not (work / "shards" / "index.json").exists()
    for path in finals:  # whatever sits under a final name is complete
        assert len(list(shards.iter_samples([path]))) >= 1

    summary = run(ShardConfig(shard_size=4, workers=1), data_root=root, work=work)
    assert summary["reused"] == len(finals)
    assert tree_bytes(work) == tree_bytes(reference)


def test_damaged_or_unconfirmed_shard_is_rewritten(tmp_path):
    root = make_plain(tmp_path / "DATA", domains=("a",), per_class=6)
    work = tmp_path / "w"
    run(ShardConfig(shard_size=4, workers=1), data_root=root, work=work)
    before = tree_bytes(work)
    first, second = sorted((work / "shards" / "a").glob("*.tar"))[:2]
    first.write_bytes(first.read_bytes()[:1000])          # truncated after completion
    second.with_suffix(".fp").unlink()                   # completed but never confirmed
    summary = run(ShardConfig(shard_size=4, workers=1), data_root=root, work=work)
    assert summary["reused"] == summary["shards"] - 2
    assert tree_bytes(work) == before


def test_adding_one_image_changes_only_the_shard_that_receives_it(tmp_path):
    root = make_plain(tmp_path / "DATA", domains=("a",), classes=("x", "y"), per_class=30)
    cfg = ShardConfig(shard_size=5, workers=1)
    run(cfg, data_root=root, work=tmp_path / "w1")
    write(root / "a" / "x" / "img_15b.jpg", jpeg(99999))
    run(cfg, data_root=root, work=tmp_path / "w2")

    def shard_hashes(work):
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in shards.shard_paths(work)}

    old, new = shard_hashes(tmp_path / "w1"), shard_hashes(tmp_path / "w2")
    assert len(old) >= 10
    assert len(new - old) <= 2 and len(old - new) <= 2  # the receiving shard (and its split, if it overflowed)
    split1 = {r["key"]: r["split"] for r in read_manifest(tmp_path / "w1" / "manifest.jsonl")}
    split2 = {r["key"]: r["split"] for r in read_manifest(tmp_path / "w2" / "manifest.jsonl")}
    assert all(split2[k] == s for k, s in split1.items())


def test_stale_shards_of_an_earlier_plan_are_removed(tmp_path):
    root = make_plain(tmp_path / "DATA", domains=("a",), per_class=6)
    work = tmp_path / "w"
    run(ShardConfig(shard_size=2, workers=1), data_root=root, work=work)
    run(ShardConfig(shard_size=100, workers=1), data_root=root, work=work)
    fresh = tmp_path / "fresh"
    run(ShardConfig(shard_size=100, workers=1), data_root=root, work=fresh)
    assert tree_bytes(work) == tree_bytes(fresh)


def test_two_dask_workers_write_the_same_bytes_as_one(tmp_path, cli):
    root = make_plain(tmp_path / "DATA", domains=("a", "b"), per_class=5)
    inline = tmp_path / "inline"
    run(ShardConfig(shard_size=3, workers=1), data_root=root, work=inline)
    result = cli("extract", "--steps", "shard", "--data-root", root, "--out", tmp_path / "dask",
                 "--shard-size", "3", "--workers", "2", timeout=120)
    assert result.code == 0, result.err[-2000:]
    assert "kept 20 (a 10, b 10)" in result.err
    assert tree_bytes(tmp_path / "dask") == tree_bytes(inline)


def test_existing_dask_scheduler_is_used(tmp_path):
    from dask.distributed import LocalCluster

    root = make_plain(tmp_path / "DATA", domains=("a",), per_class=3)
    run(ShardConfig(shard_size=2, workers=1), data_root=root, work=tmp_path / "inline")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = run(ShardConfig(shard_size=2), data_root=root, work=tmp_path / "cluster",
                      scheduler=cluster.scheduler_address)
    assert summary["kept"] == 6
    assert tree_bytes(tmp_path / "cluster") == tree_bytes(tmp_path / "inline")
