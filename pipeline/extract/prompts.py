"""Prompts and text embeddings: RISE's class prompt ensemble and domain anchors (docs/method.md, "Text embeddings").

Class embedding `t_c` = mean over templates of the L2-normalised `f_T(template.format(display_c))` (CLIP's
standard zero-shot ensemble), kept before (`class_raw`) and after (`class`) the final normalisation.
Anchor embedding `e_{a,c}` = L2-normalised `f_T("a {anchor} of a {display_c}")`.
"""

from __future__ import annotations

import re

import numpy as np

RISE_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)
ANCHOR_TEMPLATE = "a {} of a {}"
# RISE's anchors for datasets whose domain names are not descriptions (VLCS locations, camera traps).
PHOTO_ANCHORS = ("bright photo", "corrupted photo", "dark photo", "good photo")

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def readable(name: str) -> str:
    """Folder name -> words for a prompt: `Alarm_Clock` -> "alarm clock", `art_painting` -> "art painting",
    `RealWorld` -> "real world"."""
    words = _CAMEL.sub(" ", name).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


def display_names(class_names: list[str], mapping: dict[str, str] | None = None) -> list[str]:
    """Readable class names, with `mapping` (class folder name -> display name) taking precedence."""
    mapping = mapping or {}
    return [mapping.get(c, readable(c)) for c in class_names]


def anchor_names(domain_names: list[str], anchors: list[str] | None = None) -> list[str]:
    """Configured anchors, or readable domain names when none are configured (RISE's default)."""
    return list(anchors) if anchors else [readable(d) for d in domain_names]


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def text_embeddings(encode, displays: list[str], templates: list[str], anchors: list[str]) -> dict[str, np.ndarray]:
    """All text embeddings the store holds; `encode(list[str]) -> (n, D)` unnormalised float32."""
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"prompt template {t!r} must contain exactly one '{{}}'")
    n_c = len(displays)
    prompts = [t.format(c) for t in templates for c in displays]
    per_template = _normalise(encode(prompts).reshape(len(templates), n_c, -1))
    class_raw = per_template.mean(axis=0)
    anchor_prompts = [ANCHOR_TEMPLATE.format(a, c) for a in anchors for c in displays]
    anchor = _normalise(encode(anchor_prompts).reshape(len(anchors), n_c, -1))
    return {"per_template": per_template.astype(np.float32), "class_raw": class_raw.astype(np.float32),
            "class": _normalise(class_raw).astype(np.float32), "anchor": anchor.astype(np.float32)}
