"""The GPU benchmark scripts' CPU smoke modes run end to end (the GPU figures come from the same code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# Each script trains in its own processes (15 s and 50 s here): end-to-end runs, left out by -m "not slow".
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def test_group_benchmark_smoke_mode_runs_and_checks_exactness():
    r = subprocess.run([sys.executable, "benchmarks/gpu_group.py", "--small"], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "one group of 2 members" in r.stdout and "speed-up" in r.stdout
    assert "every member's metrics equal its run alone: yes" in r.stdout


def test_group_benchmark_as_commands_compares_processes_and_their_metrics():
    r = subprocess.run([sys.executable, "benchmarks/bench_group.py", "--small", "--cli"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if "as commands" in ln or "one group command" in ln]
    assert len(lines) == 2 and "metrics equal: yes" in lines[1], r.stdout
