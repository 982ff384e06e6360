"""RISE students: any timm backbone, a linear projector to the teacher's embedding size, and a linear
classifier initialised with the L2-normalised class text embeddings (docs/method.md, "Student").

Starting the classifier at the text embeddings means the student begins as a zero-shot classifier over
its own projected features, which is what lets AD/RD pull embeddings towards the text space usefully.
"""

from __future__ import annotations

import difflib

import numpy as np
import timm
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..hub import hub_weights, timm_files

# RISE's reference student (ImageNet-21k BiT ResNet-50 v2).
DEFAULT_STUDENT = "resnetv2_50x1_bit.goog_in21k_ft_in1k"
_NO_HUB = "train from scratch with --no-pretrained (distill.pretrained: false)"


def check_student_name(name: str) -> None:
    """Raise UserError for a name timm does not know, listing the closest names it does."""
    if timm.is_model(name):
        return
    base = name.split(".")[0]
    names = timm.list_models()
    close = difflib.get_close_matches(base, names, n=6, cutoff=0.5)
    hint = f"; close timm names: {', '.join(close)}" if close else ""
    raise UserError(f"unknown student {name!r}{hint} (any name from timm.list_models() works)")


class Student(nn.Module):
    """backbone -> pooled feature -> projector (embedding z, size D) -> classifier (logits, C)."""

    def __init__(self, name: str, text_class: np.ndarray | torch.Tensor, pretrained: bool = False):
        super().__init__()
        check_student_name(name)
        try:
            # Pretrained weights come from the HF hub: refused at once (one line) when it is unreachable
            # and the weights are not cached, read from the cache without retries when they are.
            with hub_weights(timm_files(name) if pretrained else None, f"student {name!r}", _NO_HUB):
                self.backbone = timm.create_model(name, pretrained=pretrained, num_classes=0)
        except (RuntimeError, OSError, ValueError) as e:
            if not pretrained:
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load pretrained weights for {name!r} ({first}); set HF_HUB_OFFLINE=1 with "
                            f"the weights in the HF cache, or {_NO_HUB}") from None
        text = torch.as_tensor(np.asarray(text_class), dtype=torch.float32)
        n_classes, dim = text.shape
        self.projector = nn.Linear(self.backbone.num_features, dim)
        self.classifier = nn.Linear(dim, n_classes)
        with torch.no_grad():
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


def build_student(name: str, text_class: np.ndarray | torch.Tensor, pretrained: bool = False) -> Student:
    """Factory in timm's style: fails loudly (UserError) on an unknown name."""
    return Student(name, text_class, pretrained=pretrained)
