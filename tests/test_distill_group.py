"""Groups: methods x grid configs trained from one data pass equal the same runs trained alone."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.distill.trainer as trainer_module
from pipeline.distill.config import DistillConfig
from pipeline.distill.group import members, parse_grid, parse_methods, passes
from pipeline.distill.step import run, run_group
from pipeline.distill.trainer import Trainer
from pipeline.errors import UserError
from tests.distill_fixtures import DOMAINS, shared_work

ROOT = Path(__file__).resolve().parents[1]
TARGET = DOMAINS[0]
GRID = [{}, {"w_dist": 2.0, "lr": 0.02}]


@pytest.fixture(scope="module")
def work():
    return shared_work(3)


def _base(**kw) -> DistillConfig:
    base = dict(target_domain=TARGET, student="test_resnet", pretrained=False, epochs=2, image_size=32,
                batch_size=8, workers=0, device="cpu")
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def group(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("group")
    return out, run_group(_base(), ["erm", "rise"], GRID, work, out)


def test_every_member_equals_its_run_alone(work, group, tmp_path):
    out, results = group
    assert sorted(results) == ["erm-cfg0", "erm-cfg1", "rise-cfg0", "rise-cfg1"]
    for name, metrics in results.items():
        method, cfg = name.split("-cfg")
        alone = run(DistillConfig(**{**_base().__dict__, **GRID[int(cfg)], "method": method}), work,
                    tmp_path / name)
        assert json.loads(json.dumps(metrics)) == json.loads(json.dumps(alone)), name
        folder = out / name
        assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
        assert (folder / "epochs.csv").read_text() == (tmp_path / name / "epochs.csv").read_text()
        assert {p.name for p in (folder / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
    assert results["rise-cfg1"]["config"]["w_dist"] == 2.0 and results["erm-cfg0"]["method"] == "erm"


def test_a_killed_group_resumes_each_member_and_skips_complete_ones(work, group, tmp_path, monkeypatch):
    full_out, full = group
    out = tmp_path / "g"
    # Two members finish first (a group run of only them), then the whole group is killed in epoch 2.
    run_group(_base(), ["erm"], GRID, work, out)
    real = Trainer.begin_epoch

    def killed_in_epoch_2(self):
        if len(self.history) == 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "begin_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        run_group(_base(), ["erm", "rise"], GRID, work, out)
    monkeypatch.setattr(Trainer, "begin_epoch", real)
    assert not (out / "rise-cfg0" / "metrics.json").exists()
    stamps = {n: os.stat(out / n / "metrics.json").st_mtime_ns for n in ("erm-cfg0", "erm-cfg1")}

    built = []
    monkeypatch.setattr(trainer_module, "Trainer", lambda cfg, *a: built.append(cfg.method) or Trainer(cfg, *a))
    resumed = run_group(_base(), ["erm", "rise"], GRID, work, out)
    assert built == ["rise", "rise"]  # the complete members were not even built
    assert {n: os.stat(out / n / "metrics.json").st_mtime_ns for n in stamps} == stamps
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(full))

    # One member's config changes: under --restart-stale it alone retrains, from scratch.
    built.clear()
    changed = [GRID[0], {**GRID[1], "lr": 0.05}]
    after = run_group(_base(), ["erm", "rise"], changed, work, out, restart_stale=True)
    assert built == ["erm", "rise"]
    assert after["erm-cfg0"] == resumed["erm-cfg0"] and after["rise-cfg1"]["config"]["lr"] == 0.05


def test_members_that_cannot_share_batches_get_their_own_pass(work, tmp_path, monkeypatch):
    grid = [{"image_size": 32}, {"image_size": 48}, {"image_size": 32, "lr": 0.02}]
    group = members(_base(epochs=1), ["kd"], grid)
    assert [[m.name for m in p] for p in passes(group)] == [["kd-cfg0", "kd-cfg2"], ["kd-cfg1"]]
    assert [[m.name for m in p] for p in passes(group, max_members=1)] == [["kd-cfg0"], ["kd-cfg2"], ["kd-cfg1"]]
    datas = []
    real = trainer_module.RunData
    monkeypatch.setattr(trainer_module, "RunData", lambda *a, **k: datas.append(a[4]) or real(*a, **k))
    results = run_group(_base(epochs=1), ["kd"], grid, work, tmp_path / "g")
    assert sorted(datas) == [32, 48]  # two data passes, one per image size
    assert {n: m["config"]["image_size"] for n, m in results.items()} == {"kd-cfg0": 32, "kd-cfg1": 48, "kd-cfg2": 32}


def test_max_members_splits_a_pass_without_changing_results(work, group, tmp_path):
    _, full = group
    split = run_group(_base(), ["erm", "rise"], GRID, work, tmp_path / "g", max_members=3)
    assert json.loads(json.dumps(split)) == json.loads(json.dumps(full))


def test_group_inputs_are_checked_before_training():
    assert parse_methods("erm, kd,erm") == ["erm", "kd"]
    assert parse_grid('[{"w_dist": 0.5}, {}]') == [{"w_dist": 0.5}, {}]
    for bad, needle in [('[{"w_dst": 1}]', "unknown key(s) w_dst"), ('[{"w_kd": -1}]', "w_kd must be"),
                        ('[{"w_ce": NaN}]', "w_ce must be"), ('[{"method": "kd"}]', "set by the group"),
                        ('{"w_kd": 1}', "non-empty list"), ("[{", "neither a file nor JSON"),
                        ('[{"lr": 0}]', "lr must be")]:
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_grid(bad)
    with pytest.raises(UserError, match="unknown method 'mixup'"):
        parse_methods("erm,mixup")
    assert math.isnan(float("nan"))


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "stages.cli", "distill", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("extra,needle", [
    (["--method", "erm,mixup"], "unknown method 'mixup'"),
    (["--method", "erm,kd", "--grid", '[{"w_dist": -2}]'], "grid entry 0: w_dist must be a finite number >= 0"),
    (["--method", "erm,kd", "--grid", '[{"temprature": 2}]'], "grid entry 0: unknown key(s) temprature"),
    (["--grid", "no/such/file.json"], "--grid: neither a file nor JSON"),
])
def test_cli_group_errors_are_one_line_and_train_nothing(work, tmp_path, extra, needle):
    out = tmp_path / "g"
    r = _cli("--work", str(work), "--out", str(out), "--target-domain", TARGET, "--student", "test_resnet",
             "--no-pretrained", *extra)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert not out.exists()


def test_cli_sweep_group_from_params(work, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"distill": {"student": "test_resnet", "pretrained": False, "epochs": 1,
                                              "image_size": 32, "batch_size": 8, "workers": 0},
                                  "sweep": {"methods": ["erm", "kd"], "grid": [{}, {"w_kd": 0.5}]}}))
    out = tmp_path / "g"
    r = _cli("--params", str(params), "--work", str(work), "--out", str(out), "--target-domain", TARGET,
             "--sweep", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["erm-cfg0", "erm-cfg1", "kd-cfg0", "kd-cfg1"]
    assert json.loads((out / "kd-cfg1" / "metrics.json").read_text())["config"]["w_kd"] == 0.5
    assert "one data pass trained 4 students" in r.stderr
    assert "kd-cfg1" in r.stdout  # the summary table
