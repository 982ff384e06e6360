"""The demo's students learn: a reduced embedded default (3 classes, smaller corpora, shorter schedules; the
default's recipe otherwise) run stage by stage through the CLI -- world, teacher, the student's pretraining,
shard, embed, one distill group from the pretrained backbone, report with its learning check.

The test holds the product's own bar, the one results.md applies (pipeline/report/learning.py): every
selected run reaches the teacher's zero-shot source-validation accuracy minus 10 points AND a training
cross-entropy below ln(C)/2 at its selected epoch -- checked against figures recomputed here from the run
folders and the embed step's teacher report, and the report must say "pass" for each.

Why this world reaches it with margin, on any machine: a distilled student's training CE follows its teacher
(KD pulls its logits towards the teacher's), so the teacher here is trained long enough to be right on most
source images (its source-val accuracy 0.86), and the students get 30 epochs. Measured on the 2-core machine
(1 torch thread for the pretrainings): erm / kd / rise CE 0.40 / 0.41 / 0.44 against the bar 0.55, source
val 0.89 / 0.93 / 0.92 against 0.76. With the teacher of 720 images x 25 epochs and 16 distill epochs (this
test's earlier size) RISE's CE stayed at 0.80-0.96 and ERM's at 0.55-0.65: the bar was out of reach."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import REPO as ROOT


def reduced(tmp: Path) -> dict:
    """The default's recipe on a smaller world: 3 classes (the bar scales with ln C), fewer images, fewer
    pretraining objects, shorter schedules."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"] = {"root": str(tmp / "world"), "work": str(tmp / "work")}
    p["world"].update(per_cell=60, classes=["car", "fish", "star"])
    p["teacher"].update(per_cell=100, eval_per_cell=6, epochs=40, batch_size=32, threads=1)
    p["student"].update(classes=["arrow", "bottle", "clock", "moon"], per_class=150, eval_per_class=6, epochs=10,
                        batch_size=32, threads=1)
    p["embed"].update(views=30, workers=0)  # K >= epochs: a fresh view every epoch
    p["distill"].update(epochs=30, checkpoint=str(tmp / "student" / "backbone.pth"))
    p["sweep"].update(domains=["sketch"], seeds=[0])
    return p


@pytest.mark.slow
def test_reduced_demo_students_learn(tmp_path, cli):
    def _cli(*argv):
        r = cli(*argv, in_process=True)
        assert r.code == 0, (argv, r.err)

    p = reduced(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(p))
    prm, work = ["--params", str(params)], tmp_path / "work"
    _cli("world", "--out", str(tmp_path / "world"), *prm)
    _cli("pretrain-teacher", "--out", str(tmp_path / "teacher"), *prm)
    _cli("pretrain-student", "--out", str(tmp_path / "student"), *prm)
    _cli("extract", "--data-root", str(tmp_path / "world"), "--out", str(work), "--steps", "shard,embed",
         "--pretrained", str(tmp_path / "teacher" / "teacher.pt"), *prm)
    _cli("distill", "--work", str(work), "--out", str(tmp_path / "runs" / "sketch-0"), "--target-domain", "sketch",
         "--seed", "0", "--sweep", *prm)
    _cli("report", str(tmp_path / "runs"), "--out", str(tmp_path / "report"), "--work", str(work), *prm)
    check = json.loads((tmp_path / "report" / "metrics.json").read_text())["learning_check"]
    md = (tmp_path / "report" / "results.md").read_text()
    assert check["runs"] == len(p["sweep"]["methods"]) and check["ce_limit"] == pytest.approx(math.log(3) / 2, abs=1e-4)

    # the teacher's zero-shot accuracy on the source domains' validation images, mean over domains
    per_domain = json.loads((work / "teacher_report.json").read_text())["per_domain"]
    teacher_val = sum(per_domain[d]["val"]["acc"] for d in ("cartoon", "painting", "photo")) / 3
    backbone = json.loads((tmp_path / "student" / "pretrain_report.json").read_text())["sha256"]
    rows = {}
    for run in sorted((tmp_path / "runs" / "sketch-0").iterdir()):
        m = json.loads((run / "metrics.json").read_text())
        assert m["config"]["checkpoint_sha256"] == backbone and m["config"]["pretrained"] is True
        with open(run / "epochs.csv") as f:
            epoch = next(r for r in csv.DictReader(f) if int(r["epoch"]) == m["selected_epoch"])
        assert float(epoch["source_val_acc"]) == pytest.approx(m["source_val_acc"], abs=1e-5)
        rows[m["method"]] = (m["source_val_acc"], float(epoch["loss_ce"]))
    section = md[md.index("## Did the students learn?"):]
    for method, (val, ce) in rows.items():
        assert val >= teacher_val - 0.10, (method, val, teacher_val, section)
        assert ce < math.log(3) / 2, (method, ce, section)
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| {method} | sketch | 0 |"))
        assert line.split("|")[-2].strip() == "pass", line  # the report agrees: both halves pass
    assert check["passed"] == check["runs"]
