"""`report --sweep-only`: only the sweep plan's runs are averaged, and only when their metrics.json records the
plan's config -- runs of an earlier sweep, old folders named by grid position and a killed retrain's
predecessor never compete in the selection."""

import json

import yaml
from test_report import _cli, write_run

from pipeline.config import to_dict
from pipeline.plan import plan_sweep


def _params(tmp_path, **sweep):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"work": "nowork"},
        "distill": {"student": "test_resnet", "pretrained": False, "epochs": 3},
        "sweep": {"domains": ["photo"], "methods": ["rise"], "seeds": [0], "grid": [{}], **sweep}}))
    return path


def _planned_run(tmp_path, params, source_val, target, **changes):
    """A complete run in the plan's folder for (photo, 0, rise) recording the plan's config (+ `changes`)."""
    [member] = plan_sweep(params).group("photo", 0).members
    folder = write_run(tmp_path / "runs" / "photo-0" / member.name, "rise", "photo", 0, member.cfg.w_dist,
                       source_val=source_val, target=target)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["config"] = {**to_dict(member.cfg), **changes}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_only_the_plans_runs_with_the_plans_config_are_averaged(tmp_path):
    params = _params(tmp_path)
    _planned_run(tmp_path, params, source_val=0.5, target=0.4)
    runs = tmp_path / "runs"
    # an earlier sweep's config and an old position-named folder with better source-val scores: they would
    # be selected if they were read
    write_run(runs / "photo-0" / "rise-0badc0de", "rise", "photo", 0, 2.0, source_val=0.9, target=0.9)
    write_run(runs / "photo-0" / "rise-cfg3", "rise", "photo", 0, 2.0, source_val=0.95, target=0.95)
    r = _cli(str(runs), "--out", str(tmp_path / "rep"), "--params", str(params), "--sweep-only")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "rep/metrics.json").read_text())["rise"]["photo"] == 40.0
    other = tmp_path / "o"
    other.mkdir()
    r = _cli(str(runs), "--out", str(tmp_path / "rep3"), "--params", str(_params(other, domains=["sketch"])),
             "--sweep-only")
    assert r.returncode == 2 and "none of the current sweep's runs" in r.stderr and "Traceback" not in r.stderr
    r = _cli(str(runs), "--out", str(tmp_path / "rep2"))  # without the plan every run competes
    assert json.loads((tmp_path / "rep2/metrics.json").read_text())["rise"]["photo"] == 95.0


def test_a_killed_retrain_never_leaks_its_predecessors_result(tmp_path):
    """--restart-stale retrains a member whose weights changed (another checkpoint digest) in its folder; killed
    before the end it leaves the previous weights' complete metrics.json, which the plan's config refuses."""
    params = _params(tmp_path, domains=["photo", "sketch"])
    folder = _planned_run(tmp_path, params, source_val=0.5, target=0.4, checkpoint_sha256="0" * 64)
    [member] = plan_sweep(params).group("sketch", 0).members
    write_run(tmp_path / "runs" / "sketch-0" / member.name, "rise", "sketch", 0, 1.0, source_val=0.5, target=0.6)
    metrics = json.loads((tmp_path / "runs/sketch-0" / member.name / "metrics.json").read_text())
    metrics["config"] = to_dict(member.cfg)
    (tmp_path / "runs/sketch-0" / member.name / "metrics.json").write_text(json.dumps(metrics))
    r = _cli("--params", str(params), "--sweep-only", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "rep/metrics.json").read_text())
    assert "photo" not in result["rise"] and result["rise"]["sketch"] == 60.0
    md = (tmp_path / "rep/results.md").read_text()
    assert f"runs/photo-0/{folder.name}`: incomplete: metrics.json records another config than the sweep " \
           "plan's (checkpoint_sha256)" in md
