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


def test_off_a_terminal_forced_redraws_keep_to_the_interval(monkeypatch):
    """`set_postfix` redraws on every call; off a terminal that must not mean a line per step."""
    import time

    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.2)
    pipe = _Pipe()
    monkeypatch.setattr("sys.stderr", pipe)
    bar = progress(total=100, desc="steps", unit="step")
    t0 = time.monotonic()
    for i in range(100):
        time.sleep(0.01)
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
    bar.close()
    lines = pipe.getvalue().splitlines()
    # at most one line per started interval of the time it took (a line per step would be 100)
    assert 1 <= len(lines) <= (time.monotonic() - t0) / 0.2 + 1, lines


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
