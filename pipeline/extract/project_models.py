"""The project's own small open_clip model configs (`model_configs/`), registered by name with open_clip.

`RISE-tiny-RN` (32 px ModifiedResNet tower, 64-d embeddings) is the embedded default's teacher, pretrained
on the demo world (the tiny ViT stayed at chance within the CPU budget); `RISE-tiny-ViT` (64 px, 64-d) serves
benchmarks; `RISE-micro-ViT` (32 px, 32-d) keeps unit tests fast. All three go through the same open_clip
factory as `ViT-B-16`, so the code path tests exercise is the one real teachers use. They live beside the
teacher loader (`teacher`), which registers them; the demo's teacher pretraining imports them from here.
"""

from __future__ import annotations

from pathlib import Path

import open_clip

CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


def register_project_models() -> None:
    """Idempotently add the project's configs to open_clip's registry."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
