"""The report as text: results.md (table, verdicts, selected configs), results.csv, metrics.json and
epochs.csv (the selected runs' training curves for `dvc plots`)."""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence

from . import verdicts
from .runs import Run
from .statistics import AVG, BASELINE, TEACHER, Cell, Comparison, Report, compare

# Shown in every "selected config" label; keys that vary between a method's runs are added to them.
LABEL_KEYS = ("student", "temperature", "w_kd", "w_ce", "w_dist", "lr", "epochs")

# What the ± (and the paired intervals) cover, and what they do not: said under every table.
COVERS = ("What the ± covers: a seed changes the new layers' initialisation, the batch order and which stored "
          "view each epoch replays; the train/val split, the pool of stored views, the teacher and the pretrained "
          "backbone are the same for every seed, so their variation is not in the ± — a table made on another "
          "machine or from another store can differ by more than its ±.")


def format_cell(cell: Cell | None, decimals: int = 1, max_n: int = 0) -> str:
    if cell is None or not cell.n:
        return "–"
    text = f"{cell.mean:.{decimals}f}"
    if cell.std is not None:
        text += f" ± {cell.std:.{decimals}f}"
    if cell.spread and cell.n < max_n:
        text += f" (n={cell.n})"  # fewer seeds than the rest of the table: say so in the cell
    return text


def markdown_table(report: Report, decimals: int = 1) -> str:
    columns = report.domains + [AVG]
    max_n = max((c.n for row in report.rows.values() for c in row.values() if c.spread), default=0)
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in report.rows.items():
        lines.append(f"| {name} | " + " | ".join(format_cell(row.get(c), decimals, max_n) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _label(run: Run, varying: set[str]) -> str:
    keys = [k for k in LABEL_KEYS if k in run.hparams] + sorted(varying - set(LABEL_KEYS))
    return ", ".join(f"{k}={run.hparams[k]}" for k in keys if k in run.hparams)


def render_markdown(report: Report, title: str, decimals: int = 1, extra: Sequence[str] = ()) -> str:
    """The whole results.md; `extra`: lines of further sections (the learning check) after the verdicts."""
    counts = {s: sum(r.status == s for r in report.runs) for s in ("complete", "incomplete", "failed")}
    seeds = sorted({seed for (_, _, seed) in report.selections})
    out = [f"# {title}", "", markdown_table(report, decimals),
           f"Target-domain accuracy in %, mean ± sample std (ddof=1) over seeds {seeds}; no ± with one seed. "
           "Per (method, held-out domain, seed) the config with the best source-domain validation accuracy "
           "is used (training-domain validation; ties: hyper-parameters' canonical JSON, then run path). "
           f"{AVG}: per seed the mean over all {len(report.domains)} domains (seeds missing a domain are left "
           "out), then mean ± std over seeds. The teacher row is the CLIP teacher's zero-shot accuracy.", "",
           COVERS, "",
           f"Runs: {counts['complete']} complete, {counts['incomplete']} incomplete, {counts['failed']} failed.",
           ""]
    out += comparison_lines(compare(report), decimals)
    out += list(extra)
    if report.notes:
        out += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    out += ["## Incomplete or failed runs (not averaged)", ""]
    bad = [r for r in report.runs if r.status != "complete"]
    out += [f"- `{r.path}`: {r.status}: {r.reason}" for r in bad] or ["- none"]
    out += ["", "## Selected configs", "",
            "| method | domain | seed | candidates | source val % | target % | config | run |",
            "|---|---|---:|---:|---:|---:|---|---|"]
    complete = [r for r in report.runs if r.status == "complete"]
    for (method, domain, seed), sel in report.selections.items():
        keys = {k for r in complete if r.method == method for k in r.hparams}
        varying = {k for k in keys
                   if len({json.dumps(r.hparams.get(k), sort_keys=True, default=str)
                           for r in complete if r.method == method}) > 1}
        run = sel.run
        out.append(f"| {method} | {domain} | {seed} | {sel.candidates} | {100 * run.source_val_acc:.{decimals}f} "
                   f"| {100 * run.target_acc:.{decimals}f} | {_label(run, varying)} | `{run.path}` |")
    return "\n".join(out) + "\n"


def render_csv(report: Report) -> str:
    """One row per table row; for each column its mean, std (empty if none) and number of seeds, in %."""
    columns = report.domains + [AVG]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method"] + [f"{c}_{s}" for c in columns for s in ("mean", "std", "n")])
    for name, row in report.rows.items():
        cells = []
        for c in columns:
            cell = row.get(c)
            if cell is None or not cell.n:
                cells += ["", "", 0]
            else:
                cells += [f"{cell.mean:.4f}", "" if cell.std is None else f"{cell.std:.4f}", cell.n]
        writer.writerow([name] + cells)
    return buf.getvalue()


def metrics_dict(report: Report) -> dict:
    """Flat numbers for `dvc metrics show`: {row: {domain: mean %, avg: mean %}}, plus run counts."""
    out: dict = {}
    for name, row in report.rows.items():
        key = "teacher_zero_shot" if name == TEACHER else name
        out[key] = {("avg" if c == AVG else c): round(cell.mean, 4) for c, cell in row.items() if cell.n}
    out["n_runs"] = {s: sum(r.status == s for r in report.runs) for s in ("complete", "incomplete", "failed")}
    comparisons = compare(report)
    if comparisons:
        out[f"vs_{BASELINE}"] = comparison_metrics(comparisons)
    return out


def render_epochs(report: Report) -> str:
    """epochs.csv for `dvc plots`: every selected run's epochs.csv in one long table, a row per run and epoch.
    `run` is `method/domain/seed`, the cell the run was selected for: run folders are named by a config
    hash, the cell is the same in every experiment, so `dvc plots diff` lines the same curves up."""
    curves = [(key, sel.run.epochs) for key, sel in report.selections.items() if sel.run.epochs]
    columns = list(dict.fromkeys(k for _, rows in curves for row in rows for k in row if k != "epoch"))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["run", "method", "domain", "seed", "epoch", *columns])
    for (method, domain, seed), rows in curves:
        for row in (r for r in rows if math.isfinite(r["epoch"])):
            values = ["" if math.isnan(v) else repr(v) for v in (row.get(c, math.nan) for c in columns)]
            writer.writerow([f"{method}/{domain}/{seed}", method, domain, seed, int(row["epoch"]), *values])
    return buf.getvalue()


def _signed(x: float, decimals: int) -> str:
    return f"{x:+.{decimals}f}"


def _interval(p: verdicts.Paired, decimals: int) -> str:
    if p.n < 2:
        return "–"
    return f"[{_signed(p.low, decimals)}, {_signed(p.high, decimals)}]"


def comparison_lines(comparisons: Sequence[Comparison], decimals: int = 1, baseline: str = BASELINE) -> list[str]:
    """results.md's verdicts: one line per method on the average (what the CLI prints), then every column's
    per-seed differences, their mean and 95 % interval."""
    if not comparisons:
        return []
    b = baseline.upper()
    lines = [f"## Compared with {b} (paired over seeds)", "",
             f"Within a seed every method trains on the same batches, from the same store and starting backbone as "
             f"{b}, so each is compared with {b} seed by seed: the difference of the selected runs' target "
             f"accuracies (points), its mean over the seeds both have and a two-sided "
             f"{100 * verdicts.LEVEL:.0f} % confidence interval from Student's t with n − 1 degrees of freedom. "
             f"**better** or **worse** only when the interval excludes 0; otherwise no significant difference. "
             f"Fewer than 2 seeds in common: no verdict.", ""]
    for c in comparisons:
        p = c.avg
        if not p.n:
            lines.append(f"- {c.method} vs {baseline}: no {AVG} in common (a domain is missing), no verdict.")
            continue
        seeds = ", ".join(_signed(d, decimals) for d in p.diffs)
        head = f"- {c.method} vs {baseline}: {_signed(p.mean, decimals)} points on {AVG}"
        if p.verdict == verdicts.UNKNOWN:
            lines.append(f"{head} (one seed in common: {seeds}): no verdict, one seed measures no spread.")
            continue
        word = p.verdict if p.verdict == verdicts.NO_DIFFERENCE else f"**{p.verdict}**"
        lines.append(f"{head} (per seed {seeds}; {100 * verdicts.LEVEL:.0f} % CI {_interval(p, decimals)}, "
                     f"n = {p.n}): {word}.")
    seeds_header = sorted({s for c in comparisons for p in c.columns.values() for s in p.seeds})
    lines += ["", f"| method | column | difference per seed {seeds_header} | mean | "
                  f"{100 * verdicts.LEVEL:.0f} % CI | verdict |", "|---|---|---|---:|---|---|"]
    for c in comparisons:
        for column, p in c.columns.items():
            per_seed = ", ".join(f"{s}: {_signed(d, decimals)}" for s, d in zip(p.seeds, p.diffs, strict=True))
            lines.append(f"| {c.method} | {column} | {per_seed} | {_signed(p.mean, decimals)} | "
                         f"{_interval(p, decimals)} | {p.verdict} |")
    return lines + [""]


def comparison_metrics(comparisons: Sequence[Comparison]) -> dict:
    """metrics.json's `vs_erm`: per method the average's mean difference (points), interval, n and verdict,
    and the same per held-out domain."""
    def numbers(p: verdicts.Paired) -> dict:
        finite = p.n >= 2
        return {"mean": round(p.mean, 4), "ci_low": round(p.low, 4) if finite else None,
                "ci_high": round(p.high, 4) if finite else None, "n": p.n, "verdict": p.verdict}

    return {c.method: {**(numbers(c.avg) if c.avg.n else {"n": 0, "verdict": verdicts.UNKNOWN}),
                       "domains": {col: numbers(p) for col, p in c.columns.items() if col != AVG}}
            for c in comparisons}
