"""Progress bars: redrawn in place on a terminal, a plain line every LOG_INTERVAL seconds anywhere else."""

from __future__ import annotations

import io

import pipeline.progress as progress_module
from pipeline.progress import progress


class _Pipe(io.StringIO):
    def isatty(self) -> bool:
        return False


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_short_work_prints_nothing_and_long_work_prints_lines(monkeypatch):
    pipe = _Pipe()
    monkeypatch.setattr("sys.stderr", pipe)
    for _ in progress(range(50), desc="quick", unit="item"):
        pass
    assert pipe.getvalue() == ""  # under LOG_INTERVAL: the summary line that follows says enough

    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    pipe = _Pipe()
    monkeypatch.setattr("sys.stderr", pipe)
    for _ in progress(range(5), desc="long", unit="item", mininterval=0, miniters=1):
        pass
    text = pipe.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines and all(line.startswith("long:") for line in lines)
    assert "5/5" in lines[-1]


def test_on_a_terminal_the_bar_redraws_in_place(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    for _ in progress(range(3), desc="tty", unit="item", mininterval=0):
        pass
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()


def test_rise_progress_0_silences_bars(monkeypatch):
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.setenv("RISE_PROGRESS", "0")
    for _ in progress(range(3), desc="tty", unit="item", mininterval=0):
        pass
    assert term.getvalue() == ""
