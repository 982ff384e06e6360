"""Error types that separate a user's mistake from a bug.

The CLI turns a `UserError` into one line on stderr and exit status 2, with no traceback
(docs/design.md, "Bad input"). Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A mistake the user can fix: bad path, unknown name, mismatched store, invalid value."""


class BadSample(Exception):
    """One input sample is unusable. It is skipped and recorded, never fatal to the run."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
