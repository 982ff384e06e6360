"""Did the students learn? The bar a selected run must clear before its target accuracy means anything.

A student that has not fitted its own source domains compares noise: its held-out accuracy moves with the
seed and the machine, not with the method. So, at each selected run's selected epoch:

1. its source-validation accuracy is at least the teacher's zero-shot accuracy on the *same* source
   domains' validation images minus `MARGIN` (10 points), averaged the way the run averages them
   (`distill.val_average`: the mean over source domains, or pooled over their images); and
2. its training cross-entropy (`epochs.csv` `loss_ce`: the epoch's mean over its training batches, whatever
   the method's loss) is below ln(C) / 2, half of a uniform guess's.

The teacher's accuracies come from the embed step's `WORK/teacher_report.json` (zero-shot per domain and
split, the same rule as distill's teacher baseline) and C from `WORK/shards/index.json`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .. import layout
from ..errors import UserError
from .runs import Run
from .statistics import Report

MARGIN = 0.10  # source-val accuracy may sit this far (a fraction) below the teacher's


@dataclass(frozen=True)
class TeacherVal:
    """The teacher's zero-shot accuracy on each domain's validation split, and the number of classes."""

    per_domain: dict[str, tuple[float, int]]  # domain -> (accuracy, images)
    n_classes: int

    def source_val(self, target: str, average: str = "mean") -> float:
        """The teacher's accuracy on the validation images of every domain but `target`."""
        sources = [v for d, v in sorted(self.per_domain.items()) if d != target]
        if not sources:
            return math.nan
        if average == "pooled":
            return sum(acc * n for acc, n in sources) / max(1, sum(n for _, n in sources))
        return sum(acc for acc, _ in sources) / len(sources)


def read_teacher_val(work: str | Path) -> TeacherVal:
    """WORK/teacher_report.json (per-domain val accuracy) and WORK/shards/index.json (the classes)."""
    work = Path(work)
    try:
        report = json.loads(layout.teacher_report(work).read_text())
        classes = json.loads(layout.shard_index(work).read_text())["classes"]
        per_domain = {d: (float(s["val"]["acc"]), int(s["val"]["n"])) for d, s in report["per_domain"].items()
                      if s.get("val", {}).get("n")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"--work {work}: cannot read the teacher's validation accuracies and the classes "
                        f"({layout.teacher_report(work).relative_to(work)}, "
                        f"{layout.shard_index(work).relative_to(work)}): {e}") from None
    return TeacherVal(per_domain, len(classes))


@dataclass(frozen=True)
class Check:
    run: Run
    epoch: int | None
    source_val: float
    teacher_source_val: float
    train_ce: float
    ce_limit: float
    missing: str = ""  # why the selected epoch's training CE could not be read ("" when it was)

    @property
    def val_ok(self) -> bool:
        return self.source_val >= self.teacher_source_val - MARGIN - 1e-9  # at the bar counts (float rounding)

    @property
    def ce_ok(self) -> bool:
        return self.train_ce < self.ce_limit  # False for NaN: a missing or diverged curve never passes

    @property
    def passed(self) -> bool:
        return self.val_ok and self.ce_ok

    @property
    def problems(self) -> list[str]:
        """Why the run fails the bar, in words for results.md (empty when it passes)."""
        out = []
        if not self.val_ok:
            out.append("source val" if math.isfinite(self.teacher_source_val)
                       else "no teacher accuracy for its source domains")
        if self.missing:
            out.append(self.missing)
        elif not math.isfinite(self.train_ce):
            out.append("train CE is not a number (diverged?)")
        elif not self.ce_ok:
            out.append("train CE")
        return out


def check(report: Report, teacher: TeacherVal) -> list[Check]:
    """One check per selected run, in the report's selection order."""
    limit = math.log(teacher.n_classes) / 2
    out = []
    for sel in report.selections.values():
        run = sel.run
        row = next((r for r in run.epochs if run.selected_epoch is not None and r.get("epoch") == run.selected_epoch),
                   None)
        if run.selected_epoch is None:
            missing = "metrics.json names no selected epoch"
        elif not run.epochs:
            missing = run.epochs_problem or "no epochs.csv"
        elif row is None:
            missing = f"epoch {run.selected_epoch} is not in epochs.csv"
        elif "loss_ce" not in row:
            missing = "epochs.csv has no loss_ce column"
        else:
            missing = ""
        average = str(run.hparams.get("val_average", "mean"))
        out.append(Check(run, run.selected_epoch, run.source_val_acc, teacher.source_val(run.target, average),
                         float((row or {}).get("loss_ce", math.nan)), limit, missing))
    return out


def summary(checks: list[Check]) -> dict:
    """For metrics.json: how many selected runs pass, and the bar."""
    return {"passed": sum(c.passed for c in checks), "runs": len(checks),
            "margin_points": round(100 * MARGIN, 1), "ce_limit": round(checks[0].ce_limit, 4) if checks else None}


def render(checks: list[Check], teacher: TeacherVal, decimals: int = 1) -> list[str]:
    """results.md's section: the bar, the count, one row per selected run."""
    limit = math.log(teacher.n_classes) / 2
    passed = sum(c.passed for c in checks)
    verdict = "every selected run passes" if passed == len(checks) else \
        f"**{len(checks) - passed} of {len(checks)} selected runs fail it: their target accuracies compare noise**"
    lines = ["## Did the students learn?", "",
             f"The bar, at each selected run's selected epoch: source-validation accuracy at least the teacher's "
             f"zero-shot accuracy on the same source domains' validation images minus {100 * MARGIN:.0f} points, "
             f"and training cross-entropy (the epoch's mean, `epochs.csv` loss_ce) below ln({teacher.n_classes})/2 "
             f"= {limit:.2f}. {passed} of {len(checks)} pass: {verdict}.", "",
             "| method | domain | seed | epoch | source val % | teacher source val % | train CE | bar |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for c in checks:
        why = "pass" if c.passed else f"FAIL ({', '.join(c.problems)})"
        ce = f"{c.train_ce:.3f}" if math.isfinite(c.train_ce) else "–"
        lines.append(f"| {c.run.method} | {c.run.target} | {c.run.seed} | {c.epoch if c.epoch is not None else '–'} "
                     f"| {100 * c.source_val:.{decimals}f} | {100 * c.teacher_source_val:.{decimals}f} | {ce} | {why} |")
    return lines + [""]
