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


def test_projector_starts_as_the_references():
    """N(0, 0.01) weights and a zero bias (RISE's resnetv2 `_init_weights`), not PyTorch's default uniform
    U(-1/sqrt(F), 1/sqrt(F)), whose std for test_resnet's features is far larger."""
    raw, _, _ = _text()
    torch.manual_seed(0)
    w = build_student("test_resnet", raw).projector.requires_grad_(False)
    assert torch.count_nonzero(w.bias) == 0
    n = w.weight.numel()
    assert n >= 1000 and abs(float(w.weight.mean())) < 3 * 0.01 / n ** 0.5
    assert float(w.weight.std()) == pytest.approx(0.01, rel=0.1)
    default = torch.nn.Linear(w.in_features, w.out_features)
    assert float(default.weight.std()) > 2 * 0.01  # the test tells the two apart
    # normal, not uniform: a normal sample exceeds 2.5 std a few times in a hundred, a uniform of std 0.01 never
    assert float((w.weight.abs() > 0.025).float().mean()) > 0.005


def test_forward_and_normalisation():
    raw, t_hat, _ = _text()
    torch.manual_seed(0)
    m = build_student("test_resnet", raw * 5)
    ref = timm.create_model("test_resnet", pretrained=False, num_classes=0)
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


# ------------------------------------------------------------------------------------- local weights

def _saved_backbone(path, name="test_resnet", seed=7, with_classifier=False):
    """A backbone's weights as a user would save them: a timm model's state_dict (with or without its
    classifier) in a local file. Returns the backbone tensors the student must start from."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=5 if with_classifier else 0)
    state = model.state_dict()
    torch.save(state, path)
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


@pytest.mark.parametrize("with_classifier", [False, True])
def test_local_checkpoint_is_loaded_through_timm_without_the_hub(tmp_path, monkeypatch, with_classifier):
    import pipeline.distill.students as students

    expected = _saved_backbone(tmp_path / "backbone.pth", with_classifier=with_classifier)
    # no hub: neither the probe nor a download may run for a local file
    monkeypatch.setattr(students, "hub_weights", lambda *a, **k: pytest.fail("hub consulted for a local file"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw, t_hat, _ = _text()
    torch.manual_seed(0)
    m = build_student("test_resnet", raw, pretrained=True, checkpoint=tmp_path / "backbone.pth")
    got = m.backbone.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in got)
    # the head is still the student's own: projector seeded, classifier at the class texts
    assert torch.allclose(m.classifier.weight, t_hat, atol=1e-6)
    # timm's own path for local weights gives the same backbone
    ref = timm.create_model("test_resnet", pretrained=True, num_classes=0,
                            pretrained_cfg_overlay={"file": str(tmp_path / "backbone.pth")})
    assert all(torch.equal(ref.state_dict()[k], got[k]) for k in got)


def test_checkpoint_is_ignored_without_pretrained(tmp_path):
    expected = _saved_backbone(tmp_path / "backbone.pth")
    raw, _, _ = _text()
    torch.manual_seed(0)
    m = build_student("test_resnet", raw, pretrained=False, checkpoint=tmp_path / "backbone.pth")
    assert not torch.equal(m.backbone.state_dict()["conv1.0.weight"], expected["conv1.0.weight"])


def test_bad_local_checkpoints_are_one_line(tmp_path):
    raw, _, _ = _text()
    with pytest.raises(UserError, match=r"student weights not found: .*missing\.pth"):
        build_student("test_resnet", raw, pretrained=True, checkpoint=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"cannot load student weights .*junk\.pth into 'test_resnet'"):
        build_student("test_resnet", raw, pretrained=True, checkpoint=tmp_path / "junk.pth")
    # a tensor of another shape is refused by torch ...
    _saved_backbone(tmp_path / "wide.pth")
    state = torch.load(tmp_path / "wide.pth", weights_only=True)
    state["conv1.0.weight"] = torch.zeros(5, 3, 3, 3)
    torch.save(state, tmp_path / "wide.pth")
    with pytest.raises(UserError, match=r"cannot load student weights .*wide\.pth into 'test_resnet' \(.*size"):
        build_student("test_resnet", raw, pretrained=True, checkpoint=tmp_path / "wide.pth")
    # ... and other names (another architecture) too: timm loads non-strictly once it drops a classifier, so
    # what its load lets through is caught here
    _saved_backbone(tmp_path / "vit.pth", name="test_vit")
    with pytest.raises(UserError, match=r"vit\.pth does not hold 'test_resnet''s backbone: \d+ of its tensors are "
                                        r"missing \(e\.g\. \S+\); weights of another architecture\?"):
        build_student("test_resnet", raw, pretrained=True, checkpoint=tmp_path / "vit.pth")
