"""The demo's students learn: a reduced embedded default (smaller world, corpora and epochs; the default's
recipe otherwise) run step by step through the CLI, then the report's learning check. Every selected run
must reach, at its selected epoch, the teacher's zero-shot source-validation accuracy minus 10 points and a
training cross-entropy below ln(C)/2 -- the bar the full demo's results.md states for its own runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def reduced(tmp: Path) -> dict:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"] = {"root": str(tmp / "world"), "work": str(tmp / "work")}
    p["world"].update(per_cell=20)
    p["teacher"].update(per_cell=40, eval_per_cell=4, epochs=10)
    p["student"].update(per_class=60, eval_per_class=4, epochs=6)
    p["embed"].update(views=6, workers=0)
    p["distill"].update(epochs=6, checkpoint=str(tmp / "student" / "backbone.pth"))
    p["sweep"].update(domains=["sketch"], seeds=[0])
    return p


def test_reduced_demo_students_pass_the_learning_bar(tmp_path, cli):
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
    assert check["runs"] == len(p["sweep"]["methods"]) and check["ce_limit"] == pytest.approx(math.log(7) / 2, abs=1e-4)
    assert check["passed"] == check["runs"], md[md.index("## Did the students learn?"):]
