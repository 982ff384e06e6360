"""A reduced run of the embedded default: the real `dvc repro` of the project's dvc.yaml with
the default params.yaml scaled down (fewer images, one teacher epoch, one student-pretraining epoch, one
distill epoch, one held-out domain, one seed): world -> teacher -> student-pretrain -> shard -> embed ->
distill (erm, kd, rise) -> report."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.io import sha256_file
from tests.dvc_fixtures import ROOT, make_repo, repro


def reduced_default() -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert p["world"]["enabled"] and p["teacher"]["enabled"]  # the default is the demo world + demo teacher
    assert p["embed"]["pretrained"] == "data/teacher/teacher.pt"
    p["world"].update(per_cell=4, image_size=32, classes=["car", "fish", "house"])
    p["teacher"].update(per_cell=6, eval_per_cell=2, epochs=1, batch_size=32)
    p["student"].update(per_class=4, eval_per_class=1, classes=["key", "moon"], epochs=1, batch_size=8)
    p["embed"].update(views=1, workers=0)
    p["distill"].update(epochs=1)
    p["sweep"].update(domains=["sketch"], seeds=[0])
    return p


@pytest.mark.slow
def test_reduced_default_pipeline_end_to_end(tmp_path):
    repo = make_repo(tmp_path / "repo", reduced_default())
    ran, out = repro(repo)
    assert ran == {"world", "teacher", "student-pretrain", "shard", "embed", "distill", "report"}
    assert "distill: 1 group(s), 3 student(s), 1 at a time" in out  # erm, kd and rise from one data pass
    # every stage reports its wall time
    for cmd in ("world", "pretrain-teacher", "pretrain-student", "extract", "distill", "report"):
        assert f"[rise-pipeline {cmd}] done in" in out
    # the students start from the student-pretrain stage's backbone, loaded as local timm weights
    p = yaml.safe_load((repo / "params.yaml").read_text())
    assert p["distill"]["pretrained"] is True and p["distill"]["checkpoint"] == "data/student/backbone.pth"
    [rise] = [p for p in (repo / "data/runs/sketch-0").iterdir() if p.name.startswith("rise-")
              and not p.name.startswith("rise-mix-")]  # one RISE student, named by its config
    run = json.loads((rise / "metrics.json").read_text())
    assert run["config"]["checkpoint_sha256"] == sha256_file(repo / "data/student/backbone.pth")
    # the demo teacher is a real open_clip checkpoint that the embed step loaded by path
    store_report = json.loads((repo / "data/work/teacher_report.json").read_text())
    assert store_report["per_domain"]["sketch"]
    assert json.loads((repo / "data/teacher/pretrain_report.json").read_text())["zero_shot"]["per_domain"]
    # the results table is printed at the end, one row per method plus the teacher
    tail = out[out.rindex("Running stage 'report'"):]
    for row in ("erm", "kd", "rise", "teacher"):
        assert f"| {row}" in tail
    metrics = json.loads((repo / "data/report/metrics.json").read_text())
    assert {"erm", "kd", "rise"} <= set(metrics)
    assert (repo / "data/report/results.png").stat().st_size > 1000
    # the report checks the students against the teacher (one epoch of a tiny world need not pass)
    assert metrics["learning_check"]["runs"] == 3
    assert "## Did the students learn?" in (repo / "data/report/results.md").read_text()
