"""Groups: methods x grid configs trained from one data pass equal the same runs trained alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO as ROOT
from conftest import killed_in_epoch_2

import pipeline.distill.trainer as trainer_module
from pipeline.distill.group import member_name, members, parse_grid, parse_methods, passes
from pipeline.distill.step import run, run_group
from pipeline.distill.trainer import Trainer
from pipeline.errors import UserError
from tests.devices import DEVICES
from tests.distill_fixtures import DOMAINS, shared_work
from tests.distill_fixtures import distill_config as _base

TARGET = DOMAINS[0]
GRID = [{}, {"w_dist": 2.0, "lr": 0.02}]


@pytest.fixture(scope="module")
def work():
    return shared_work(3)


@pytest.fixture(scope="module")
def group(work, tmp_path_factory):
    out = tmp_path_factory.mktemp("group")
    return out, run_group(_base(), ["erm", "rise"], GRID, work, out)


def _name(method: str, entry: dict) -> str:
    return member_name(_base(**{**entry, "method": method}))


@pytest.mark.cuda
@pytest.mark.parametrize("device", DEVICES)
def test_every_member_equals_its_run_alone(work, request, tmp_path, device):
    if device == "cpu":
        out, results = request.getfixturevalue("group")
    else:
        out = tmp_path / "group"
        results = run_group(_base(device=device), ["erm", "rise"], GRID, work, out)
    # ERM ignores w_dist but not lr: both grid entries are distinct ERM students, as they are for RISE
    names = {_name(m, e): (m, e) for m in ("erm", "rise") for e in GRID}
    assert sorted(results) == sorted(names) and len(names) == 4
    for name, metrics in results.items():
        method, entry = names[name]
        alone = run(_base(**{**entry, "method": method, "device": device}), work, tmp_path / name)
        assert json.loads(json.dumps(metrics)) == json.loads(json.dumps(alone)), name
        folder = out / name
        assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
        assert (folder / "epochs.csv").read_text() == (tmp_path / name / "epochs.csv").read_text()
        assert {p.name for p in (folder / "checkpoints").iterdir()} == {"best.pt", "last.pt"}
    assert results[_name("rise", GRID[1])]["config"]["w_dist"] == 2.0
    erm = results[_name("erm", GRID[1])]
    # config.json and metrics.json state the weights ERM trained with (plain CE), not the grid's
    assert erm["method"] == "erm" and (erm["config"]["w_ce"], erm["config"]["w_kd"], erm["config"]["w_dist"]) \
        == (1.0, 0.0, 0.0) == (erm["weights"]["w_ce"], erm["weights"]["w_kd"], erm["weights"]["w_dist"])
    saved = json.loads((out / _name("erm", GRID[1]) / "config.json").read_text())
    assert (saved["w_ce"], saved["w_kd"], saved["w_dist"]) == (1.0, 0.0, 0.0)


def test_equal_effective_configs_are_one_student_named_by_content():
    from pipeline.presets import GRIDS

    grid = GRIDS["pacs"]  # (w_kd, w_ce) in {(0.9, 0.1), (0.8, 0.2)} x w_dist in {0.5, 1, 2}
    group = members(_base(), ["erm", "kd", "rise"], grid)
    # by hand: ERM ignores every weight (1 student), KD ignores w_dist (2), RISE uses all three (6)
    by_method = {m: [g for g in group if g.method == m] for m in ("erm", "kd", "rise")}
    assert [len(by_method[m]) for m in ("erm", "kd", "rise")] == [1, 2, 6] and len(group) == 9
    assert by_method["erm"][0].entries == (0, 1, 2, 3, 4, 5)
    assert sorted(m.entries for m in by_method["kd"]) == [(0, 1, 2), (3, 4, 5)]
    assert {(m.cfg.w_kd, m.cfg.w_ce, m.cfg.w_dist) for m in by_method["kd"]} == {(0.9, 0.1, 0.0), (0.8, 0.2, 0.0)}
    names = {m.name for m in group}
    assert len(names) == 9 and all(n.split("-")[0] in ("erm", "kd", "rise") for n in names)
    # the position of an entry never names a member: reversed, or with an entry inserted, the same students
    # keep their folders
    assert {m.name for m in members(_base(), ["erm", "kd", "rise"], grid[::-1])} == names
    grown = members(_base(), ["rise", "kd", "erm"], [{"w_dist": 4.0}, *grid[:3], {"lr": 0.02}, *grid[3:]])
    # w_dist 4 adds one RISE student (KD and ERM ignore it: equal to students above); lr 0.02 one per method
    assert names < {m.name for m in grown} and len(grown) == 9 + 1 + 3
    # a name is filesystem-safe
    assert all(re.fullmatch(r"[a-z-]+-[0-9a-f]{8}", n) for n in names)


def test_a_killed_group_resumes_each_member_and_skips_complete_ones(work, group, tmp_path, monkeypatch):
    full_out, full = group
    out = tmp_path / "g"
    # Two members finish first (a group run of only them), then the whole group is killed in epoch 2.
    run_group(_base(), ["erm"], GRID, work, out)
    with killed_in_epoch_2():
        run_group(_base(), ["erm", "rise"], GRID, work, out)
    assert not (out / _name("rise", GRID[0]) / "metrics.json").exists()
    stamps = {n: os.stat(out / n / "metrics.json").st_mtime_ns for n in (_name("erm", e) for e in GRID)}

    built = []
    monkeypatch.setattr(trainer_module, "Trainer", lambda cfg, *a: built.append(cfg.method) or Trainer(cfg, *a))
    resumed = run_group(_base(), ["erm", "rise"], GRID, work, out)
    assert built == ["rise", "rise"]  # the complete members were not even built
    assert {n: os.stat(out / n / "metrics.json").st_mtime_ns for n in stamps} == stamps
    assert json.loads(json.dumps(resumed)) == json.loads(json.dumps(full))

    # One grid entry changes: it is another student (another folder), trained alone from scratch; the others
    # and the old folder are left as they were.
    built.clear()
    changed = [GRID[0], {**GRID[1], "lr": 0.05}]
    after = run_group(_base(), ["erm", "rise"], changed, work, out, restart_stale=True)
    assert built == ["erm", "rise"]
    assert after[_name("erm", GRID[0])] == resumed[_name("erm", GRID[0])]
    assert after[_name("rise", changed[1])]["config"]["lr"] == 0.05
    assert {n: os.stat(out / n / "metrics.json").st_mtime_ns for n in stamps} == stamps


def test_members_that_cannot_share_batches_get_their_own_pass(work, tmp_path, monkeypatch):
    grid = [{"image_size": 32}, {"image_size": 48}, {"image_size": 32, "lr": 0.02}]
    group = members(_base(epochs=1), ["kd"], grid)
    kd = [member_name(_base(**{**e, "epochs": 1, "method": "kd"})) for e in grid]
    assert [[m.name for m in p] for p in passes(group)] == [[kd[0], kd[2]], [kd[1]]]
    assert [[m.name for m in p] for p in passes(group, max_members=1)] == [[kd[0]], [kd[2]], [kd[1]]]
    datas = []
    real = trainer_module.RunData
    monkeypatch.setattr(trainer_module, "RunData", lambda *a, **k: datas.append(a[4]) or real(*a, **k))
    results = run_group(_base(epochs=1), ["kd"], grid, work, tmp_path / "g")
    assert sorted(datas) == [32, 48]  # two data passes, one per image size
    assert {n: m["config"]["image_size"] for n, m in results.items()} == {kd[0]: 32, kd[1]: 48, kd[2]: 32}


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
                        ('[{"w_dist": Infinity}]', "w_dist must be a finite number"),
                        ('[{"lr": 0}]', "lr must be")]:
        with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            parse_grid(bad)
    with pytest.raises(UserError, match="unknown method 'mixup'"):
        parse_methods("erm,mixup")


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
    # ERM ignores w_kd: its two grid entries are one student; KD's are two
    kd = member_name(_base(epochs=1, method="kd", w_kd=0.5))
    expected = [member_name(_base(epochs=1, method="erm")), member_name(_base(epochs=1, method="kd")), kd]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert json.loads((out / kd / "metrics.json").read_text())["config"]["w_kd"] == 0.5
    assert "one data pass trained 3 students" in r.stderr
    assert kd in r.stdout  # the summary table
