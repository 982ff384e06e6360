"""Dataset presets and sweep grids: RISE's published settings, applied to params.yaml by the real CLI."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.presets import DATASETS, GRIDS

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "stages.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_grids_are_rise_grids():
    # RISE's protocol: 6 configs per dataset, T=3, w_dist in {0.5, 1, 2}
    for name in ("pacs", "vlcs", "officehome", "terraincognita"):
        grid = GRIDS[name]
        assert len(grid) == 6 and {g["temperature"] for g in grid} == {3.0}
        assert sorted({g["w_dist"] for g in grid}) == [0.5, 1.0, 2.0]
    assert {(g["w_kd"], g["w_ce"]) for g in GRIDS["officehome"]} == {(0.2, 0.8), (0.1, 0.9)}
    assert {(g["w_kd"], g["w_ce"]) for g in GRIDS["terraincognita"]} == {(0.2, 0.8), (0.3, 0.7)}
    assert {(g["w_kd"], g["w_ce"]) for g in GRIDS["pacs"]} == {(0.9, 0.1), (0.8, 0.2)}


def test_preset_rewrites_params_keeping_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("# my comment\ndata:\n  root: data/world  # demo\n  work: data/work\n"
                      "distill:\n  epochs: 3\n  momentum: 0.9\n")
    data = tmp_path / "PACS"
    data.mkdir()
    r = _cli("preset", "terraincognita", "--data-root", str(data), "--params", str(params))
    assert r.returncode == 0, r.stderr
    text = params.read_text()
    assert "# my comment" in text
    p = yaml.safe_load(text)
    assert p["data"] == {"root": str(data), "work": "data/work"}
    assert p["distill"]["lr"] == 2e-3 and p["distill"]["momentum"] == 0.9 and p["distill"]["epochs"] == 20
    assert p["distill"]["text_ensemble"] is True
    assert p["embed"]["anchors"] == ["bright photo", "corrupted photo", "dark photo", "good photo"]
    assert p["embed"]["model"] == "ViT-B-16" and p["embed"]["pretrained"] == "openai"
    assert p["sweep"]["domains"] == DATASETS["terraincognita"]["domains"] and len(p["sweep"]["grid"]) == 6
    assert p["world"]["enabled"] is False and p["teacher"]["enabled"] is False


def test_preset_errors_are_one_line(tmp_path):
    r = _cli("preset", "pacs", "--data-root", str(tmp_path / "missing"), "--params", str(tmp_path / "p.yaml"))
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    r = _cli("preset", "imagenet", "--data-root", str(tmp_path))
    assert r.returncode == 2 and "pacs" in r.stderr and "Traceback" not in r.stderr


def test_sweep_dry_run_passes_the_grid_to_dvc():
    r = _cli("sweep", "officehome", "--queue", "--dry-run")
    assert r.returncode == 0, r.stderr
    cmd = shlex.split(r.stdout.strip())
    assert cmd[:3] == ["dvc", "exp", "run"] and "--queue" in cmd
    value = cmd[cmd.index("-S") + 1]
    assert value.startswith("sweep.grid=") and json.loads(value.split("=", 1)[1]) == GRIDS["officehome"]
