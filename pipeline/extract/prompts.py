"""Prompts and text embeddings: RISE's class prompt ensemble and domain anchors (docs/method.md, "Text embeddings").

Class embedding, as RISE's reference computes it (the default, `average="raw"`): `t_raw_c` = the mean over
templates of the *raw* text features `f_T(template.format(display_c))`, and `t_hat_c` = its L2
normalisation. `average="normalised"` averages L2-normalised features instead (CLIP's zero-shot recipe).
Anchor embedding `e_{a,c}` = L2-normalised `f_T("a {anchor} of a {display_c}")`; each anchor is tagged with
the domain it names, if any (`anchor_domains`), so distill can leave out the held-out domain's anchors.
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


TEXT_AVERAGES = ("raw", "normalised")


def _letters(name: str) -> str:
    return "".join(ch for ch in readable(name) if ch.isalnum())


def anchor_domains(anchors: list[str], domain_names: list[str]) -> list[int]:
    """The domain each anchor names (index into `domain_names`), or -1 for anchors that name no domain.

    An anchor names a domain when their letters and digits agree once made readable (`art painting` ~
    `art_painting`, `RealWorld` ~ `Real World`), or when the anchor extends the domain's name by more
    words (`real photo` ~ `real`). The photo-quality anchors of VLCS and TerraIncognita (`bright photo`,
    ...) name no domain: distill always uses those."""
    out = []
    for anchor in anchors:
        words = readable(anchor).split()
        hits = [i for i, d in enumerate(domain_names) if _letters(anchor) == _letters(d)]
        if not hits:  # the longest domain whose words start the anchor's words
            prefixes = [(len(readable(d).split()), i) for i, d in enumerate(domain_names)
                        if readable(d).split() == words[:len(readable(d).split())]]
            hits = [max(prefixes)[1]] if prefixes else []
        out.append(hits[0] if hits else -1)
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(min=1e-12)


def text_embeddings(encode, displays: list[str], templates: list[str], anchors: list[str],
                    average: str = "raw") -> dict[str, np.ndarray]:
    """All text embeddings the store holds; `encode(list[str]) -> (n, D)` unnormalised float32.

    `per_template` keeps the raw features (templates x classes x D), so either average can be recomputed."""
    for t in templates:
        if t.count("{}") != 1:
            raise ValueError(f"prompt template {t!r} must contain exactly one '{{}}'")
    if average not in TEXT_AVERAGES:
        raise ValueError(f"text average must be one of {', '.join(TEXT_AVERAGES)}, got {average!r}")
    n_c = len(displays)
    prompts = [t.format(c) for t in templates for c in displays]
    per_template = encode(prompts).reshape(len(templates), n_c, -1).astype(np.float64)
    class_raw = (per_template if average == "raw" else _normalise(per_template)).mean(axis=0)
    anchor_prompts = [ANCHOR_TEMPLATE.format(a, c) for a in anchors for c in displays]
    anchor = _normalise(encode(anchor_prompts).reshape(len(anchors), n_c, -1))
    return {"per_template": per_template.astype(np.float32), "class_raw": class_raw.astype(np.float32),
            "class": _normalise(class_raw).astype(np.float32), "anchor": anchor.astype(np.float32)}
