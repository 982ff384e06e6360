"""Where torch work runs: one rule for the teacher (extract) and the students (distill)."""

from __future__ import annotations

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")
# Autocast precisions on a GPU (the CPU always runs fp32).
PRECISION_NAMES = ("fp32", "fp16", "bf16")


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
