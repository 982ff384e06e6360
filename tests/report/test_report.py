"""The report against hand-built distill runs whose right answer is written out here.

Grid: 2 methods x 3 held-out domains x 2 seeds x 3 configs (w_dist). In every cell the config with the
best source-validation accuracy is NOT the one with the best target accuracy, so picking by target (or by
the last/first folder) gives a different table. Expected cells are computed with numpy from `TRUTH`.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.errors import UserError
from pipeline.report.figure import _mean_curve, render_png
from pipeline.report.render import markdown_table
from pipeline.report.runs import find_runs, load_run
from pipeline.report.statistics import AVG, build_report
from pipeline.report.statistics import TEACHER as TEACHER_ROW
from pipeline.report.step import ReportConfig, run
from tests.dvc_fixtures import ROOT, make_repo
from tests.dvc_fixtures import run as run_in

DOMAINS = ["art", "photo", "sketch"]
METHODS = ["erm", "rise"]
SEEDS = [0, 1]
W_DIST = [0.5, 1.0, 2.0]
TEACHER = {"art": 0.81, "photo": 0.97, "sketch": 0.62}


def config_accs(method: str, domain: str, seed: int) -> list[tuple[float, float]]:
    """(source_val_acc, target_acc) per w_dist config; the selected index moves with the cell."""
    base = 0.5 + 0.1 * DOMAINS.index(domain) + 0.05 * METHODS.index(method) + 0.013 * seed
    chosen = (DOMAINS.index(domain) + seed) % 3
    accs = []
    for i in range(3):
        if i == chosen:
            accs.append((0.95, base))  # best on source validation, not the best on target
        else:
            accs.append((0.80 + 0.01 * i, base + 0.2 + 0.01 * i))
    return accs


# Selected target accuracy per (method, domain, seed), in %; written from config_accs' rule by hand.
TRUTH = {(m, d, s): 100 * (0.5 + 0.1 * DOMAINS.index(d) + 0.05 * METHODS.index(m) + 0.013 * s)
         for m in METHODS for d in DOMAINS for s in SEEDS}


def write_run(folder: Path, method: str, domain: str, seed: int, w_dist: float, source_val: float,
              target: float, status: str = "complete", epochs: int = 3) -> Path:
    folder.mkdir(parents=True)
    config = {"method": method, "target_domain": domain, "seed": seed, "student": "resnet18",
              "w_kd": 0.9, "w_ce": 0.1, "w_dist": w_dist, "temperature": 3.0, "lr": 1e-3, "epochs": epochs,
              "workers": 2, "device": "cpu"}
    (folder / "config.json").write_text(json.dumps(config))
    metrics = {"status": status, "method": method, "target_domain": domain, "seed": seed,
               "student": "resnet18", "weights": {"w_kd": 0.9, "w_ce": 0.1, "w_dist": w_dist},
               "temperature": 3.0, "lr": 1e-3, "epochs": epochs, "selected_epoch": epochs - 1,
               "source_val_acc": source_val, "target_acc": target,
               "per_domain_acc": {domain: target}, "teacher_target_acc": TEACHER[domain], "config": config}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with open(folder / "epochs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "lr", "loss", "loss_ce", "loss_kd", "loss_ad", "loss_rd", "source_val_acc",
                    "target_acc"])
        for e in range(epochs):
            frac = (e + 1) / epochs
            w.writerow([e, 1e-3, 1 - frac / 2, 0.1, 0.2, 0.3, 0.4, source_val * frac, target * frac])
    return folder


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for m in METHODS:
        for d in DOMAINS:
            for s in SEEDS:
                for i, (sv, ta) in enumerate(config_accs(m, d, s)):
                    # nested folders: the search must be recursive
                    write_run(root / m / f"{d}-s{s}-w{i}", m, d, s, W_DIST[i], sv, ta)
    # Would win selection (and drag the mean up) if it were averaged in.
    incomplete = root / "rise" / "art-s0-unfinished"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    write_run(root / "rise" / "art-s1-crashed", "rise", "art", 1, 2.0, 0.99, 0.99, status="failed")
    broken = root / "erm" / "photo-s0-broken"
    broken.mkdir()
    (broken / "metrics.json").write_text('{"status": "complete", "method": ')
    write_run(root / "erm" / "sketch-s0-percent", "erm", "sketch", 0, 2.0, 99.0, 98.0)  # % not fraction
    return root


def expected_cell(method: str, domain: str) -> tuple[float, float]:
    vals = [TRUTH[(method, domain, s)] for s in SEEDS]
    return float(np.mean(vals)), float(np.std(vals, ddof=1))


def expected_avg(method: str) -> tuple[float, float]:
    per_seed = [np.mean([TRUTH[(method, d, s)] for d in DOMAINS]) for s in SEEDS]
    return float(np.mean(per_seed)), float(np.std(per_seed, ddof=1))


def test_selection_and_aggregation(runs_dir: Path, tmp_path: Path):
    out = tmp_path / "report"
    result = run(ReportConfig(), [runs_dir], out)
    assert result.domains == DOMAINS
    assert list(result.rows) == [TEACHER_ROW, *METHODS]

    for (m, d, s), sel in result.selections.items():
        assert sel.candidates == 3
        assert sel.run.source_val_acc == 0.95
        assert sel.run.hparams["w_dist"] == W_DIST[(DOMAINS.index(d) + s) % 3]
        assert 100 * sel.run.target_acc == pytest.approx(TRUTH[(m, d, s)])
    assert len(result.selections) == len(METHODS) * len(DOMAINS) * len(SEEDS)

    for m in METHODS:
        for d in DOMAINS:
            cell = result.rows[m][d]
            mean, std = expected_cell(m, d)
            assert cell.mean == pytest.approx(mean) and cell.std == pytest.approx(std)
        mean, std = expected_avg(m)
        assert result.rows[m][AVG].mean == pytest.approx(mean)
        assert result.rows[m][AVG].std == pytest.approx(std)
    teacher = result.rows[TEACHER_ROW]
    assert {d: teacher[d].mean for d in DOMAINS} == pytest.approx({d: 100 * v for d, v in TEACHER.items()})
    assert teacher[AVG].mean == pytest.approx(100 * np.mean(list(TEACHER.values())))
    assert teacher["art"].std is None

    # metrics.json: flat numbers for dvc
    metrics = json.loads((out / "metrics.json").read_text())
    for m in METHODS:
        assert metrics[m]["avg"] == pytest.approx(expected_avg(m)[0], abs=1e-4)
        for d in DOMAINS:
            assert metrics[m][d] == pytest.approx(expected_cell(m, d)[0], abs=1e-4)
    assert metrics["teacher_zero_shot"]["photo"] == pytest.approx(97.0)
    assert metrics["n_runs"] == {"complete": 36, "incomplete": 1, "failed": 3}

    # CSV: mean, std and n per column
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert set(rows) == {TEACHER_ROW, *METHODS}
    mean, std = expected_cell("rise", "sketch")
    assert float(rows["rise"]["sketch_mean"]) == pytest.approx(mean, abs=1e-4)
    assert float(rows["rise"]["sketch_std"]) == pytest.approx(std, abs=1e-4)
    assert rows["rise"]["sketch_n"] == "2" and rows[TEACHER_ROW]["art_std"] == ""

    # Markdown: the table line, failures listed with their reason, selected configs
    md = (out / "results.md").read_text()
    mean, std = expected_cell("erm", "art")
    amean, astd = expected_avg("erm")
    erm_line = next(line for line in md.splitlines() if line.startswith("| erm |"))
    assert f"| {mean:.1f} ± {std:.1f} |" in erm_line and erm_line.endswith(f"| {amean:.1f} ± {astd:.1f} |")
    assert "| teacher (zero-shot) | 81.0 | 97.0 | 62.0 | 80.0 |" in md
    assert "art-s0-unfinished`: incomplete: no metrics.json" in md
    assert "art-s1-crashed`: failed: status 'failed'" in md
    assert "photo-s0-broken`: failed: metrics.json unreadable" in md
    assert "sketch-s0-percent`: failed: metrics.json: source_val_acc=99.0 is outside [0, 1]" in md
    assert "| rise | sketch | 1 | 3 | 95.0 |" in md and "w_dist=0.5" in md
    assert "workers" not in md  # where a run went is not part of its config

    png = (out / "results.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert sorted(p.name for p in out.iterdir()) == sorted(["results.md", "results.csv", "results.png",
                                                            "metrics.json", "epochs.csv"])
    # Same runs -> byte-identical outputs, so DVC sees no change on a rerun.
    run(ReportConfig(), [runs_dir], tmp_path / "again")
    assert all((out / n).read_bytes() == (tmp_path / "again" / n).read_bytes() for n in os.listdir(out))


def test_ties_missing_domains_and_single_seed(tmp_path: Path):
    root = tmp_path / "runs"
    # Tie on source val: the config whose JSON sorts first (w_dist 0.5 < 2.0) wins, whatever the folder name.
    write_run(root / "a", "rise", "art", 0, 2.0, 0.9, 0.70)
    write_run(root / "b", "rise", "art", 0, 0.5, 0.9, 0.60)
    write_run(root / "c", "rise", "photo", 0, 1.0, 0.9, 0.80)
    write_run(root / "d", "rise", "art", 1, 1.0, 0.9, 0.50)  # seed 1 lacks photo: not in Avg
    result = run(ReportConfig(decimals=2), [root], tmp_path / "out")
    assert result.selections[("rise", "art", 0)].run.path.name == "b"
    row = result.rows["rise"]
    assert row["art"].values == pytest.approx((60.0, 50.0))
    assert row["photo"].values == pytest.approx((80.0,)) and row["photo"].std is None
    assert row[AVG].values == pytest.approx((70.0,))
    table = markdown_table(result, 2)
    art = np.std([60.0, 50.0], ddof=1)
    assert f"| rise | 55.00 ± {art:.2f} | 80.00 (n=1) | 70.00 (n=1) |" in table


def test_epoch_curves_and_problems(tmp_path: Path):
    root = tmp_path / "runs"
    write_run(root / "x", "erm", "art", 0, 1.0, 0.9, 0.7, epochs=4)
    write_run(root / "y", "erm", "art", 1, 1.0, 0.8, 0.5, epochs=2)
    (root / "y" / "epochs.csv").write_text("nothing,here\n1,2\n")
    runs = [load_run(p) for p in find_runs([root])]
    assert len(runs[0].epochs) == 4 and runs[0].epochs[3]["target_acc"] == pytest.approx(0.7)
    assert runs[1].status == "complete" and "epochs.csv unreadable" in runs[1].epochs_problem
    result = build_report(runs)
    xs, ys = _mean_curve([runs[0], runs[1]], "target_acc")
    assert xs == [0, 1, 2, 3] and ys[-1] == pytest.approx(70.0)
    assert any("no training curve" in n and "y" in n for n in result.notes)
    assert render_png(result).startswith(b"\x89PNG")


def test_dvc_plots_show_draws_the_selected_runs_curves(runs_dir: Path, tmp_path: Path):
    """The project's dvc.yaml, in a git + DVC repo holding a report: `dvc plots show` loads the figure and the
    training curves, and the curves are exactly the selected runs' own epochs.csv rows."""
    repo = make_repo(tmp_path / "repo", yaml.safe_load((ROOT / "params.yaml").read_text()))
    run(ReportConfig(), [runs_dir], repo / "data" / "report")
    shown = json.loads(run_in(repo, ["dvc", "plots", "show", "--json"]).stdout)
    assert "errors" not in shown, shown["errors"]
    plots = shown["data"]
    assert set(plots) == {"data/report/results.png", "data/report/epochs.csv",
                          "Source-validation accuracy per epoch (selected runs)",
                          "Training loss per epoch (selected runs)"}
    assert plots["data/report/results.png"][0]["type"] == "image"

    expected = set()
    for m in METHODS:
        for d in DOMAINS:
            for s in SEEDS:
                chosen = (DOMAINS.index(d) + s) % 3  # config_accs' best source validation
                with open(runs_dir / m / f"{d}-s{s}-w{chosen}" / "epochs.csv", newline="") as f:
                    expected |= {(f"{m}/{d}/{s}", int(r["epoch"]), float(r["source_val_acc"]), float(r["target_acc"]),
                                  float(r["loss"])) for r in csv.DictReader(f)}
    for plot_id, y in (("data/report/epochs.csv", "target_acc"),
                       ("Source-validation accuracy per epoch (selected runs)", "source_val_acc"),
                       ("Training loss per epoch (selected runs)", "loss")):
        (plot,) = plots[plot_id]
        spec = plot["content"]
        assert plot["type"] == "vega" and spec["encoding"]["y"]["field"] == y
        assert spec["encoding"]["x"]["field"] == "epoch"
        assert {"field": "run", "type": "nominal"} in spec["encoding"]["detail"]  # a line per run, not one zigzag
        values = spec["data"]["values"]
        assert len(values) == len(expected) == len(METHODS) * len(DOMAINS) * len(SEEDS) * 3
        assert {(v["run"], int(v["epoch"]), float(v["source_val_acc"]), float(v["target_acc"]), float(v["loss"]))
                for v in values} == expected


def test_bad_inputs(tmp_path: Path, runs_dir: Path):
    with pytest.raises(UserError, match="run or folder not found: .*nope"):
        find_runs([tmp_path / "nope"])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(UserError, match="no runs found under .*empty"):
        find_runs([tmp_path / "empty"])
    only_bad = tmp_path / "bad"
    write_run(only_bad / "r", "erm", "art", 0, 1.0, 0.9, 0.7, status="running")
    with pytest.raises(UserError, match="no complete runs among 1 found"):
        run(ReportConfig(), [only_bad], tmp_path / "o")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="--out must be a folder"):
        run(ReportConfig(), [runs_dir], tmp_path / "file")
    with pytest.raises(UserError, match="decimals must be >= 0"):
        run(ReportConfig(decimals=-1), [runs_dir], tmp_path / "o")
    with pytest.raises(UserError, match="not a run folder"):
        find_runs([tmp_path / "file"])
    # The report folder itself (metrics.json inside the searched tree) is never taken for a run.
    out = runs_dir / "report"
    run(ReportConfig(), [runs_dir], out)
    again = run(ReportConfig(), [runs_dir], tmp_path / "elsewhere")
    assert not any("report" in str(r.path) for r in again.runs)


def _cli(*args: str) -> subprocess.CompletedProcess:
    """`rise-pipeline report ARGS` in a separate process, as a CompletedProcess. Kept for
    tests/report/test_report_sweep.py, which imports it; tests here take the `cli` fixture (tests/conftest.py)."""
    from conftest import run_cli

    r = run_cli("report", *args, timeout=120)
    return subprocess.CompletedProcess(["rise-pipeline", "report", *args], r.code, r.out, r.err)


def test_cli(runs_dir: Path, tmp_path: Path, cli):
    params = tmp_path / "params.yaml"
    params.write_text("report:\n  methods: [rise, erm]\n  title: My table\n")
    out = tmp_path / "rep"
    proc = cli("report", runs_dir, "--out", out, "--params", params, in_process=True)
    assert proc.code == 0, proc.err
    lines = proc.out.splitlines()
    assert lines[0].startswith("| method | art | photo | sketch | Avg |")
    assert [line.split(" | ")[0] for line in lines[2:5]] == ["| teacher (zero-shot)", "| rise", "| erm"]
    assert "4 incomplete or failed run(s)" in proc.out
    assert (out / "results.md").read_text().startswith("# My table")

    proc = cli("report", tmp_path / "missing", "--out", out, in_process=True)
    assert proc.code == 2 and proc.err.strip().startswith("error: run or folder not found")
    assert "Traceback" not in proc.err
    params.write_text("report:\n  decimal: 2\n")
    proc = cli("report", runs_dir, "--out", out, "--params", params, in_process=True)
    assert proc.code == 2 and "unknown key(s) decimal" in proc.err
