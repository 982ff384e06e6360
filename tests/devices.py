"""Devices a test runs on: the CPU always, CUDA where torch sees a GPU (skipped elsewhere).

Tests that must also hold on a GPU are marked `@pytest.mark.cuda`; they run on the CPU in every test run,
and `pytest -m cuda` on the first machine with a GPU runs them there too (benchmarks/README_gpu.md)."""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="torch sees no CUDA device"))]
