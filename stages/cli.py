"""`rise-pipeline` entry point. Each stage module contributes one click command."""

from __future__ import annotations

import importlib
import sys

import click

from pipeline import __version__
from pipeline.errors import UserError

# (command name, module, attribute). Imported lazily so `--help` stays fast and one stage's heavy
# imports (torch, open_clip, dvc) do not slow the others.
COMMANDS = {
    "extract": ("stages.extract", "extract"),
    "distill": ("stages.distill", "distill"),
    "report": ("stages.report", "report"),
    "world": ("stages.world", "world"),
    "pretrain-teacher": ("stages.teacher", "pretrain_teacher"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rise-pipeline")
def cli():
    """Distil a CLIP teacher into small domain-generalising students (RISE), teacher run once.

    \b
    Typical order:
      rise-pipeline extract   shard a dataset and cache the teacher's embeddings (once)
      rise-pipeline distill   train one student from the cache (many times, cheaply)
      rise-pipeline report    turn runs into the paper-style table
    `dvc repro` runs the whole chain from params.yaml (see README).
    """


def main(argv=None) -> None:
    """Run the CLI; a UserError becomes one line on stderr and exit status 2, with no traceback."""
    try:
        cli.main(args=argv, prog_name="rise-pipeline", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
