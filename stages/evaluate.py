"""`rise-pipeline evaluate`: per-domain accuracy of a run or an exported model on a dataset (pipeline.export)."""

from __future__ import annotations

from pathlib import Path

import click

from pipeline.devices import DEVICES
from stages.export import WORK_HELP


@click.command(context_settings={"max_content_width": 100})
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--data-root", type=click.Path(path_type=Path), required=True,
              help="DomainBed folder DATA/<domain>/<class>/<image>, or a .csv/.jsonl index (path, domain, class).")
@click.option("--domains", default=None, metavar="A,B",
              help="Domains to evaluate (comma-separated); all of DATA's by default.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for evaluation.json, per_domain.csv, confusion.csv and confusion.png.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images scored at once.")
@click.option("--work", type=click.Path(path_type=Path), default=Path("data/work"), show_default=True,
              help=WORK_HELP + " Only for a run folder.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
def evaluate(model, data_root, domains, out, batch_size, work, device):
    """Accuracy of MODEL on every image of each domain of DATA, with a confusion matrix per domain.

    MODEL is a run folder (scored as distill scored it) or a folder written by `rise-pipeline export`.
    Classes are matched by name (case, spaces, underscores aside); images of classes the model does not
    know are left out and named in one line. Every image of a domain counts, both splits: on a run's
    held-out domain this is the run's target_acc. Unreadable files are skipped and listed.
    """
    from pipeline.errors import UserError
    from pipeline.export.evaluate import evaluate as run_evaluate
    from pipeline.export.evaluate import summary_lines, write_outputs
    from pipeline.export.models import open_model

    if batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    wanted = [d.strip() for d in domains.split(",") if d.strip()] if domains else None
    scorer = open_model(model, work, device)
    result = run_evaluate(scorer, data_root, wanted, batch_size)
    for line in summary_lines(result):
        click.echo(line)
    if out is not None:
        write_outputs(result, out)
