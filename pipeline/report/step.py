"""The report step: distill runs -> results.md / results.csv / results.png / metrics.json / epochs.csv.

Reading runs (`runs`), selection (`selection`), aggregation (`statistics`) and rendering (`render`,
`figure`) live beside it; this module declares the config (which checks itself), picks the runs and writes
the five files atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import field
from ..errors import UserError
from ..io import write_bytes, write_json, write_text
from . import learning
from .figure import render_png
from .render import metrics_dict, render_csv, render_epochs, render_markdown
from .runs import Run, find_runs, load_run
from .statistics import Report, build_report


@dataclass
class ReportConfig:
    title: str = field("Held-out domain accuracy (%)", "Heading of results.md.")
    decimals: int = field(1, "Digits after the decimal point in the Markdown table.")
    methods: list[str] = field([], "Row order of the methods; methods not listed follow, sorted by name.")
    teacher_row: bool = field(True, "Add the teacher's zero-shot accuracy as a reference row.")

    def __post_init__(self) -> None:
        if self.decimals < 0:
            raise UserError(f"report.decimals must be >= 0, got {self.decimals}")


def _stale(run_dir: Path, expected: dict) -> str | None:
    """Why the complete metrics.json in `run_dir` is not the planned member's result (its recorded config
    differs: a retrain under --restart-stale was killed and left its predecessor's result), or None."""
    from ..distill.config import result_differences

    try:
        recorded = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None  # load_run reports it
    if not isinstance(recorded, dict) or recorded.get("status") != "complete":
        return None
    config = recorded.get("config")
    if not isinstance(config, dict):
        return "metrics.json records no config to compare with the plan's"
    if not expected.get("checkpoint_sha256") and expected.get("checkpoint"):
        # the weights file is not here to pin: compare everything else
        config = {k: v for k, v in config.items() if k not in ("checkpoint", "checkpoint_sha256")}
        expected = {k: v for k, v in expected.items() if k not in ("checkpoint", "checkpoint_sha256")}
    diff = result_differences(config, expected)
    if diff:
        return (f"metrics.json records another config than the sweep plan's ({', '.join(diff[:4])}"
                f"{', ...' if len(diff) > 4 else ''}): not averaged (an unfinished retrain?)")
    return None


def run(cfg: ReportConfig, paths: list[Path], out: Path, only: dict[str, dict] | None = None,
        work: Path | None = None, base: Path | None = None) -> Report:
    """Select, aggregate and write the five files. `only`: `<group>/<member>` -> the result config its run
    must record (a sweep plan's `expected_runs`); other folders are left out, and a folder whose metrics.json
    records another config is listed, never averaged. `work`: the work folder the runs were trained from,
    which adds the learning check (`learning`: did each selected run fit its source domains?). `base`: run
    paths are shown relative to it (the params file's folder, where DVC runs), so the files do not depend
    on the folder the command ran from."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out must be a folder: {out} is a file")
    found = find_runs(paths, exclude=[out])
    if only is not None:
        # Runs of an earlier sweep may still sit in data/runs (persisted: nothing deletes a dropped group's
        # output); they must not compete in the selection.
        found = [p for p in found if "/".join(Path(p).parts[-2:]) in only]
        if not found:
            raise UserError(f"none of the current sweep's runs ({len(only)} expected, e.g. {sorted(only)[0]}) is "
                            f"under {', '.join(map(str, paths))}; run `dvc repro` or `rise-pipeline sweep run` first")
    runs = []
    for p in found:
        why = _stale(Path(p), only["/".join(Path(p).parts[-2:])]) if only is not None else None
        runs.append(Run(Path(p), "incomplete", why) if why else load_run(p))
    if base is not None:
        runs = [dataclasses.replace(r, path=Path(os.path.relpath(Path(r.path).resolve(), Path(base).resolve())))
                for r in runs]
    result = build_report(runs, methods=cfg.methods, teacher_row=cfg.teacher_row)
    if not result.rows:
        bad = len(runs) - sum(r.status == "complete" for r in runs)
        raise UserError(f"no complete runs among {len(runs)} found ({bad} incomplete or failed); "
                        f"see e.g. {runs[0].path}: {runs[0].reason}")
    extra: list[str] = []
    metrics = metrics_dict(result)
    if work is not None:
        teacher = learning.read_teacher_val(work)
        checks = learning.check(result, teacher)
        extra = learning.render(checks, teacher, cfg.decimals)
        result.learning = metrics["learning_check"] = learning.summary(checks)
    write_text(out / "results.md", render_markdown(result, cfg.title, cfg.decimals, extra))
    write_text(out / "results.csv", render_csv(result))
    write_bytes(out / "results.png", render_png(result))
    write_json(out / "metrics.json", metrics)
    write_text(out / "epochs.csv", render_epochs(result))
    return result
