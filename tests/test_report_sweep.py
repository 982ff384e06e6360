"""`report --sweep-only`: runs left in data/runs by an earlier sweep never compete in the selection."""

import json

import yaml

from pipeline.report.step import sweep_run_names
from tests.test_report import _cli, write_run


def test_sweep_run_names_follow_dvc_matrix_keys():
    names = sweep_run_names({"domains": ["a", "b"], "methods": ["erm"], "seeds": [0, 1], "grid": [{}, {"w_kd": 1}]})
    assert names == {f"{d}-{s}/erm-cfg{i}" for d in "ab" for s in (0, 1) for i in (0, 1)}


def test_stale_runs_are_left_out(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs / "photo-0" / "rise-cfg0", "rise", "photo", 0, 1.0, source_val=0.5, target=0.4)
    # an earlier sweep's config with a better source-val score: it would be selected if it were read
    write_run(runs / "photo-0" / "rise-cfg3", "rise", "photo", 0, 2.0, source_val=0.9, target=0.9)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"sweep": {"domains": ["photo"], "methods": ["rise"], "seeds": [0],
                                                "grid": [{}]}}))
    r = _cli(str(runs), "--out", str(tmp_path / "rep"), "--params", str(params), "--sweep-only")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "rep/metrics.json").read_text())["rise"]["photo"] == 40.0
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"sweep": {"domains": ["sketch"], "methods": ["rise"], "seeds": [0],
                                               "grid": [{}]}}))
    r = _cli(str(runs), "--out", str(tmp_path / "rep3"), "--params", str(other), "--sweep-only")
    assert r.returncode == 2 and "none of the current sweep's runs" in r.stderr and "Traceback" not in r.stderr
    r = _cli(str(runs), "--out", str(tmp_path / "rep2"))
    assert json.loads((tmp_path / "rep2/metrics.json").read_text())["rise"]["photo"] == 90.0
