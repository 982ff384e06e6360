"""pipeline.distill.students: timm backbone by name, projector, text-initialised classifier, gradients."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from pipeline.distill.losses import method_weights, total_loss
from pipeline.distill.students import build_student
from pipeline.errors import UserError

C, D, A = 3, 16, 2


def _text():
    g = torch.Generator().manual_seed(1)
    raw = torch.randn(C, D, generator=g)
    return raw, F.normalize(raw, dim=-1), F.normalize(torch.randn(A, C, D, generator=g), dim=-1)


def test_structure_and_init():
    raw, t_hat, _ = _text()
    torch.manual_seed(0)
    m = build_student("test_resnet", raw * 5)  # given raw, it normalises
    ref = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    assert m.projector.in_features == ref.num_features and m.projector.out_features == D
    assert torch.allclose(m.classifier.weight, t_hat, atol=1e-6)
    assert torch.count_nonzero(m.classifier.bias) == 0
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    z, logits = m(m.normalize(x))
    assert z.shape == (4, D) and logits.shape == (4, C)
    assert torch.allclose(logits, z @ t_hat.T, atol=1e-5)
    cfg = timm.data.resolve_data_config({}, model=ref)
    expect = (x.float() / 255 - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    assert torch.allclose(m.normalize(x), expect, atol=1e-6)


def test_seeded_init_is_deterministic():
    raw, _, _ = _text()
    torch.manual_seed(3)
    a = build_student("test_resnet", raw).state_dict()
    torch.manual_seed(3)
    b = build_student("test_resnet", raw).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["erm", "kd", "rise-abs", "rise-rel", "rise"])
def test_gradients_reach_projector_and_backbone(method):
    raw, t_hat, anchors = _text()
    torch.manual_seed(0)
    m = build_student("test_resnet", raw)
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    y = torch.tensor([0, 1, 2, 1])
    z, logits = m(m.normalize(x))
    teacher = torch.randn(4, D)
    out = total_loss(method_weights(method, 0.2, 0.8, 1.0), z, logits, y, teacher, t_hat, raw, anchors, 3.0)
    out["loss"].backward()
    first_conv = next(p for n, p in m.backbone.named_parameters() if p.ndim == 4)
    for p in (m.projector.weight, first_conv, m.classifier.weight):
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0


def test_unknown_student_lists_close_names():
    raw, _, _ = _text()
    with pytest.raises(UserError, match=r"unknown student 'resnet181'.*close timm names: .*resnet18"):
        build_student("resnet181", raw)
