"""What results.md may claim: a method beats ERM only when the difference of the averages exceeds both
methods' std over seeds (else a tie); the figure's bars carry ± std error bars; and the learning check
says which selected runs fitted their source domains. Runs are faked as in tests/test_report.py, with the
right answers computed here."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer

from pipeline.report import learning
from pipeline.report import tables as lib
from pipeline.report.step import ReportConfig, run
from tests.test_report import _cli, write_run

DOMAINS = ["art", "photo"]
SEEDS = [0, 1, 2]
# Target accuracy (fraction) per (method, seed), the same on both domains: erm spreads by 1 point around 50,
# kd sits 5 points above it (more than either spread), rise 0.5 above with a 3-point spread (a tie),
# sgd 5 below (worse).
TARGET = {"erm": [0.49, 0.50, 0.51], "kd": [0.545, 0.55, 0.555], "rise": [0.475, 0.505, 0.535],
          "sgd": [0.445, 0.45, 0.455]}


def _runs(root: Path, seeds=SEEDS) -> Path:
    for m, accs in TARGET.items():
        for s in seeds:
            for d in DOMAINS:
                write_run(root / f"{d}-{s}" / f"{m}-cfg0", m, d, s, 1.0, 0.9, accs[s])
    return root


def _avg(method: str, seeds=SEEDS) -> tuple[float, float | None]:
    vals = [100 * TARGET[method][s] for s in seeds]
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None)


def test_differences_beyond_both_stds_are_called_and_the_rest_are_ties(tmp_path):
    out = tmp_path / "rep"
    run(ReportConfig(), [_runs(tmp_path / "runs")], out)
    md = (out / "results.md").read_text()
    lines = {line.split(":")[0][2:]: line for line in md.splitlines() if line.startswith("- ") and " vs erm" in line}
    assert set(lines) == {"kd vs erm", "rise vs erm", "sgd vs erm"}  # the teacher row is not a method
    e_mean, e_std = _avg("erm")
    for method, verdict in (("kd", "better"), ("rise", "tie"), ("sgd", "worse")):
        mean, std = _avg(method)
        diff = mean - e_mean
        # the rule, written out: a difference only when it exceeds both stds
        assert (abs(diff) > std and abs(diff) > e_std) == (verdict != "tie")
        expected = f"{diff:+.1f} points ({mean:.1f} ± {std:.1f} vs {e_mean:.1f} ± {e_std:.1f})"
        assert expected in lines[f"{method} vs erm"]
        word = "**tie**" if verdict == "tie" else f"**{verdict}**"
        assert word in lines[f"{method} vs erm"], lines[f"{method} vs erm"]
    assert "exceeds both methods' std over seeds" in md
    metrics = json.loads((out / "metrics.json").read_text())
    assert {m: v["verdict"] for m, v in metrics["vs_erm"].items()} == {"kd": "better", "rise": "tie",
                                                                       "sgd": "worse"}
    assert metrics["vs_erm"]["kd"]["diff"] == pytest.approx(_avg("kd")[0] - e_mean, abs=1e-4)


def test_one_seed_calls_nothing(tmp_path):
    out = tmp_path / "rep"
    run(ReportConfig(), [_runs(tmp_path / "runs", seeds=[0])], out)
    md = (out / "results.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("- kd vs erm"))
    assert "cannot tell, a single seed measures no spread" in line and "**" not in line
    assert json.loads((out / "metrics.json").read_text())["vs_erm"]["kd"]["verdict"] == "unknown"


def test_no_erm_row_no_verdicts(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", "rise", "art", 0, 1.0, 0.9, 0.6)
    write_run(root / "b", "rise", "art", 1, 1.0, 0.9, 0.7)
    out = tmp_path / "rep"
    run(ReportConfig(), [root], out)
    assert "Compared with ERM" not in (out / "results.md").read_text()
    assert "vs_erm" not in json.loads((out / "metrics.json").read_text())


def test_figure_has_std_error_bars(tmp_path):
    runs = [lib.load_run(p) for p in lib.find_runs([_runs(tmp_path / "runs")])]
    report = lib.build_report(runs)
    fig = lib.figure(report)
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == list(report.rows)  # one bar series per row, teacher first
    columns = DOMAINS + [lib.AVG]
    for container, (name, row) in zip(bars, report.rows.items(), strict=True):
        if name == lib.TEACHER:  # one deterministic number: no error bar
            assert container.errorbar is None
            continue
        segments = container.errorbar.lines[2][0].get_segments()
        assert len(segments) == len(columns)
        for seg, column, bar in zip(segments, columns, container.patches, strict=True):
            (x0, lo), (x1, hi) = seg
            std = float(np.std([100 * TARGET[name][s] for s in SEEDS], ddof=1))
            assert x0 == x1 == pytest.approx(bar.get_x() + bar.get_width() / 2)
            assert (lo + hi) / 2 == pytest.approx(bar.get_height()) == pytest.approx(row[column].mean)
            assert (hi - lo) / 2 == pytest.approx(std)
    assert "error bars: ± std over seeds" in fig.axes[0].get_title()


# ---------------------------------------------------------------------------------------- learning check

# Teacher zero-shot accuracy on each domain's validation split (fraction, images).
TEACHER_VAL = {"art": (0.70, 30), "photo": (0.90, 10), "sketch": (0.80, 20)}


def _work(root: Path, classes=("a", "b", "c", "d", "e", "f", "g")) -> Path:
    (root / "shards").mkdir(parents=True)
    (root / "shards" / "index.json").write_text(json.dumps({"classes": list(classes)}))
    per_domain = {d: {"train": {"acc": 0.5, "n": 100}, "val": {"acc": a, "n": n}} for d, (a, n) in TEACHER_VAL.items()}
    (root / "teacher_report.json").write_text(json.dumps({"per_domain": per_domain}))
    return root


def _learning_run(folder: Path, target: str, seed: int, source_val: float, ce: float, val_average="mean") -> None:
    """A complete run whose selected epoch (2 of 3) has training CE `ce`; the other epochs' CE is 0."""
    write_run(folder, "erm", target, seed, 1.0, source_val, 0.5)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics.update(selected_epoch=2)
    metrics["config"]["val_average"] = val_average
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with open(folder / "epochs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "loss_ce", "source_val_acc", "target_acc"])
        for e in (1, 2, 3):
            w.writerow([e, ce if e == 2 else 0.0, source_val, 0.5])


def test_learning_check_against_the_teacher_on_the_same_source_rows(tmp_path):
    work = _work(tmp_path / "work")
    limit = math.log(7) / 2  # 0.973
    # held out sketch: sources art + photo, teacher mean (0.70 + 0.90) / 2 = 0.80 -> bar 0.70
    # pooled: (0.70 * 30 + 0.90 * 10) / 40 = 0.75 -> bar 0.65
    cases = {("sketch", 0): (0.70, 0.9, "mean", True),     # exactly at the bar, CE just under
             ("sketch", 1): (0.69, 0.5, "mean", False),    # 1 point under the bar
             ("sketch", 2): (0.66, 0.5, "pooled", True),   # pooled teacher is lower
             ("art", 0): (0.95, limit, "mean", False),     # CE not below ln(7)/2
             ("art", 1): (0.95, 0.2, "mean", True)}        # art held out: teacher (0.9 + 0.8) / 2 -> bar 0.75
    runs = tmp_path / "runs"
    for (target, seed), (val, ce, average, _) in cases.items():
        _learning_run(runs / f"{target}-{seed}" / "erm-cfg0", target, seed, val, ce, average)
    out = tmp_path / "rep"
    report = run(ReportConfig(), [runs], out, work=work)
    checks = learning.check(report, learning.read_teacher_val(work))
    got = {(c.run.target, c.run.seed): c for c in checks}
    for key, (_, ce, _, passed) in cases.items():
        assert got[key].passed is passed, key
        assert got[key].train_ce == pytest.approx(ce) and got[key].epoch == 2
    assert got[("sketch", 0)].teacher_source_val == pytest.approx(0.80)
    assert got[("sketch", 2)].teacher_source_val == pytest.approx(0.75)
    assert got[("art", 0)].val_ok and not got[("art", 0)].ce_ok
    md = (out / "results.md").read_text()
    assert "## Did the students learn?" in md and "3 of 5 pass" in md and "2 of 5 selected runs fail it" in md
    assert "below ln(7)/2 = 0.97" in md
    assert "| erm | sketch | 1 | 2 | 69.0 | 80.0 | 0.500 | FAIL (source val) |" in md
    assert "| erm | art | 0 | 2 | 95.0 | 85.0 | 0.973 | FAIL (train CE) |" in md
    assert "| erm | sketch | 2 | 2 | 66.0 | 75.0 | 0.500 | pass |" in md
    summary = json.loads((out / "metrics.json").read_text())["learning_check"]
    assert summary == {"passed": 3, "runs": 5, "margin_points": 10.0, "ce_limit": round(limit, 4)}


def test_learning_check_all_pass_and_cli(tmp_path):
    work = _work(tmp_path / "work")
    runs = tmp_path / "runs"
    _learning_run(runs / "photo-0" / "erm-cfg0", "photo", 0, 0.9, 0.3)
    proc = _cli(str(runs), "--out", str(tmp_path / "rep"), "--work", str(work))
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 pass: every selected run passes" in (tmp_path / "rep" / "results.md").read_text()
    proc = _cli(str(runs), "--out", str(tmp_path / "rep"), "--work", str(tmp_path / "nowork"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: --work ") and "Traceback" not in proc.stderr
