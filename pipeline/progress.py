"""Progress bars that suit where stderr goes.

On a terminal: ordinary tqdm bars (redrawn in place). Anywhere else (DVC's log, CI, a file), carriage-return
redraws would fill the log with thousands of partial lines, so a bar prints one plain line at most every
`LOG_INTERVAL` seconds, and nothing at all for work that ends sooner (its summary line says enough).
`RISE_PROGRESS=0` silences bars altogether.
"""

from __future__ import annotations

import os
import sys
import time

from tqdm import tqdm

LOG_INTERVAL = 10.0  # seconds between progress lines when stderr is not a terminal


class _Lines:
    """A file for tqdm that turns each redraw into one line (no carriage returns), at most one line every
    `LOG_INTERVAL` seconds: tqdm's own `mininterval` does not hold back the redraws that `set_postfix`
    forces, which would otherwise print a line per training step."""

    def __init__(self, stream):
        self.stream = stream
        self.last = time.monotonic()  # the first line only after LOG_INTERVAL seconds of work

    def write(self, text: str) -> None:
        text = text.replace("\r", "").replace("\x1b[A", "").strip()
        now = time.monotonic()
        if text and now - self.last >= LOG_INTERVAL:
            self.stream.write(text + "\n")
            self.last = now

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, **kwargs) -> tqdm:
    """`tqdm(iterable, **kwargs)` on stderr, as a terminal bar or as occasional log lines."""
    stream = sys.stderr
    if os.environ.get("RISE_PROGRESS", "1") == "0":
        kwargs["disable"] = True
    if stream.isatty():
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, file=stream, **kwargs)
    kwargs.update(file=_Lines(stream), mininterval=max(LOG_INTERVAL, kwargs.get("mininterval", 0)),
                  maxinterval=max(LOG_INTERVAL, kwargs.get("maxinterval", LOG_INTERVAL)), dynamic_ncols=False,
                  ncols=100)
    return tqdm(iterable, **kwargs)
