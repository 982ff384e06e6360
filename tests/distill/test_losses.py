"""pipeline.distill.losses against references written out sample by sample (docs/method.md formulas, plain Python/math)."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.distill.losses import (
    LossWeights,
    absolute_distance_loss,
    kd_loss,
    method_weights,
    relative_distance_loss,
    teacher_logits,
    total_loss,
)
from pipeline.errors import UserError

B, C, D, A = 5, 4, 8, 3


def _softmax(v: list[float]) -> list[float]:
    m = max(v)
    e = [math.exp(x - m) for x in v]
    return [x / sum(e) for x in e]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().tolist(), b.double().tolist()
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a)) / math.sqrt(sum(y * y for y in b))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, D, generator=g)
    s = torch.randn(B, C, generator=g) * 3
    t_raw = torch.randn(C, D, generator=g)
    t_hat = t_raw / t_raw.norm(dim=-1, keepdim=True)
    anchors = torch.randn(A, C, D, generator=g)
    anchors = anchors / anchors.norm(dim=-1, keepdim=True)
    img = torch.randn(B, D, generator=g)
    y = torch.tensor([0, 3, 1, 3, 2])
    return z, s, t_raw, t_hat, anchors, img, y


def test_kd_matches_per_sample_kl(batch):
    z, s, _, t_hat, _, img, _ = batch
    tl = teacher_logits(img, t_hat)
    for i in range(B):  # teacher logits are 100 * cosine
        for c in range(C):
            assert tl[i, c].item() == pytest.approx(100 * _cos(img[i], t_hat[c]), rel=1e-4, abs=1e-3)
    T = 3.0
    ref = 0.0
    for i in range(B):
        p = _softmax([x / T for x in tl[i].tolist()])
        q = _softmax([x / T for x in s[i].tolist()])
        ref += T * T * sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    ref /= B
    assert kd_loss(s, tl, temperature=T).item() == pytest.approx(ref, rel=1e-4)
    assert kd_loss(tl, tl).item() == pytest.approx(0.0, abs=1e-5)
    # temperature enters as the T^2 factor and the softened distributions
    T2 = 1.0
    ref2 = sum(sum(p * math.log(p / q) for p, q in zip(_softmax(tl[i].tolist()), _softmax(s[i].tolist()), strict=True))
               for i in range(B)) / B
    assert kd_loss(s, tl, temperature=T2).item() == pytest.approx(ref2, rel=1e-4)


def test_absolute_distance_matches_per_sample(batch):
    z, _, _, t_hat, _, _, y = batch
    ref = sum(1 - _cos(z[i], t_hat[y[i]]) for i in range(B)) / B
    assert absolute_distance_loss(z, t_hat, y).item() == pytest.approx(ref, rel=1e-5)
    assert absolute_distance_loss(t_hat[y] * 7.0, t_hat, y).item() == pytest.approx(0.0, abs=1e-6)


def test_relative_distance_matches_per_sample(batch):
    z, _, t_raw, _, anchors, _, y = batch
    per_sample = []
    for i in range(B):
        c = int(y[i])
        p = _softmax([_cos(z[i], anchors[a, c]) for a in range(A)])
        q = _softmax([_cos(t_raw[c], anchors[a, c]) for a in range(A)])
        per_sample.append(sum((pa - qa) ** 2 for pa, qa in zip(p, q, strict=True)) / A)
    ref = 10 * sum(per_sample) / B
    assert relative_distance_loss(z, t_raw, anchors, y).item() == pytest.approx(ref, rel=1e-5)
    # per-sample form: a batch of one sample gives that sample's term
    for i in range(B):
        one = relative_distance_loss(z[i:i + 1], t_raw, anchors, y[i:i + 1]).item()
        assert one == pytest.approx(10 * per_sample[i], rel=1e-5, abs=1e-9)
    # the teacher side is the class *text* embedding: z = t_raw[y] (any scale) gives 0
    assert relative_distance_loss(t_raw[y] * 3, t_raw, anchors, y).item() == pytest.approx(0, abs=1e-7)


def test_method_presets_differ_only_by_weights():
    assert method_weights("erm", 0.2, 0.8, 1.0) == LossWeights(ce=1, kd=0, ad=0, rd=0)
    assert method_weights("kd", 0.2, 0.8, 1.0) == LossWeights(ce=0.2, kd=0.8, ad=0, rd=0)
    assert method_weights("rise-abs", 0.2, 0.8, 1.0) == LossWeights(ce=0.2, kd=0.8, ad=1.0, rd=0)
    assert method_weights("rise-rel", 0.2, 0.8, 1.0) == LossWeights(ce=0.2, kd=0.8, ad=0, rd=1.0)
    assert method_weights("rise", 0.2, 0.8, 2.0) == LossWeights(ce=0.2, kd=0.8, ad=2.0, rd=2.0)


def test_total_loss_is_the_weighted_sum(batch):
    z, s, t_raw, t_hat, anchors, img, y = batch
    args = (z, s, y, img, t_hat, t_raw, anchors, 3.0)
    parts = total_loss(LossWeights(1, 1, 1, 1), *args)
    for method in ("erm", "kd", "rise-abs", "rise-rel", "rise"):
        w = method_weights(method, 0.3, 0.7, 0.5)
        out = total_loss(w, *args)
        expect = sum(getattr(w, k) * parts[f"loss_{k}"].item() for k in ("ce", "kd", "ad", "rd"))
        assert out["loss"].item() == pytest.approx(expect, rel=1e-5)
        # every term is logged whatever the method
        for k in ("ce", "kd", "ad", "rd"):
            assert out[f"loss_{k}"].item() == pytest.approx(parts[f"loss_{k}"].item())
    ce_ref = sum(-math.log(_softmax(s[i].tolist())[y[i]]) for i in range(B)) / B
    assert parts["loss_ce"].item() == pytest.approx(ce_ref, rel=1e-5)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
@pytest.mark.parametrize("which", ["w_ce", "w_kd", "w_dist"])
def test_bad_weights_rejected(bad, which):
    kw = {"w_ce": 0.2, "w_kd": 0.8, "w_dist": 1.0, which: bad}
    with pytest.raises(UserError, match=which):
        method_weights("rise", **kw)


def test_unknown_method_and_empty_loss():
    with pytest.raises(UserError, match="valid: rise, erm, kd, rise-abs, rise-rel"):
        method_weights("mixup", 0.2, 0.8, 1.0)
    with pytest.raises(UserError, match="no loss term"):
        method_weights("kd", 0.0, 0.0, 1.0)
