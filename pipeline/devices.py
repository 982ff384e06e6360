"""Where torch work runs: one rule for the teacher (extract) and the students (distill), and one spelling of
"a process per core" for every `workers` setting (shard, embed, distill)."""

from __future__ import annotations

import os

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")
# Autocast precisions on a GPU (the CPU always runs fp32).
PRECISION_NAMES = ("fp32", "fp16", "bf16")
# `workers: -1` in every section (shard, embed, distill): one process per CPU core, capped so that a many-core
# node does not start dozens of processes to feed one device.
ONE_PER_CORE = -1
MAX_PER_CORE = 8
ONE_PER_CORE_HELP = f"{ONE_PER_CORE}: one per core, at most {MAX_PER_CORE}"


def worker_count(workers: int) -> int:
    """A `workers` setting as a number of processes: ONE_PER_CORE is this machine's core count (at most
    MAX_PER_CORE); any other value is taken as it is."""
    return max(1, min(MAX_PER_CORE, os.cpu_count() or 1)) if workers == ONE_PER_CORE else workers


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; 'cuda' or 'cuda:N' without one is a user error."""
    import torch  # here, not at import time: configs name DEVICES without importing torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} asked for, but torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise UserError(f"unknown device {device!r}; use {', '.join(DEVICES)}")
    return device
