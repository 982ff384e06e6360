"""`rise-pipeline export`: a run's student as a plain timm model folder (pipeline.export)."""

from __future__ import annotations

from pathlib import Path

import click

WORK_HELP = ("Work folder the run was distilled from: its teacher store holds the class names (and the text "
             "embeddings of a --text-ensemble run).")


@click.command(context_settings={"max_content_width": 100})
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder to write: config.json + model.safetensors + README.md (replaced if it holds an "
                   "earlier export).")
@click.option("--work", type=click.Path(path_type=Path), default=Path("data/work"), show_default=True,
              help=WORK_HELP)
def export(run, out, work):
    """Write RUN's selected student (checkpoints/best.pt) as a timm model folder.

    RUN is a run folder (a group's member: data/runs/<domain>-<seed>/<method>-<hash>). The projector and
    classifier fold exactly into the architecture's own classifier; the folder loads with
    timm.create_model("local-dir:OUT", pretrained=True) without rise-pipeline, its pretrained config holds
    label_names and the run's eval preprocessing. A rise-mix run writes OUT/student-K/ per student and
    OUT/ensemble.json (sum of softmax outputs); a --text-ensemble run exports its classifier alone (said in
    one line).
    """
    from pipeline.export.step import export as run_export

    run_export(run, work, out)
