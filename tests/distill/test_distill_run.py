"""Distill runs end to end on a tiny real work folder: outputs schema, selection, resume, bad input, and
checkpoints that are only ever read with torch's safe loader."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import h5py
import pytest
import torch
from conftest import killed_in_epoch_2

from pipeline.distill.checkpoints import BEST_KEYS, FORMAT, LAST_KEYS, read_checkpoint
from pipeline.distill.step import run
from pipeline.distill.trainer import EPOCH_COLUMNS
from pipeline.errors import UserError
from pipeline.store import verify_store
from tests.devices import DEVICES
from tests.distill_fixtures import DOMAINS
from tests.distill_fixtures import distill_config as _cfg

TARGET = DOMAINS[0]
METRIC_KEYS = {"status", "method", "target_domain", "seed", "student", "weights", "temperature", "lr", "epochs",
               "selected_epoch", "source_val_acc", "target_acc", "per_domain_acc", "teacher_target_acc",
               "text_ensemble", "config", "store", "anchors_used"}


@pytest.fixture(scope="module")
def work(distill_work):
    return distill_work(3)


@pytest.fixture(scope="module")
def three_epochs(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    return out, run(_cfg(epochs=3), work, out)


def _cli_args(work, out, epochs: int, device: str, workers: int = 0) -> list[str]:
    """The command line of `_cfg(epochs=epochs, device=device, workers=workers)` (no --params: defaults +
    these flags)."""
    return ["--work", str(work), "--out", str(out), "--target-domain", TARGET, "--student", "test_resnet",
            "--no-pretrained", "--epochs", str(epochs), "--image-size", "32", "--batch-size", "8", "--workers",
            str(workers), "--device", device]


# Run before the real CLI in its own process: SIGKILL (no cleanup, no handler) as epoch 2 begins, so last.pt
# holds epoch 1, saved by the run itself. The kill is the only thing this prelude adds.
KILLED_IN_EPOCH_2 = """
import os, signal
from pipeline.distill.trainer import Trainer
real = Trainer.begin_epoch
def begin_epoch(self):
    if len(self.history) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self)
Trainer.begin_epoch = begin_epoch
"""


def test_outputs_and_metrics_schema(work, three_epochs):
    out, metrics = three_epochs
    assert METRIC_KEYS <= set(metrics)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert json.loads((out / "config.json").read_text()) == metrics["config"]
    assert metrics["status"] == "complete" and metrics["target_domain"] == TARGET
    assert metrics["weights"] == {"w_kd": 0.8, "w_ce": 0.2, "w_dist": 1.0}
    rows = list(csv.DictReader((out / "epochs.csv").open()))
    assert tuple(rows[0]) == EPOCH_COLUMNS and [int(r["epoch"]) for r in rows] == [1, 2, 3]
    # lr decays once at int(0.8 * 3) = 2 epochs
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-4])
    # selection: best source-val accuracy, earliest on ties; the reported target accuracy is that epoch's
    vals = [float(r["source_val_acc"]) for r in rows]
    best = vals.index(max(vals))
    assert metrics["selected_epoch"] == best + 1
    assert metrics["target_acc"] == pytest.approx(float(rows[best]["target_acc"]), abs=1e-6)
    assert metrics["per_domain_acc"][TARGET] == metrics["target_acc"]
    for acc in metrics["per_domain_acc"].values():
        assert 0.0 <= acc <= 1.0
    # teacher zero-shot accuracy on the target, recomputed from the HDF5 file with h5py alone
    with h5py.File(work / "embeddings.h5", "r") as f:
        names = [s.decode() if isinstance(s, bytes) else s for s in f["domains/names"][()]]
        mask = f["images/domain"][()] == names.index(TARGET)
        pred = (f["images/clean"][()][mask] @ f["text/class"][()].T).argmax(1)
        assert metrics["teacher_target_acc"] == pytest.approx(float((pred == f["images/label"][()][mask]).mean()))
        shard_sha = f.attrs["shard_set_sha256"]
    # both checkpoints load with torch's safe loader (tensors and plain data only) and carry the marker
    for name, keys in (("last.pt", LAST_KEYS), ("best.pt", BEST_KEYS)):
        ck = torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)
        assert ck["format"] == FORMAT and ck["store_id"] == metrics["store_id"]
        assert ck["config"] == metrics["config"] and ck["store"]["shard_set_sha256"] == shard_sha
        assert set(read_checkpoint(out / "checkpoints" / name, keys)) == set(keys)
    best_ck = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert best_ck["epoch"] == metrics["selected_epoch"]
    assert best_ck["metrics"]["target_acc"] == metrics["target_acc"]


@pytest.mark.slow
@pytest.mark.cuda
@pytest.mark.parametrize("device", DEVICES)
def test_resume_after_kill_equals_uninterrupted(work, request, tmp_path, monkeypatch, device):
    if device == "cpu":
        full_out, full = request.getfixturevalue("three_epochs")
    else:
        full_out = tmp_path / "full"
        full = run(_cfg(epochs=3, device=device), work, full_out)
    out = tmp_path / "run"
    with killed_in_epoch_2():
        run(_cfg(epochs=3, device=device), work, out)
    assert not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epochs_done"] == 1
    resumed = run(_cfg(epochs=3, device=device), work, out)
    assert resumed == full
    assert (out / "epochs.csv").read_text() == (full_out / "epochs.csv").read_text()
    a = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["units"][0]["model"]
    b = torch.load(full_out / "checkpoints" / "last.pt", weights_only=True)["units"][0]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a finished run is not retrained; a different config in the same folder is refused
    assert run(_cfg(epochs=3, device=device), work, out) == full
    with pytest.raises(UserError, match=r"different config \(lr\)"):
        run(_cfg(epochs=3, lr=0.01, device=device), work, out)


@pytest.mark.slow
def test_device_and_workers_are_not_part_of_the_run(work, three_epochs, tmp_path, cli):
    """--device and --workers change how a run trains, never its result: a run killed under one value resumes
    under another (the batches are the plan's whatever the loader workers), and a finished run is up to
    date under either (the same rule for both)."""
    _, full = three_epochs
    out = tmp_path / "run"
    killed = cli("distill", *_cli_args(work, out, 3, "cpu"), prelude=KILLED_IN_EPOCH_2)
    assert killed.code == -9, killed.err
    assert not (out / "metrics.json").exists()
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["epochs_done"] == 1

    r = cli("distill", *_cli_args(work, out, 3, "auto", workers=4))  # "auto" is the CPU here as well
    assert r.code == 0, r.err
    assert f"resuming {out} after epoch 1" in r.err
    resumed = json.loads((out / "metrics.json").read_text())
    assert resumed["config"]["device"] == "auto" and resumed["config"]["workers"] == 4
    # exactly the uninterrupted run's metrics (which trained with --device cpu --workers 0 throughout)
    assert {**resumed, "config": {**resumed["config"], "device": "cpu", "workers": 0}} == json.loads(json.dumps(full))
    best = torch.load(out / "checkpoints" / "best.pt", map_location="cpu", weights_only=True)
    assert best["epoch"] == full["selected_epoch"]

    before = {name: ((out / name).read_bytes(), os.stat(out / name).st_mtime_ns)
              for name in ("metrics.json", "epochs.csv", "checkpoints/last.pt")}
    r = cli("distill", *_cli_args(work, out, 3, "cpu"))
    assert r.code == 0, r.err
    assert f"{out}: up to date" in r.err and "epoch 1/3" not in r.err
    assert {name: ((out / name).read_bytes(), os.stat(out / name).st_mtime_ns) for name in before} == before


def test_held_out_domain_is_never_an_anchor(work, three_epochs, tmp_path):
    """RD's anchors are the source domains' (and any that name no domain), never the held-out one's."""
    _, metrics = three_epochs
    store = verify_store(work)
    tags = dict(zip(store.anchors, store.anchor_domains.tolist(), strict=True))
    assert sorted(metrics["anchors_used"]) == sorted(a for a, d in tags.items() if store.domain_names[d] != TARGET)
    assert TARGET not in metrics["anchors_used"] and len(metrics["anchors_used"]) == len(store.domain_names) - 1
    for name in store.domain_names:
        if name != TARGET:
            other = run(_cfg(epochs=1, target_domain=name), work, tmp_path / "r")
            assert name not in other["anchors_used"] and TARGET in other["anchors_used"]
            break


def test_restart_stale_discards_checkpoints_of_another_config(work, tmp_path, caplog):
    out = tmp_path / "run"
    run(_cfg(epochs=1), work, out)
    old = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    (out / "checkpoints" / "notes.pt").write_bytes(b"not ours")  # a file this tool did not write stays
    caplog.clear()
    m = run(_cfg(epochs=1, lr=0.01), work, out, restart_stale=True)
    assert "checkpoints from another config or store removed; training from scratch" in caplog.text
    new = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert m["config"]["lr"] == new["config"]["lr"] == 0.01 and new["epochs_done"] == 1
    old, new = old["units"][0]["model"], new["units"][0]["model"]
    assert not all(torch.equal(old[k], new[k]) for k in old)
    assert (out / "checkpoints" / "notes.pt").read_bytes() == b"not ours"


def test_methods_and_text_ensemble_run(work, tmp_path):
    erm = run(_cfg(method="erm", epochs=1, text_ensemble=True), work, tmp_path / "erm")
    assert erm["weights"] == {"w_kd": 0.0, "w_ce": 1.0, "w_dist": 0.0} and erm["text_ensemble"] is True
    rel = run(_cfg(method="rise-rel", epochs=1, w_dist=2.0), work, tmp_path / "rel")
    assert rel["loss_weights"] == {"ce": 0.2, "kd": 0.8, "ad": 0.0, "rd": 2.0}


def test_nan_loss_stops_with_the_step(work, tmp_path):
    with pytest.raises(UserError, match=r"loss is (nan|inf|-inf) at epoch 1, step \d+ \(ce="):
        run(_cfg(lr=1e30, epochs=1), work, tmp_path / "nan")


@pytest.mark.slow
def test_cli_two_epoch_run(work, tmp_path, cli):
    params = tmp_path / "params.yaml"
    params.write_text("distill:\n  student: test_resnet\n  pretrained: false\n  image_size: 32\n  batch_size: 8\n"
                      "  workers: 2\n  epochs: 5\n")
    out = tmp_path / "cli_run"
    r = cli("distill", "--work", work, "--target-domain", "sketch", "--out", out, "--params", params,
            "--epochs", "2", "--method", "kd", "--seed", "3")
    assert r.code == 0, r.err
    m = json.loads((out / "metrics.json").read_text())
    assert (m["epochs"], m["method"], m["seed"], m["target_domain"]) == (2, "kd", 3, "sketch")
    assert m["config"]["workers"] == 2 and m["config"]["student"] == "test_resnet"
    assert len((out / "epochs.csv").read_text().splitlines()) == 3


def _assert_user_error(r, *needles: str) -> None:
    assert r.code == 2, r.err
    lines = [ln for ln in r.err.splitlines() if ln.strip() and not ln.startswith("[rise-pipeline")]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.err
    assert "Traceback" not in r.err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("args, needles", [
    (["--target-domain", "clipart"], ["unknown target domain 'clipart'", "cartoon, photo, sketch"]),
    (["--target-domain", TARGET, "--method", "mixup"], ["--method: unknown method 'mixup'", "valid: rise, erm, kd, rise-abs, rise-rel"]),
    (["--target-domain", TARGET, "--student", "resnet181"], ["unknown student 'resnet181'", "resnet18"]),
    (["--target-domain", TARGET, "--w-kd", "nan"], ["w_kd must be a finite number >= 0"]),
    (["--target-domain", TARGET, "--w-dist", "-1"], ["w_dist must be a finite number >= 0"]),
])
def test_cli_bad_input(work, tmp_path, cli, args, needles):
    r = cli("distill", "--work", work, "--out", tmp_path / "bad", "--no-pretrained", *args, in_process=True)
    _assert_user_error(r, *needles)
    assert not (tmp_path / "bad" / "metrics.json").exists()


def test_store_from_other_shards_or_incomplete_is_refused(work, tmp_path, cli):
    other = tmp_path / "other"
    shutil.copytree(work, other)
    index = json.loads((other / "shards" / "index.json").read_text())
    index["shards"][0]["sha256"] = "0" * 64  # the shards changed since the store was built
    (other / "shards" / "index.json").write_text(json.dumps(index))
    r = cli("distill", "--work", other, "--target-domain", TARGET, "--out", tmp_path / "r1", in_process=True)
    _assert_user_error(r, "different shard set")
    broken = tmp_path / "broken"
    shutil.copytree(work, broken)
    with h5py.File(broken / "embeddings.h5", "a") as f:
        del f["text/anchor"]
    r = cli("distill", "--work", broken, "--target-domain", TARGET, "--out", tmp_path / "r2", in_process=True)
    _assert_user_error(r, "missing", "text/anchor")


def _copy_with_damaged_sample(work: Path, dest: Path, domain: str, damage) -> str:
    """A copy of `work` whose first sample of `domain` is damaged in its shard by `damage(fd, location)`;
    returns that sample's key."""
    from pipeline.shards import sample_locations

    shutil.copytree(work, dest)
    loc = min((loc for loc in sample_locations(dest).values() if f"/{domain}/" in loc.path.as_posix()),
              key=lambda loc: (loc.path, loc.offset))
    fd = os.open(loc.path, os.O_RDWR)
    try:
        damage(fd, loc)
    finally:
        os.close(fd)
    return loc.key


def test_undecodable_sample_is_logged_and_left_out(work, tmp_path, caplog):
    """A sample whose bytes no longer decode (the shard still matches its index) is skipped wherever it is
    read, each time with a warning naming it, and the run completes; its batch goes on without it."""
    from pipeline.distill.loader import collate_present

    garbage = tmp_path / "garbage"
    key = _copy_with_damaged_sample(work, garbage, DOMAINS[1],
                                    lambda fd, loc: os.pwrite(fd, b"\0" * loc.size, loc.offset))
    caplog.clear()
    m = run(_cfg(epochs=2), garbage, tmp_path / "run")
    assert m["status"] == "complete"
    skipped = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "skipping sample" in r.getMessage()]
    assert skipped and all(msg.startswith(f"skipping sample {key}: undecodable") for msg in skipped), skipped
    # once per epoch at least (training or source validation reads every source sample each epoch)
    assert len(skipped) >= 2
    item = {"x": torch.ones(2)}
    assert collate_present([None, item, None, item])["x"].shape == (2, 2)
    assert collate_present([None, None]) is None


def test_a_loader_workers_user_error_is_one_line(work, tmp_path, cli):
    """A shard that no longer matches its index, found inside a DataLoader worker process (--workers 1):
    the worker's traceback that torch wraps into the message is cut back to the error's own line."""
    def rename(fd, loc):
        os.pwrite(fd, b"X", loc.offset - 512)  # the tar header's member name: no longer this sample's

    damaged = tmp_path / "damaged"
    key = _copy_with_damaged_sample(work, damaged, DOMAINS[1], rename)
    r = cli("distill", *_cli_args(damaged, tmp_path / "run", 1, "cpu", workers=1), in_process=True)
    _assert_user_error(r, f"does not match its index at sample {key}", "rerun `rise-pipeline extract --steps shard`")
    assert "Original Traceback" not in r.err and "DataLoader worker" not in r.err


class _RunsCodeWhenUnpickled:
    """Unpickling this opens (so creates) `path`: any callable could stand there, os.system included."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return open, (str(self.path), "w")


def _code_running(path: Path, marker: Path) -> None:
    # Everything a real last.pt holds, plus one object that runs code when loaded.
    torch.save({"format": FORMAT, "model": {}, "payload": _RunsCodeWhenUnpickled(marker)}, path)


def _foreign_file(kind: str, path: Path, tmp_path: Path, work: Path) -> None:
    if kind in ("runs-code", "runs-code-restart-stale"):
        _code_running(path, tmp_path / "pwned")
    elif kind == "random-bytes":
        path.write_bytes(os.urandom(4096))
    elif kind == "no-marker":  # a plain torch file of someone else's (or of an older version of this tool)
        torch.save({"model": {"w": torch.zeros(2)}, "epochs_done": 1}, path)
    elif kind == "truncated":  # a real last.pt cut short
        out = tmp_path / "donor"
        run(_cfg(epochs=1), work, out)
        data = (out / "checkpoints" / "last.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("kind", ["runs-code", "runs-code-restart-stale", "random-bytes", "no-marker", "truncated"])
def test_foreign_checkpoint_is_refused_and_never_run(work, tmp_path, cli, kind):
    out = tmp_path / "shared_runs" / "run"
    last = out / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    _foreign_file(kind, last, tmp_path, work)
    content = last.read_bytes()
    extra = ["--restart-stale"] if kind.endswith("restart-stale") else []
    r = cli("distill", *_cli_args(work, out, 2, "cpu"), *extra, in_process=True)
    _assert_user_error(r, str(last), "not a checkpoint written by rise-pipeline", "delete it")
    assert not (tmp_path / "pwned").exists()  # the code in the file never ran
    assert last.read_bytes() == content  # refused, not deleted (not even under --restart-stale)
    assert not (out / "metrics.json").exists() and not (out / "checkpoints" / "best.pt").exists()


def test_code_running_fixture_is_a_real_attack(tmp_path):
    """The file above does run code under the unsafe loader, so the test above can fail."""
    marker = tmp_path / "pwned"
    _code_running(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()
