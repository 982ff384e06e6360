"""The table's numbers: mean ± std over seeds of the selected runs, and each method against the baseline.

A cell is mean ± sample standard deviation (ddof=1) over seeds of the selected runs' target accuracy, in %.
With a single seed the ± is omitted: a "± 0.0" would claim a spread that was never measured. Avg is, per
seed, the mean over all held-out domains (a seed missing a domain is left out of it), then mean ± std over
those seeds. The teacher row is one deterministic number per domain, with no spread.

Against the baseline (ERM) every method is compared seed by seed, per column, with the rule in `verdicts`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import verdicts
from .runs import Run
from .selection import Selection, select

TEACHER = "teacher (zero-shot)"
AVG = "Avg"


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


BASELINE = "erm"  # the row every other method is compared with, seed by seed


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
