"""RISE's loss terms (docs/method.md, "Losses"), vectorised over the batch, and the method presets.

Every function returns a scalar tensor (the batch mean) and has no per-sample Python loop, so the same
code runs at batch 16 on a CPU and batch 512 on a GPU. Shapes: B samples, C classes, D embedding size,
A anchors.

The methods the paper compares differ *only* in the weights of these terms (`method_weights`):

    total = w_ce * CE + w_kd * KD + w_ad * AD + w_rd * RD

where RISE's `w_dist * (AD + RD)` is `w_ad = w_rd = w_dist`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..errors import UserError
from .config import METHODS, check_weight

# The teacher's logit scale: CLIP's learned temperature, fixed at 100 for the released models.
LOGIT_SCALE = 100.0
# RISE multiplies the relative-distance MSE by 10 (the softmax differences are small).
RD_SCALE = 10.0


def teacher_logits(image_embeddings: torch.Tensor, class_text_embeddings: torch.Tensor) -> torch.Tensor:
    """CLIP zero-shot logits `100 * cos(image, t_hat)`: B x D, C x D -> B x C."""
    return LOGIT_SCALE * F.normalize(image_embeddings, dim=-1) @ F.normalize(class_text_embeddings, dim=-1).T


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 3.0) -> torch.Tensor:
    """Knowledge distillation `T^2 * KL(softmax(t/T) || softmax(s/T))`, summed over classes, batch mean.

    The T^2 factor keeps the gradient scale independent of T (Hinton et al.). Both inputs are B x C.
    """
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return t * t * F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def absolute_distance_loss(student_embeddings: torch.Tensor, class_text_embeddings: torch.Tensor,
                           labels: torch.Tensor) -> torch.Tensor:
    """AD = mean_i (1 - cos(z_i, t_hat_{y_i})): pulls each student embedding towards its class text.

    student_embeddings B x D, class_text_embeddings C x D (L2-normalised), labels B (class indices).
    """
    target = class_text_embeddings[labels].float()
    return (1.0 - F.cosine_similarity(student_embeddings.float(), target, dim=-1)).mean()


def relative_distance_loss(student_embeddings: torch.Tensor, class_text_embeddings_raw: torch.Tensor,
                           anchor_embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """RD = 10 * MSE(p, q) over all B x A entries, where for sample i with label y

        p_i = softmax_a cos(z_i, e_{a,y}),   q_i = softmax_a cos(t_raw_y, e_{a,y})

    i.e. the student embedding must sit among the domain anchors of its class the way the class text does.
    student_embeddings B x D, class_text_embeddings_raw C x D (mean over templates, before normalisation),
    anchor_embeddings A x C x D, labels B.
    """
    anchors = F.normalize(anchor_embeddings.float(), dim=-1)[:, labels]          # A x B x D
    z = F.normalize(student_embeddings.float(), dim=-1)
    t = F.normalize(class_text_embeddings_raw.float()[labels], dim=-1)           # B x D
    p = torch.einsum("bd,abd->ba", z, anchors).softmax(dim=-1)
    q = torch.einsum("bd,abd->ba", t, anchors).softmax(dim=-1)
    return RD_SCALE * F.mse_loss(p, q)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the four terms (see the module docstring)."""

    ce: float
    kd: float
    ad: float
    rd: float

    def to_dict(self) -> dict:
        return asdict(self)


def method_weights(method: str, w_ce: float, w_kd: float, w_dist: float) -> LossWeights:
    """The weight preset of a method: erm = CE only; kd = CE + KD; rise-abs / rise-rel add AD / RD;
    rise adds both. Each student of rise-mix trains as the reference's mix does (KD + CE + AD: its first
    student's RD is multiplied by 0, its second has none), each of rise-mix-full as a rise student. ERM
    ignores the given w_ce (its loss is plain cross-entropy)."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    w_ce = check_weight("w_ce", w_ce)
    w_kd = check_weight("w_kd", w_kd)
    w_dist = check_weight("w_dist", w_dist)
    if method == "erm":
        return LossWeights(ce=1.0, kd=0.0, ad=0.0, rd=0.0)
    ad = w_dist if method in ("rise", "rise-abs", "rise-mix", "rise-mix-full") else 0.0
    rd = w_dist if method in ("rise", "rise-rel", "rise-mix-full") else 0.0
    weights = LossWeights(ce=w_ce, kd=w_kd, ad=ad, rd=rd)
    if not any(weights.to_dict().values()):
        raise UserError(f"method {method!r} with w_ce={w_ce}, w_kd={w_kd}, w_dist={w_dist} has no loss term left")
    return weights


def total_loss(weights: LossWeights, embeddings: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
               teacher_embeddings: torch.Tensor, text_class: torch.Tensor, text_class_raw: torch.Tensor,
               text_anchor: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """Weighted sum of the terms, as a timm-style dict: `loss` and each term (detached).

    Every term is computed and logged whatever the method, so runs of different methods have comparable
    logs; only terms with a positive weight enter `loss` (0 * NaN would otherwise poison it)."""
    terms = {"ce": F.cross_entropy(logits.float(), labels),
             "kd": kd_loss(logits, teacher_logits(teacher_embeddings, text_class), temperature),
             "ad": absolute_distance_loss(embeddings, text_class, labels),
             "rd": relative_distance_loss(embeddings, text_class_raw, text_anchor, labels)}
    loss = sum(getattr(weights, k) * v for k, v in terms.items() if getattr(weights, k) > 0)
    out = {"loss": loss}
    out.update({f"loss_{k}": v.detach() for k, v in terms.items()})
    return out
