"""The `cli` fixture of tests/conftest.py: a run in this process reports what the same run in a separate
process does (exit status, stdout, stderr: one-line errors, tracebacks, warnings), and leaves this process's
logging as it found it, so tests may use either."""

from __future__ import annotations

import logging
import re
import shutil

import pytest

# A report step that warns, then fails with an exception no one catches.
CRASHING_RUN = """
import warnings
def run(*args, **kwargs):
    warnings.warn("a library warning", UserWarning)
    raise RuntimeError("boom")
"""

TINY_WORLD = "world:\n  per_cell: 1\n  image_size: 16\n  classes: [fish]\n  domains: [photo]\n"


def _without_timing(r):
    """The result with wall times ("6.6 s", which differ between any two runs) blanked out."""
    return r._replace(err=re.sub(r"\b\d+\.\d+ s\b", "(time) s", r.err))


@pytest.mark.parametrize("case", ["version", "user-error", "usage-error", "success"])
def test_in_process_equals_separate_process(cli, tmp_path, case):
    params = tmp_path / "params.yaml"
    params.write_text(TINY_WORLD)
    args = {
        "version": ["--version"],
        "user-error": ["report", tmp_path / "missing", "--out", tmp_path / "out"],
        "usage-error": ["report", tmp_path, "--out", tmp_path / "out", "--decimals", "many"],
        "success": ["world", "--out", tmp_path / "world", "--params", params],
    }[case]
    separate = cli(*args)
    if case == "success":  # the second run writes the same world again, not into the first one's
        shutil.rmtree(tmp_path / "world")
    assert separate.code == {"user-error": 2, "usage-error": 2}.get(case, 0), separate.err
    assert _without_timing(cli(*args, in_process=True)) == _without_timing(separate)


def test_crash_and_warning_show_as_in_a_separate_process(cli, tmp_path, monkeypatch):
    args = ["report", tmp_path, "--out", tmp_path / "out"]
    separate = cli(*args, prelude=CRASHING_RUN + "import stages.report\nstages.report.run = run\n")
    namespace: dict = {}
    exec(CRASHING_RUN, namespace)
    monkeypatch.setattr("stages.report.run", namespace["run"])
    here = cli(*args, in_process=True)
    for r in (separate, here):
        assert r.code == 1 and r.out == ""
        assert "Traceback (most recent call last)" in r.err and "RuntimeError: boom" in r.err
        assert "UserWarning: a library warning" in r.err


def test_prelude_runs_first_and_a_kill_is_a_negative_code(cli):
    r = cli("--version", prelude="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert r.code == -9 and r.out == ""


def test_logging_is_left_as_found(cli, tmp_path, caplog):
    before = {n: (lg.handlers[:], lg.level, lg.propagate) for n in ("", "pipeline", "stages")
              for lg in [logging.getLogger(n)]}
    params = tmp_path / "params.yaml"
    params.write_text(TINY_WORLD)
    r = cli("-v", "world", "--out", tmp_path / "world", "--params", params, in_process=True)
    assert r.code == 0 and "images" in r.err, r.err
    assert {n: (lg.handlers[:], lg.level, lg.propagate) for n, lg in
            ((n, logging.getLogger(n)) for n in before)} == before
    logging.getLogger("pipeline.anything").warning("still reaches pytest")
    assert "still reaches pytest" in caplog.text


def test_separate_process_options_are_refused_in_process(cli):
    with pytest.raises(ValueError, match="separate process"):
        cli("--version", env={}, in_process=True)
    with pytest.raises(ValueError, match="separate process"):
        cli("--version", prelude="pass", in_process=True)
