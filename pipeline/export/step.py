"""`export`: a run's selected student -> a timm model folder (or one per rise-mix student), its fold checked."""

from __future__ import annotations

import logging
from pathlib import Path

from .fold import check_fold, fold_student
from .runs import load_run
from .timm_folder import TEXT_ENSEMBLE_LEFT_OUT, write_export

log = logging.getLogger(__name__)


def export(run_path: str | Path, work: str | Path, out: str | Path) -> dict:
    """Fold each student of RUN's selected epoch into its timm architecture, check that the folded logits
    equal the student's, and write OUT. Returns the export's provenance (config.json's `rise_pipeline`)."""
    run = load_run(run_path, work)
    models, diffs = [], []
    for student in run.students:
        model = fold_student(student)
        diffs.append(check_fold(student, model, run.image_size))
        models.append(model)
    info = write_export(run, models, out, diffs)
    what = f"{len(models)} timm folders (student-K) summed by softmax" if run.is_mix else "a timm model folder"
    log.info("exported %s (epoch %d, %s) to %s as %s; folded logits differ from the student's by at most %.2g",
             run.path, run.epoch, run.config["student"], out, what, max(diffs))
    if run.text_ensemble:
        log.warning("note: %s", TEXT_ENSEMBLE_LEFT_OUT)
    return info
