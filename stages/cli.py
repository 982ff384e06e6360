"""`rise-pipeline` entry point. Each stage module contributes one click command."""

from __future__ import annotations

import importlib
import logging
import sys
import time

import click

from pipeline import __version__
from pipeline.errors import UserError

# name -> (module, attribute, one-line help). Imported lazily so `--help` stays fast and one stage's
# heavy imports (torch, open_clip, dvc) do not slow the others.
COMMANDS = {
    "extract": ("stages.extract", "extract", "Stage one: shard a dataset, run the CLIP teacher once into an HDF5 store."),
    "distill": ("stages.distill", "distill", "Stage two: train students (RISE, baselines) from the cached store: one, a group, or the sweep."),
    "report": ("stages.report", "report", "Paper-style table of runs, selected by training-domain validation."),
    "world": ("stages.world", "world", "Generate the demo world (embedded default dataset)."),
    "pretrain-teacher": ("stages.pretrain_teacher", "pretrain_teacher", "Pretrain the demo world's small CLIP teacher."),
    "pretrain-student": ("stages.pretrain_student", "pretrain_student",
                         "Pretrain the demo student's backbone (its stand-in for ImageNet weights)."),
    "preset": ("stages.preset", "preset", "Switch params.yaml to a real dataset's RISE preset."),
    "export": ("stages.export", "export", "Write a run's student as a plain timm model folder (loads without this tool)."),
    "predict": ("stages.predict", "predict", "Top-k classes of images with a run folder or an exported model."),
    "evaluate": ("stages.evaluate", "evaluate",
                 "Per-domain accuracy and confusion of a run or exported model on any DomainBed folder."),
    "sweep": ("stages.sweep", "sweep", "Run the sweep's distill groups on dask (run), or a named grid with DVC (grid)."),
}


# How `--help` lists them: the real commands in the order a project uses them, then the demo's own stages
# (the embedded demo world and its small teacher and student), which a real dataset never needs.
REAL_COMMANDS = ("extract", "distill", "report", "sweep", "preset", "export", "predict", "evaluate")
DEMO_COMMANDS = ("world", "pretrain-teacher", "pretrain-student")
VERBOSITY = "rise-pipeline.verbosity"  # ctx.meta key: -v minus -q, given before or after the command


def _add_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """-v / -q given after the command: added to those given before it (the group has set up logging by then)."""
    if value:
        ctx.meta[VERBOSITY] = ctx.meta.get(VERBOSITY, 0) + (value if param.name == "verbose" else -value)
        configure_logging(ctx.meta[VERBOSITY])


def _verbosity_options(command: click.Command) -> click.Command:
    """Let COMMAND (and a group's subcommands) take the global -v / -q too, unlisted: the top-level help
    lists them once."""
    names = {n for p in command.params for n in getattr(p, "opts", ())}
    if "--verbose" not in names:
        command.params += [click.Option([flag, name], count=True, expose_value=False, hidden=True,
                                        callback=_add_verbosity)
                           for flag, name in (("-v", "--verbose"), ("-q", "--quiet"))]
    for sub in getattr(command, "commands", {}).values():
        _verbosity_options(sub)
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return [*REAL_COMMANDS, *DEMO_COMMANDS]

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return _verbosity_options(getattr(importlib.import_module(module), attr))

    def format_commands(self, ctx, formatter):
        for title, names in (("Commands", REAL_COMMANDS), ("Demo commands", DEMO_COMMANDS)):
            with formatter.section(title):
                formatter.write_dl([(name, COMMANDS[name][2]) for name in names])


class _StderrHandler(logging.Handler):
    """Log records to whatever sys.stderr is *now* (test runners swap it), one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            sys.stderr.write(msg + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never crash a run
            self.handleError(record)


def configure_logging(verbosity: int) -> None:
    """The library logs (`logging.getLogger("pipeline...")`); the CLI decides what shows: INFO by default
    (one-line summaries), -v adds DEBUG, -q keeps warnings and errors only."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s" if verbosity <= 0 else "%(levelname)s %(name)s: %(message)s"))
    for name in ("pipeline", "stages"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rise-pipeline")
@click.option("-v", "--verbose", count=True,
              help="More detail on stderr (debug messages); also accepted after the command.")
@click.option("-q", "--quiet", count=True, help="Only warnings and errors on stderr; also accepted after the command.")
@click.pass_context
def cli(ctx, verbose, quiet):
    """Distil a CLIP teacher into small domain-generalising students (RISE), teacher run once.

    \b
    Typical order:
      rise-pipeline preset    point params.yaml at a real dataset (the demo world needs none)
      rise-pipeline extract   shard a dataset and cache the teacher's embeddings (once)
      rise-pipeline distill   train one student from the cache (many times, cheaply)
      rise-pipeline sweep     or: train the whole sweep (held-out domains x seeds) on dask
      rise-pipeline report    turn runs into the paper-style table
      rise-pipeline export    a run's student as a plain timm model (then predict, evaluate)
    `dvc repro` runs the whole chain from params.yaml (see README).
    """
    ctx.meta[VERBOSITY] = verbose - quiet
    configure_logging(verbose - quiet)


def main(argv=None) -> None:
    """Run the CLI; a UserError becomes one line on stderr and exit status 2, with no traceback.

    Each finished command reports its wall time on stderr, so `dvc repro` shows the time of every stage."""
    args = list(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    try:
        cli.main(args=args, prog_name="rise-pipeline", standalone_mode=False)
        command = next((a for a in args if a in COMMANDS), None)
        if command and not any(a in ("-h", "--help") for a in args):
            click.echo(f"[rise-pipeline {command}] done in {time.perf_counter() - start:.1f} s", err=True)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(2)
    except click.UsageError as e:
        # A bad flag is a user error like any other: one line (click's own is three).
        hint = f" (see rise-pipeline {e.ctx.info_name} --help)" if e.ctx is not None and e.ctx.parent else ""
        click.echo(f"error: {e.format_message()}{hint}", err=True)
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
