"""Running the real CLI entry point in-process (exit status, stdout, stderr), for CLI tests."""

from __future__ import annotations

import pytest

from stages.cli import main


def run_cli(argv, capsys) -> tuple[int, str, str]:
    """`rise-pipeline ARGV` through `stages.cli.main`, as the console script runs it."""
    with pytest.raises(SystemExit) as e:
        main(argv)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err
