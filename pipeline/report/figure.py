"""results.png: the table as bars, the paired differences to the baseline, and the training curves."""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from . import verdicts
from .runs import Run
from .statistics import AVG, BASELINE, TEACHER, Comparison, Report, compare


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
