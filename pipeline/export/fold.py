"""Folding a student's projector and classifier into its timm architecture's own classifier.

The student is backbone -> projector (W_p, b_p) -> classifier (W_c, b_c), two linear maps with nothing
between them, so logits = W_c (W_p f + b_p) + b_c = (W_c W_p) f + (W_c b_p + b_c): one linear map from the
pooled feature f, which is exactly what `timm.create_model(name, num_classes=C)` puts after that feature
(`get_classifier()`). The fold is checked numerically before anything is written (`check_fold`)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from ..errors import UserError


def folded_head(student) -> tuple[torch.Tensor, torch.Tensor]:
    """(W, b) of the composed projector + classifier, computed in float64 then stored as float32."""
    wp, bp = student.projector.weight.double(), student.projector.bias.double()
    wc, bc = student.classifier.weight.double(), student.classifier.bias.double()
    return (wc @ wp).float(), (wc @ bp + bc).float()


def fold_student(student) -> nn.Module:
    """A plain timm classifier (`timm.create_model(student.name, num_classes=C)`) whose logits are the
    student's: the backbone's weights as they are, the head folded (`folded_head`). Eval mode."""
    weight, bias = folded_head(student)
    n_classes = weight.shape[0]
    model = timm.create_model(student.name, pretrained=False, num_classes=n_classes)
    head = model.get_classifier()
    if not isinstance(head, nn.Linear) or tuple(head.weight.shape) != tuple(weight.shape):
        raise UserError(f"cannot fold the student into {student.name!r}: its timm classifier is "
                        f"{type(head).__name__}, not one linear map from the {weight.shape[1]}-d pooled feature")
    head_keys = {k for k, p in model.named_parameters() if p is head.weight or p is head.bias}
    missing, unexpected = model.load_state_dict(student.backbone.state_dict(), strict=False)
    if set(missing) - head_keys or unexpected:
        raise UserError(f"cannot fold the student into {student.name!r}: the backbone's weights do not map onto "
                        f"the classifier model (missing {sorted(set(missing) - head_keys)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]})")
    with torch.no_grad():
        head.weight.copy_(weight)
        head.bias.copy_(bias)
    return model.eval()


@torch.no_grad()
def check_fold(student, model: nn.Module, image_size: int, n: int = 4, seed: int = 0) -> float:
    """Max |folded logits - student logits| on `n` seeded random inputs; a UserError when they disagree
    beyond float32 rounding (an architecture whose head is not a single linear map after the feature)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, image_size, image_size, generator=gen)
    student.eval()
    _, expected = student(x)
    got = model(x)
    diff = float((got - expected).abs().max())
    scale = float(expected.abs().max()) or 1.0
    if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * scale):
        raise UserError(f"folding the student into {student.name!r} changes its logits (max difference {diff:.3g});"
                        " this architecture cannot be exported as a plain timm classifier")
    return diff
