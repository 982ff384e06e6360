"""The shared test harness.

- `cli`: the one way tests drive `rise-pipeline`. `cli(*args)` runs the real entry point in a separate
  process (`python -m stages.cli ARGS`); `cli(*args, in_process=True)` calls `stages.cli.main(ARGS)` in this
  process, which is faster for tests that only check exit statuses and messages. Either way the answer is a
  `Result(code, out, err)`, the same for both (tests/test_harness.py; only `--help` may wrap to this
  terminal's width in-process). A separate process is what a test needs for environment variables (`env=`),
  a hard kill (`prelude=`: code run before the entry point, e.g. a patch that SIGKILLs mid-run; the code is
  then -9) or a time limit.
- `distill_work(views)`: a tiny real work folder (shards + teacher store) per K, built once per session
  (tests/distill_fixtures.py); tests that modify one copy it first.
- `@pytest.mark.slow`: the long end-to-end tests; `pytest -m "not slow"` leaves them out, the default run
  (`make test`, CI) keeps them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import pytest

from tests import distill_fixtures

REPO = Path(__file__).resolve().parents[1]
# The loggers stages.cli.configure_logging sets up; an in-process run leaves them as it found them.
_CLI_LOGGERS = ("pipeline", "stages")
# What a fresh interpreter does not show (its default warning filters, outside __main__).
_IGNORED_BY_DEFAULT = (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning)


class Result(NamedTuple):
    """What a `rise-pipeline` run left: exit status (negative: killed by that signal), stdout, stderr."""

    code: int
    out: str
    err: str


def run_cli(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None, timeout: float = 300,
            in_process: bool = False, prelude: str | None = None) -> Result:
    """`rise-pipeline ARGS` through the real entry point; see the module docstring. `env` (the child's whole
    environment, as for subprocess) and `prelude` need a separate process; `timeout` (seconds) applies to one."""
    args = [str(a) for a in args]
    if in_process:
        if env is not None or prelude is not None:
            raise ValueError("env= and prelude= need a separate process (in_process=False)")
        return _in_process(args)
    if prelude is None:
        argv = [sys.executable, "-m", "stages.cli", *args]
    else:
        entry = "\nimport sys\nfrom stages.cli import main\nmain(sys.argv[1:])\n"
        argv = [sys.executable, "-c", prelude + entry, *args]
    r = subprocess.run(argv, cwd=REPO, env=None if env is None else dict(env), capture_output=True, text=True,
                       timeout=timeout)
    return Result(r.returncode, r.stdout, r.stderr)


@contextlib.contextmanager
def _logging_kept(*names: str):
    """These loggers (handlers, level, propagate) as they were, afterwards ("" is the root logger)."""
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    try:
        yield
    finally:
        for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            lg.handlers[:], lg.propagate = handlers, propagate
            lg.setLevel(level)


def _in_process(args: list[str]) -> Result:
    """`stages.cli.main(args)` with what a separate process would print captured here: stdout, stderr (our
    loggers, other libraries' warnings through logging's last resort, Python warnings under the interpreter's
    default filters), and the exit status it would have (the SystemExit code; 1 and the traceback on stderr
    for an uncaught exception). Logging and warnings are left as they were found."""
    from stages.cli import main

    streams = [io.TextIOWrapper(io.BytesIO(), encoding="utf-8", newline="", write_through=True) for _ in "oe"]
    code = 0
    with _logging_kept("", *_CLI_LOGGERS), warnings.catch_warnings(record=True) as caught, \
            contextlib.redirect_stdout(streams[0]), contextlib.redirect_stderr(streams[1]):
        logging.getLogger().handlers[:] = []  # pytest's set aside: other loggers reach logging.lastResort
        warnings.resetwarnings()
        for category in _IGNORED_BY_DEFAULT:
            warnings.simplefilter("ignore", category)
        try:
            main(args)
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except Exception:  # noqa: BLE001 - reported as the interpreter would, for the test to assert on
            traceback.print_exc()
            code = 1
        for w in caught:
            sys.stderr.write(warnings.formatwarning(w.message, w.category, w.filename, w.lineno, w.line))
    out, err = (s.buffer.getvalue().decode("utf-8") for s in streams)
    return Result(code, out, err)


@pytest.fixture(autouse=True)
def _logging_per_test():
    """Each test leaves the CLI's loggers as it found them, so no test depends on which ran before it: once
    stages.cli's group has configured them (click's CliRunner does), library messages reach stderr, which
    they do not otherwise. The root logger is pytest's to manage, per test phase."""
    with _logging_kept(*_CLI_LOGGERS):
        yield


@pytest.fixture(scope="session")
def cli():
    """`cli(*args, env=None, timeout=300, in_process=False, prelude=None) -> Result(code, out, err)`."""
    return run_cli


@pytest.fixture(scope="session", autouse=True)
def _distill_work_session(tmp_path_factory):
    """Where `distill_fixtures.shared_work` builds its folders this session, and their removal at the end
    (autouse, so modules that call `shared_work` directly get the same folders)."""
    distill_fixtures.start_session(tmp_path_factory.mktemp)
    yield
    distill_fixtures.end_session()


@pytest.fixture(scope="session")
def distill_work():
    """`distill_work(views) -> Path`: the session's work folder for K=views (built on first use). Shared by
    every test: copy it before changing anything in it."""
    return distill_fixtures.shared_work


@contextlib.contextmanager
def killed_in_epoch_2():
    """Within the block, every distill run (alone, group member or mix) is interrupted as Ctrl-C / SIGINT
    would be, at the start of its second epoch, after the first epoch's checkpoint; the block expects it."""
    from pipeline.distill.trainer import Trainer

    real = Trainer.begin_epoch

    def begin_epoch(self):
        if len(self.history) == 1:
            raise KeyboardInterrupt
        return real(self)

    Trainer.begin_epoch = begin_epoch
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        Trainer.begin_epoch = real
