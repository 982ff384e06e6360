"""Distill runs -> the paper-style results table (docs/method.md, "Model selection").

Selection is training-domain validation. `distill` already keeps, inside one run, the epoch with the best
source-validation accuracy; here, within each (method, target domain, seed), the run - one point of the
swept grid - with the highest `source_val_acc` is chosen. The target accuracy never takes part in the
choice. Exact ties go to the run whose hyper-parameters (canonical JSON) sort first, then to its path, so
the choice does not depend on the order in which folders are found.

A cell is mean ± sample standard deviation (ddof=1) over seeds of the chosen runs' target accuracy, in %.
With a single seed the ± is omitted: a "± 0.0" would claim a spread that was never measured.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import verdicts

TEACHER = "teacher (zero-shot)"
AVG = "Avg"
REQUIRED = ("method", "target_domain", "seed", "source_val_acc", "target_acc")
# Resolved-config keys that say where or how fast a run went, or which cell it is in - not what it learnt.
NOT_HPARAMS = {"method", "target_domain", "target", "seed", "out", "work", "store", "device", "workers",
               "threads", "num_workers", "scheduler", "progress", "resume"}
# Shown in every "selected config" label; keys that vary between a method's runs are added to them.
LABEL_KEYS = ("student", "temperature", "w_kd", "w_ce", "w_dist", "lr", "epochs")


@dataclass(frozen=True)
class Run:
    path: Path
    status: str  # "complete" | "incomplete" | "failed"
    reason: str = ""
    method: str = ""
    target: str = ""
    seed: int = 0
    source_val_acc: float = math.nan
    target_acc: float = math.nan
    teacher_target_acc: float | None = None
    hparams: dict = field(default_factory=dict)
    epochs: tuple[dict, ...] = ()
    epochs_problem: str = ""
    selected_epoch: int | None = None

    @property
    def hparams_key(self) -> str:
        return json.dumps(self.hparams, sort_keys=True, default=str)


@dataclass(frozen=True)
class Cell:
    values: tuple[float, ...]  # one per seed, in %
    spread: bool = True  # False for the teacher row: one deterministic number, no seeds

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if self.spread and self.n > 1 else None


@dataclass(frozen=True)
class Selection:
    run: Run
    candidates: int  # complete runs of that (method, target, seed) that competed


@dataclass
class Report:
    domains: list[str]
    rows: dict[str, dict[str, Cell]]  # row name -> column (domain or AVG) -> cell; insertion = display order
    selections: dict[tuple[str, str, int], Selection]
    runs: list[Run]
    notes: list[str]
    learning: dict | None = None  # the learning check's summary (`report --work`), else None
    # method -> column (domain or AVG) -> seed -> target accuracy in %: what the paired comparison reads
    per_seed: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- collect
def is_run_dir(path: Path) -> bool:
    # A report folder holds a metrics.json too (for `dvc metrics show`); its results.md marks it as not a run.
    return ((path / "metrics.json").is_file() or (path / "config.json").is_file()) \
        and not (path / "results.md").is_file()


def find_runs(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> list[Path]:
    """Run folders named in `paths`, searching directories recursively; sorted, each once."""
    skip = {Path(p).resolve() for p in exclude}
    found: dict[Path, Path] = {}

    def walk(d: Path) -> None:
        if d.resolve() in skip:
            return
        if is_run_dir(d):
            found.setdefault(d.resolve(), d)
            return  # runs do not nest; do not descend into checkpoints/
        for child in sorted(d.iterdir()):
            if child.is_dir() and not child.name.startswith("."):
                walk(child)

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"run or folder not found: {p}")
        if not p.is_dir():
            raise UserError(f"not a run folder: {p} (give a run folder or a folder of runs)")
        before = len(found)
        walk(p)
        if len(found) == before and not is_run_dir(p):
            raise UserError(f"no runs found under {p} (a run folder holds metrics.json or config.json)")
    return sorted(found.values(), key=str)


def _fraction(metrics: dict, key: str) -> float:
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} is not a finite number: {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{key}={value!r} is outside [0, 1] (accuracies are fractions)")
    return float(value)


def _hparams(metrics: dict) -> dict:
    """Everything that defines the config apart from the cell it belongs to (method, target, seed)."""
    out = {k: metrics[k] for k in ("student", "temperature", "lr", "epochs", "text_ensemble") if k in metrics}
    weights = metrics.get("weights")
    if isinstance(weights, dict):
        out.update(weights)

    def flatten(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                flatten(f"{prefix}.{k}" if prefix else str(k), v)
        elif prefix.rsplit(".", 1)[-1] not in out and prefix.split(".")[0] not in NOT_HPARAMS:
            out[prefix] = value

    config = metrics.get("config")
    if isinstance(config, dict):
        flatten("", config)
    return out


def read_epochs(path: Path) -> tuple[dict, ...]:
    """epochs.csv rows with numeric values (empty cells -> NaN); raises ValueError when unreadable."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "epoch" not in rows[0]:
        raise ValueError("no 'epoch' column")
    return tuple({k: float(v) if v not in ("", None) else math.nan for k, v in r.items() if k} for r in rows)


def load_run(path: str | Path) -> Run:
    """Read one run folder. Problems make it incomplete or failed, never an exception."""
    path = Path(path)
    metrics_path = path / "metrics.json"
    if not metrics_path.is_file():
        return Run(path, "incomplete", "no metrics.json (not finished)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return Run(path, "failed", f"metrics.json unreadable: {e}")
    if not isinstance(metrics, dict):
        return Run(path, "failed", "metrics.json is not a JSON object")
    status = metrics.get("status")
    if status != "complete":
        if status in ("failed", "error"):
            return Run(path, "failed", str(metrics.get("error") or f"status {status!r}"))
        return Run(path, "incomplete", f"status {status!r}")
    try:
        missing = [k for k in REQUIRED if k not in metrics]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        seed = metrics["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed is not an integer: {seed!r}")
        source_val, target = _fraction(metrics, "source_val_acc"), _fraction(metrics, "target_acc")
        teacher = _fraction(metrics, "teacher_target_acc") if metrics.get("teacher_target_acc") is not None \
            else None
    except ValueError as e:
        return Run(path, "failed", f"metrics.json: {e}")
    epochs: tuple[dict, ...] = ()
    problem = ""
    try:
        epochs = read_epochs(path / "epochs.csv")
    except FileNotFoundError:
        problem = "no epochs.csv"
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        problem = f"epochs.csv unreadable: {e}"
    selected = metrics.get("selected_epoch")
    return Run(path, "complete", method=str(metrics["method"]), target=str(metrics["target_domain"]),
               seed=seed, source_val_acc=source_val, target_acc=target, teacher_target_acc=teacher,
               hparams=_hparams(metrics), epochs=epochs, epochs_problem=problem,
               selected_epoch=selected if isinstance(selected, int) and not isinstance(selected, bool) else None)


# ------------------------------------------------------------------------------------- select, aggregate
def select(runs: Iterable[Run]) -> dict[tuple[str, str, int], Selection]:
    """Per (method, target, seed): the complete run with the best source-validation accuracy."""
    cells: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    for r in runs:
        if r.status == "complete":
            cells[(r.method, r.target, r.seed)].append(r)
    return {key: Selection(min(group, key=lambda r: (-r.source_val_acc, r.hparams_key, str(r.path))),
                           len(group))
            for key, group in sorted(cells.items())}


def build_report(runs: Sequence[Run], methods: Sequence[str] = (), teacher_row: bool = True) -> Report:
    """Aggregate selected runs into rows; `methods` fixes the row order (others follow, sorted)."""
    complete = [r for r in runs if r.status == "complete"]
    selections = select(complete)
    domains = sorted({r.target for r in complete})
    present = sorted({r.method for r in complete})
    order = [m for m in methods if m in present] + [m for m in present if m not in methods]
    notes = [f"no complete run for method {m!r} given in report.methods" for m in methods if m not in present]
    rows: dict[str, dict[str, Cell]] = {}
    per_seed: dict[str, dict[str, dict[int, float]]] = {}

    if teacher_row:
        per_domain: dict[str, list[float]] = defaultdict(list)
        for r in complete:
            if r.teacher_target_acc is not None:
                per_domain[r.target].append(100.0 * r.teacher_target_acc)
        row = {d: Cell((float(np.mean(v)),), spread=False) for d, v in sorted(per_domain.items())}
        for d, v in sorted(per_domain.items()):
            if max(v) - min(v) > 1e-6:
                notes.append(f"teacher accuracy on {d} differs between runs ({min(v):.2f}-{max(v):.2f}%): "
                             "runs from different stores? the row shows their mean")
        if row:
            if len(row) == len(domains):
                row[AVG] = Cell((float(np.mean([row[d].mean for d in domains])),), spread=False)
            rows[TEACHER] = row

    for method in order:
        by_seed: dict[int, dict[str, float]] = defaultdict(dict)
        for (m, d, seed), sel in selections.items():
            if m == method:
                by_seed[seed][d] = 100.0 * sel.run.target_acc
        seeds: dict[str, dict[int, float]] = {d: {s: acc[d] for s, acc in sorted(by_seed.items()) if d in acc}
                                              for d in domains}
        # Avg per seed only over complete sets of domains: a missing domain would bias the mean.
        seeds[AVG] = {s: float(np.mean([acc[d] for d in domains]))
                      for s, acc in sorted(by_seed.items()) if len(acc) == len(domains)}
        rows[method] = {c: Cell(tuple(v.values())) for c, v in seeds.items()}
        per_seed[method] = seeds
    for r in complete:
        if r.epochs_problem and (r.method, r.target, r.seed) in selections \
                and selections[(r.method, r.target, r.seed)].run is r:
            notes.append(f"no training curve for {r.path}: {r.epochs_problem}")
    return Report(domains, rows, selections, list(runs), notes, per_seed=per_seed)


# -------------------------------------------------------------------------------------- vs the baseline
BASELINE = "erm"


@dataclass(frozen=True)
class Comparison:
    """One method against the baseline, paired over seeds (`verdicts`), per held-out domain and on the
    average; the method's verdict is the average's."""

    method: str
    columns: dict[str, verdicts.Paired]  # domain or AVG -> the paired comparison, in table column order

    @property
    def avg(self) -> verdicts.Paired:
        return self.columns.get(AVG, verdicts.Paired((), ()))

    @property
    def verdict(self) -> str:
        return self.avg.verdict


def compare(report: Report, baseline: str = BASELINE) -> list[Comparison]:
    """Every method row against `baseline`, seed by seed (none when the baseline has no row)."""
    base = report.per_seed.get(baseline)
    if not base:
        return []
    columns = report.domains + [AVG]
    out = []
    for name, per_column in report.per_seed.items():
        if name == baseline:
            continue
        paired = {c: p for c, p in verdicts.compare_columns(per_column, base, columns).items() if p.n}
        if paired:
            out.append(Comparison(name, paired))
    return out


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


# ---------------------------------------------------------------------------------------------- render
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


def _mean_curve(runs: Sequence[Run], column: str) -> tuple[list[float], list[float]]:
    """Mean over runs of `column` per epoch number (runs of different length are averaged where present)."""
    per_epoch: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        for row in r.epochs:
            if math.isfinite(row.get(column, math.nan)):
                per_epoch[row["epoch"]].append(100.0 * row[column])
    xs = sorted(per_epoch)
    return xs, [float(np.mean(per_epoch[x])) for x in xs]


def render_png(report: Report) -> bytes:
    """results.png: `figure(report)` as PNG bytes."""
    buf = io.BytesIO()
    figure(report).savefig(buf, format="png", dpi=100, metadata={"Software": None})  # no version stamp: stable bytes
    return buf.getvalue()


def figure(report: Report):
    """Per-domain bars for every row, with error bars of ± the std over seeds (none for one seed or the
    teacher); below them, when there is a baseline, each method's paired difference to it with its 95 %
    interval (`verdicts`); then one panel of training curves per method (mean over seeds)."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg is used for PNG

    methods = [m for m in report.rows if m != TEACHER]
    comparisons = compare(report)
    ncols = max(1, min(3, len(methods)))
    nrows = math.ceil(len(methods) / ncols)
    top = 2 if comparisons else 1
    fig = Figure(figsize=(4.5 * ncols + 1, 4 + 3.2 * nrows + (3 if comparisons else 0)), layout="constrained")
    grid = fig.add_gridspec(top + nrows, ncols, height_ratios=[1.25] * top + [1.0] * nrows)
    bars = fig.add_subplot(grid[0, :])
    columns = report.domains + [AVG]
    width = 0.8 / max(1, len(report.rows))
    for i, (name, row) in enumerate(report.rows.items()):
        xs = [j + (i - (len(report.rows) - 1) / 2) * width for j in range(len(columns))]
        means = [row[c].mean if c in row and row[c].n else math.nan for c in columns]
        errs = [(row[c].std or 0.0) if c in row and row[c].n else 0.0 for c in columns]
        bars.bar(xs, means, width, yerr=errs if any(errs) else None, capsize=2, label=name)
    bars.set_xticks(range(len(columns)), columns)
    bars.set_ylabel("target accuracy (%)")
    bars.set_title("Held-out domain accuracy (selected by source validation; error bars: ± std over seeds)")
    bars.legend(fontsize="small", ncols=min(4, max(1, len(report.rows))))
    if comparisons:
        row_colors = {name: f"C{i % 10}" for i, name in enumerate(report.rows)}  # the bars' colours
        _difference_panel(fig.add_subplot(grid[1, :]), comparisons, columns, row_colors)
    colors = {d: f"C{i % 10}" for i, d in enumerate(report.domains)}
    for k, method in enumerate(methods):
        ax = fig.add_subplot(grid[top + k // ncols, k % ncols])
        for domain in report.domains:
            chosen = [s.run for (m, d, _), s in report.selections.items() if m == method and d == domain]
            for column, style in (("target_acc", "-"), ("source_val_acc", "--")):
                xs, ys = _mean_curve(chosen, column)
                if xs:
                    ax.plot(xs, ys, style, color=colors[domain],
                            label=f"{domain} {'target' if column == 'target_acc' else 'source val'}")
        ax.set_title(f"{method}: accuracy per epoch")
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        if ax.lines:
            ax.legend(fontsize="x-small")
    return fig


def _difference_panel(ax, comparisons: Sequence[Comparison], columns: Sequence[str], colors: dict[str, str]) -> None:
    """Each method's mean paired difference to the baseline per column, its 95 % interval as the error bar
    (none below 2 seeds), and the per-seed differences as dots; filled markers where the verdict is
    better/worse."""
    width = 0.8 / max(1, len(comparisons))
    for i, c in enumerate(comparisons):
        color = colors[c.method]
        offset = (i - (len(comparisons) - 1) / 2) * width
        xs, means, errs, filled = [], [], [], []
        for j, column in enumerate(columns):
            p = c.columns.get(column)
            if p is None:
                continue
            xs.append(j + offset)
            means.append(p.mean)
            errs.append(p.half_width if p.n >= 2 else 0.0)
            filled.append(p.verdict in (verdicts.BETTER, verdicts.WORSE))
            ax.plot([j + offset] * p.n, p.diffs, ".", color=color, alpha=0.4)
        ax.errorbar(xs, means, yerr=errs, fmt="none", ecolor=color, capsize=3, label=f"{c.method} − {BASELINE}")
        ax.scatter(xs, means, color=[color if f else "white" for f in filled], edgecolors=color, zorder=3)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(columns)), columns)
    ax.set_ylabel("difference (points)")
    ax.set_title(f"Paired difference to {BASELINE} per seed (dots), mean and {100 * verdicts.LEVEL:.0f} % "
                 "interval (filled: the interval excludes 0)")
    ax.legend(fontsize="small")
