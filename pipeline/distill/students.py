"""RISE students: any timm backbone, a linear projector to the teacher's embedding size, and a linear
classifier initialised with the L2-normalised class text embeddings (docs/method.md, "Student").

The new layers start as the reference builds them (its `resnetv2._init_weights`): the projector's weight
drawn from N(0, 0.01) with a zero bias, the classifier's weight the class texts with a zero bias. The
classifier thus scores the projected embedding by its cosine-like alignment with each class text, the space
AD pulls the embedding into; at the start the projector's outputs are small and random, so the student is
not a zero-shot classifier until training has aligned them.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..hub import hub_weights, timm_files

# The reference's initialisation of the new linear layers (timm/models/resnetv2.py, `_init_weights`).
PROJECTOR_STD = 0.01
_NO_HUB = "train from scratch with --from-scratch (distill.pretrained: false)"


def check_student_name(name: str) -> None:
    """Raise UserError for a name timm does not know, listing the closest names it does."""
    if timm.is_model(name):
        return
    base = name.split(".")[0]
    names = timm.list_models()
    close = difflib.get_close_matches(base, names, n=6, cutoff=0.5)
    hint = f"; close timm names: {', '.join(close)}" if close else ""
    raise UserError(f"unknown student {name!r}{hint} (any name from timm.list_models() works)")


def _first_line(e: BaseException) -> str:
    """An exception's first line, with the next one when it only announces it (torch's load errors)."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text[:240]


def backbone_from_file(name: str, path: str | os.PathLike) -> nn.Module:
    """timm backbone `name` (no classifier) with the weights of a local file, loaded the way timm loads any
    local weights: `create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH))` (a state_dict,
    or a checkpoint holding one under 'state_dict' / 'model'; .pth, .bin or .safetensors; read with the safe
    loader). timm drops a classifier the file may hold and then loads non-strictly, so the backbone's weights
    are checked here to have all come from the file: a checkpoint of another architecture is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"student weights not found: {path} (distill.checkpoint)")
    try:
        backbone = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                     num_classes=0)
        saved = timm.models.load_state_dict(str(path))
    except Exception as e:  # noqa: BLE001 - whatever a foreign or broken file makes torch raise, one line
        raise UserError(f"cannot load student weights {path} into {name!r} ({_first_line(e)})") from None
    missing = sorted(set(backbone.state_dict()) - set(saved))
    if missing:
        raise UserError(f"{path} does not hold {name!r}'s backbone: {len(missing)} of its tensors are missing "
                        f"(e.g. {missing[0]}); weights of another architecture?")
    return backbone


class Student(nn.Module):
    """backbone -> pooled feature -> projector (embedding z, size D) -> classifier (logits, C).

    `pretrained`: start the backbone from timm's weights for `name` (the HF hub or its cache), or, when
    `checkpoint` names a local file, from that file (`backbone_from_file`)."""

    def __init__(self, name: str, text_class: np.ndarray | torch.Tensor, pretrained: bool = False,
                 checkpoint: str | os.PathLike | None = None):
        super().__init__()
        check_student_name(name)
        if pretrained and checkpoint:
            self.backbone = backbone_from_file(name, checkpoint)
        else:
            self.backbone = _hub_backbone(name, pretrained)
        text = torch.as_tensor(np.asarray(text_class), dtype=torch.float32)
        n_classes, dim = text.shape
        self.projector = nn.Linear(self.backbone.num_features, dim)
        self.classifier = nn.Linear(dim, n_classes)
        with torch.no_grad():
            # RISE's reference: every nn.Linear from N(0, 0.01), bias 0 (then the classifier is overwritten).
            nn.init.normal_(self.projector.weight, mean=0.0, std=PROJECTOR_STD)
            self.projector.bias.zero_()
            self.classifier.weight.copy_(F.normalize(text, dim=-1))
            self.classifier.bias.zero_()
        cfg = timm.data.resolve_data_config({}, model=self.backbone)
        # Each student gets its own normalisation (the teacher's CLIP mean/std is not reused).
        self.register_buffer("mean", torch.tensor(cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.name = name

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 B x 3 x H x W (0..255) -> float, normalised with the backbone's mean/std.

        Done on the model's device so data-loader workers ship compact uint8 tensors."""
        return (images_uint8.float() / 255.0 - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.projector(self.backbone(x))
        return z, self.classifier(z)


def _hub_backbone(name: str, pretrained: bool) -> nn.Module:
    try:
        # Pretrained weights come from the HF hub: refused at once (one line) when it is unreachable
        # and the weights are not cached, read from the cache without retries when they are.
        with hub_weights(timm_files(name) if pretrained else None, f"student {name!r}", _NO_HUB):
            return timm.create_model(name, pretrained=pretrained, num_classes=0)
    except (RuntimeError, OSError, ValueError) as e:
        if not pretrained:
            raise
        raise UserError(f"cannot load pretrained weights for {name!r} ({_first_line(e)}); set HF_HUB_OFFLINE=1 "
                        f"with the weights in the HF cache, or {_NO_HUB}") from None


def build_student(name: str, text_class: np.ndarray | torch.Tensor, pretrained: bool = False,
                  checkpoint: str | os.PathLike | None = None) -> Student:
    """Factory in timm's style: fails loudly (UserError) on an unknown name or unusable weights."""
    return Student(name, text_class, pretrained=pretrained, checkpoint=checkpoint)
