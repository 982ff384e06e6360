"""What results.md may claim: a method beats ERM only when the paired 95 % interval of its per-seed
differences excludes 0 (else no significant difference); the figure's bars carry ± std error bars and a panel
of the paired differences; and the learning check says which selected runs fitted their source domains. Runs
are faked as in tests/report/test_report.py; the right answers come from scipy's paired t-test and from
hand-worked numbers, never from the report's own code."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer
from scipy import stats
from test_report import _cli, write_run

from pipeline.report import learning, verdicts
from pipeline.report.figure import figure
from pipeline.report.runs import find_runs, load_run
from pipeline.report.statistics import AVG, TEACHER, build_report
from pipeline.report.step import ReportConfig, run

DOMAINS = ["art", "photo"]
SEEDS = [0, 1, 2]
# Target accuracy (%) per method, domain and seed. Each case is one that only the paired rule gets right:
# - steady: +1.0..+1.2 on every seed, far inside ERM's seed-to-seed spread (std ~7 on Avg): the old "exceeds
#   both stds" rule calls it a tie, the paired interval excludes 0 -> better;
# - spiky: the per-seed Avg differences +0.8, +0.4, +10.1 with small stds (the mean difference 3.8
#   exceeds both), which the old rule called better: t = 1.19 with 2 df -> no significant difference;
# - down: -1.5..-2.5 on every seed -> worse.
ERM = {"art": [60.0, 62.0, 56.0], "photo": [66.0, 66.0, 60.0]}  # Avg 63, 64, 58
TARGET = {
    "erm": ERM,
    "steady": {"art": [61.0, 63.2, 57.1], "photo": [67.0, 67.1, 61.2]},
    "spiky": {"art": [60.8, 62.4, 66.1], "photo": [66.8, 66.4, 70.1]},
    "down": {"art": [58.0, 59.5, 54.5], "photo": [64.0, 63.5, 58.5]},
}
EXPECTED = {"steady": "better", "spiky": "no significant difference", "down": "worse"}


def _runs(root: Path, seeds=SEEDS, target=TARGET) -> Path:
    for m, by_domain in target.items():
        for s in seeds:
            for d in DOMAINS:
                write_run(root / f"{d}-{s}" / f"{m}-cfg0", m, d, s, 1.0, 0.9, by_domain[d][s] / 100)
    return root


def _avg(method: str, seeds=SEEDS) -> list[float]:
    return [float(np.mean([TARGET[method][d][s] for d in DOMAINS])) for s in seeds]


def test_hand_worked_interval_and_t_quantiles():
    # the KD: differences +0.8, +0.4, +10.1 -> mean 3.7667, s = 5.4884, t_{0.975, 2} = 4.3027
    p = verdicts.pair({0: 10.8, 1: 20.4, 2: 40.1}, {0: 10.0, 1: 20.0, 2: 30.0})
    assert p.n == 3 and p.mean == pytest.approx(3.7667, abs=1e-4)
    assert p.half_width == pytest.approx(4.3027 * 5.4884 / math.sqrt(3), abs=1e-3)  # 13.634
    assert p.mean / (5.4884 / math.sqrt(3)) == pytest.approx(1.188, abs=1e-3)  # the t = 1.2
    assert p.verdict == "no significant difference"
    # two seeds: 1 df, t_{0.975, 1} = 12.706; differences 2 and 4 -> mean 3, s = sqrt(2), half 12.706
    p = verdicts.pair({0: 2.0, 1: 4.0}, {0: 0.0, 1: 0.0})
    assert p.half_width == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2), abs=1e-3)
    assert p.verdict == "no significant difference"
    # five seeds all clearly positive: 4 df, t = 2.776
    p = verdicts.pair(dict(enumerate([1.0, 1.5, 2.0, 1.2, 1.8])), dict(enumerate([0.0] * 5)))
    assert p.half_width == pytest.approx(2.776 * float(np.std([1.0, 1.5, 2.0, 1.2, 1.8], ddof=1)) / math.sqrt(5),
                                         abs=1e-3)
    assert p.verdict == "better"
    # identical differences: a zero-width interval, away from 0 -> a verdict; at 0 -> none
    assert verdicts.pair({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0}).verdict == "better"
    assert verdicts.pair({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).verdict == "no significant difference"
    # pairs only on the seeds both have; one in common -> no verdict
    p = verdicts.pair({0: 5.0, 1: 6.0, 2: 7.0}, {1: 1.0, 2: 3.0, 3: 9.0})
    assert p.seeds == (1, 2) and p.diffs == (5.0, 4.0)
    assert verdicts.pair({0: 5.0, 1: 6.0}, {1: 1.0}).verdict == "unknown"


def test_verdicts_are_paired_t_intervals(tmp_path):
    out = tmp_path / "rep"
    run(ReportConfig(), [_runs(tmp_path / "runs")], out)
    md = (out / "results.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())["vs_erm"]
    lines = {line.split(":")[0][2:]: line for line in md.splitlines() if line.startswith("- ") and " vs erm" in line}
    assert set(lines) == {f"{m} vs erm" for m in EXPECTED}  # the teacher row is not a method
    for method, verdict in EXPECTED.items():
        diffs = np.subtract(_avg(method), _avg("erm"))
        ref = stats.ttest_rel(_avg(method), _avg("erm"))
        low, high = ref.confidence_interval(0.95)
        # the right rule, independently: significant at 95 % <=> the interval excludes 0 <=> p < 0.05
        assert (ref.pvalue < 0.05) == (verdict != "no significant difference")
        got = metrics[method]
        assert got["verdict"] == verdict and got["n"] == 3
        assert got["mean"] == pytest.approx(diffs.mean(), abs=1e-3)
        assert got["ci_low"] == pytest.approx(low, abs=1e-3) and got["ci_high"] == pytest.approx(high, abs=1e-3)
        per_seed = ", ".join(f"{d:+.1f}" for d in diffs)
        expected = f"{diffs.mean():+.1f} points on Avg (per seed {per_seed}; 95 % CI [{low:+.1f}, {high:+.1f}], n = 3)"
        assert expected in lines[f"{method} vs erm"], lines[f"{method} vs erm"]
        word = verdict if verdict == "no significant difference" else f"**{verdict}**"
        assert lines[f"{method} vs erm"].endswith(f": {word}."), lines[f"{method} vs erm"]
        for d in DOMAINS:  # and per held-out domain
            ref = stats.ttest_rel(TARGET[method][d], ERM[d])
            low, high = ref.confidence_interval(0.95)
            dom = got["domains"][d]
            assert dom["ci_low"] == pytest.approx(low, abs=1e-3) and dom["ci_high"] == pytest.approx(high, abs=1e-3)
            assert dom["verdict"] == ("no significant difference" if low <= 0 <= high else
                                      "better" if low > 0 else "worse")
            row = f"| {method} | {d} | " + ", ".join(f"{s}: {a - b:+.1f}" for s, a, b in
                                                    zip(SEEDS, TARGET[method][d], ERM[d], strict=True))
            assert row in md
    # the old rule ("the difference exceeds both stds") would have called these two the other way round
    for method, old in (("steady", False), ("spiky", True)):
        diff = np.mean(_avg(method)) - np.mean(_avg("erm"))
        assert bool(abs(diff) > np.std(_avg(method), ddof=1) and abs(diff) > np.std(_avg("erm"), ddof=1)) is old
    assert "Student's t with n − 1 degrees of freedom" in md and "What the ± covers" in md


def test_one_seed_calls_nothing(tmp_path):
    out = tmp_path / "rep"
    run(ReportConfig(), [_runs(tmp_path / "runs", seeds=[0])], out)
    md = (out / "results.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("- steady vs erm"))
    assert "no verdict, one seed measures no spread" in line and "**" not in line
    got = json.loads((out / "metrics.json").read_text())["vs_erm"]["steady"]
    assert got["verdict"] == "unknown" and got["n"] == 1 and got["ci_low"] is None


def test_methods_pair_only_on_common_seeds(tmp_path):
    # erm has seeds 0-2, steady only 0-1: two pairs, 1 degree of freedom
    root = _runs(tmp_path / "runs", target={"erm": ERM})
    for s in (0, 1):
        for d in DOMAINS:
            write_run(root / f"{d}-{s}" / "steady-cfg0", "steady", d, s, 1.0, 0.9, TARGET["steady"][d][s] / 100)
    out = tmp_path / "rep"
    run(ReportConfig(), [root], out)
    got = json.loads((out / "metrics.json").read_text())["vs_erm"]["steady"]
    low, high = stats.ttest_rel(_avg("steady", [0, 1]), _avg("erm", [0, 1])).confidence_interval(0.95)
    assert got["n"] == 2 and got["ci_low"] == pytest.approx(low, abs=1e-3) and got["ci_high"] == pytest.approx(high, abs=1e-3)


def test_no_erm_row_no_verdicts(tmp_path):
    root = tmp_path / "runs"
    write_run(root / "a", "rise", "art", 0, 1.0, 0.9, 0.6)
    write_run(root / "b", "rise", "art", 1, 1.0, 0.9, 0.7)
    out = tmp_path / "rep"
    run(ReportConfig(), [root], out)
    assert "Compared with ERM" not in (out / "results.md").read_text()
    assert "vs_erm" not in json.loads((out / "metrics.json").read_text())


def test_figure_has_std_error_bars(tmp_path):
    runs = [load_run(p) for p in find_runs([_runs(tmp_path / "runs")])]
    report = build_report(runs)
    fig = figure(report)
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert [c.get_label() for c in bars] == list(report.rows)  # one bar series per row, teacher first
    columns = DOMAINS + [AVG]
    for container, (name, row) in zip(bars, report.rows.items(), strict=True):
        if name == TEACHER:  # one deterministic number: no error bar
            assert container.errorbar is None
            continue
        segments = container.errorbar.lines[2][0].get_segments()
        assert len(segments) == len(columns)
        for seg, column, bar in zip(segments, columns, container.patches, strict=True):
            (x0, lo), (x1, hi) = seg
            values = _avg(name) if column == AVG else TARGET[name][column]
            std = float(np.std(values, ddof=1))
            assert x0 == x1 == pytest.approx(bar.get_x() + bar.get_width() / 2)
            assert (lo + hi) / 2 == pytest.approx(bar.get_height()) == pytest.approx(row[column].mean)
            assert (hi - lo) / 2 == pytest.approx(std)
    assert "error bars: ± std over seeds" in fig.axes[0].get_title()
    # the paired panel: per method, the mean difference per column with the t interval as its error bar
    panel = fig.axes[1]
    assert "Paired difference to erm" in panel.get_title()
    errorbars = [c for c in panel.containers if isinstance(c, ErrorbarContainer)]
    assert sorted(c.get_label() for c in errorbars) == sorted(f"{m} − erm" for m in EXPECTED)
    for container in errorbars:
        method = container.get_label().split(" ")[0]
        segments = container.lines[2][0].get_segments()
        for seg, column in zip(segments, columns, strict=True):
            (_, lo), (_, hi) = seg
            a = _avg(method) if column == AVG else TARGET[method][column]
            b = _avg("erm") if column == AVG else ERM[column]
            low, high = stats.ttest_rel(a, b).confidence_interval(0.95)
            assert lo == pytest.approx(low, abs=1e-6) and hi == pytest.approx(high, abs=1e-6)


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


def test_learning_check_without_a_curve_fails_and_says_why(tmp_path):
    """A selected epoch that cannot be read, or a NaN curve, never passes the bar, and results.md says why."""
    work = _work(tmp_path / "work")
    runs = tmp_path / "runs"
    # 0: metrics.json names no selected epoch; 1: the selected epoch is not in epochs.csv; 2: CE is NaN at the
    # selected epoch (a diverged run: NaN losses, its accuracy still read); 3: no epochs.csv at all; 4: passes
    for seed in range(5):
        _learning_run(runs / f"art-{seed}" / "erm-cfg0", "art", seed, 0.95, math.nan if seed == 2 else 0.2)
    m0 = runs / "art-0" / "erm-cfg0" / "metrics.json"
    metrics = json.loads(m0.read_text())
    del metrics["selected_epoch"]
    m0.write_text(json.dumps(metrics))
    m1 = runs / "art-1" / "erm-cfg0" / "metrics.json"
    m1.write_text(json.dumps({**json.loads(m1.read_text()), "selected_epoch": 7}))
    (runs / "art-3" / "erm-cfg0" / "epochs.csv").unlink()
    out = tmp_path / "rep"
    report = run(ReportConfig(), [runs], out, work=work)
    got = {c.run.seed: c for c in learning.check(report, learning.read_teacher_val(work))}
    assert [got[s].passed for s in range(5)] == [False, False, False, False, True]
    assert all(got[s].val_ok for s in range(5))  # it is the curve, not the accuracy, that fails them
    md = (out / "results.md").read_text()
    assert "| erm | art | 0 | – | 95.0 | 85.0 | – | FAIL (metrics.json names no selected epoch) |" in md
    assert "| erm | art | 1 | 7 | 95.0 | 85.0 | – | FAIL (epoch 7 is not in epochs.csv) |" in md
    assert "| erm | art | 2 | 2 | 95.0 | 85.0 | – | FAIL (train CE is not a number (diverged?)) |" in md
    assert "| erm | art | 3 | 2 | 95.0 | 85.0 | – | FAIL (no epochs.csv) |" in md
    assert "| erm | art | 4 | 2 | 95.0 | 85.0 | 0.200 | pass |" in md
    assert json.loads((out / "metrics.json").read_text())["learning_check"]["passed"] == 1


def test_learning_check_all_pass_and_cli(tmp_path):
    work = _work(tmp_path / "work")
    runs = tmp_path / "runs"
    _learning_run(runs / "photo-0" / "erm-cfg0", "photo", 0, 0.9, 0.3)
    proc = _cli(str(runs), "--out", str(tmp_path / "rep"), "--work", str(work))
    assert proc.returncode == 0, proc.stderr
    assert "1 of 1 pass: every selected run passes" in (tmp_path / "rep" / "results.md").read_text()
    proc = _cli(str(runs), "--out", str(tmp_path / "rep"), "--work", str(tmp_path / "nowork"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: --work ") and "Traceback" not in proc.stderr
