"""`rise-pipeline predict`: top-k classes of image files (pipeline.export.predict)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from pipeline.devices import DEVICES
from pipeline.errors import UserError
from stages.export import WORK_HELP

log = logging.getLogger("stages.predict")


@click.command(context_settings={"max_content_width": 100})
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Write the CSV here instead of stdout.")
@click.option("-k", "--top-k", "k", type=int, default=5, show_default=True, help="Classes per image (at most all).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images scored at once.")
@click.option("--work", type=click.Path(path_type=Path), default=Path("data/work"), show_default=True,
              help=WORK_HELP + " Only for a run folder.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
def predict(model, images, out, k, batch_size, work, device):
    """Top-k class names and probabilities of IMAGES (files or folders, searched recursively) as CSV.

    MODEL is a run folder (scored exactly as distill evaluated it) or a folder written by `rise-pipeline
    export` (scored with timm's eval transform). Columns: path, class_1, prob_1, ..., error. A file that
    cannot be read or decoded is one row with its reason in `error`, never a crash.
    """
    from pipeline.export.models import open_model
    from pipeline.export.predict import list_images, predict_csv
    from pipeline.io import write_text

    if k < 1 or batch_size < 1:
        raise UserError("--top-k and --batch-size must be >= 1")
    scorer = open_model(model, work, device)
    files = list_images(images)
    if not files:
        raise UserError("no image files found under " + ", ".join(map(str, images)))
    log.info("scoring %d file(s) with %s", len(files), scorer.description)
    text, bad = predict_csv(scorer, files, k, batch_size)
    if out is None:
        sys.stdout.write(text)
    else:
        write_text(out, text)
    if bad:
        log.warning("%d of %d file(s) could not be read: see the error column", bad, len(files))
