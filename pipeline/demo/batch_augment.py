"""Random views of whole uint8 image batches with tensor ops, for the demo's two pretrainings.

Each sample of a batch gets its own random-resized crop (area `crop_scale`..1, aspect 3/4..4/3), horizontal
flip, brightness / contrast / saturation factors and grayscale coin, drawn from one seeded generator: on two
CPU cores this costs little next to the model, where PIL transforms per image would not. The operations and
ranges are those of RISE's training views (`pipeline.augment`) except hue, which is left out: the world's
captions name colours, and colour never decides a class here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_GRAY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass(frozen=True)
class BatchAugment:
    crop_scale: float = 0.8   # smallest crop area, as a share of the image (RISE: 0.8)
    flip_p: float = 0.5
    jitter: float = 0.4       # brightness, contrast and saturation factors in [1 - jitter, 1 + jitter] (RISE: 0.4)
    grayscale_p: float = 0.1


def augment(images: torch.Tensor, size: int, aug: BatchAugment, gen: torch.Generator) -> torch.Tensor:
    """B x 3 x H x W uint8 -> B x 3 x size x size float in [0, 1], one random view per sample."""
    b = images.shape[0]
    x = images.float() / 255.0

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    area = uniform(aug.crop_scale, 1.0)
    ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
    w, h = (area * ratio).sqrt().clamp(max=1.0), (area / ratio).sqrt().clamp(max=1.0)
    cx, cy = (1 - w) * uniform(-1.0, 1.0), (1 - h) * uniform(-1.0, 1.0)
    flip = torch.where(torch.rand(b, generator=gen) < aug.flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    # Sample at twice the size and average 2 x 2 pixels: a cheap anti-aliased downscale.
    grid = F.affine_grid(theta, [b, 3, 2 * size, 2 * size], align_corners=False)
    x = F.avg_pool2d(F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False), 2)
    lo, hi = 1 - aug.jitter, 1 + aug.jitter
    x = x * uniform(lo, hi).view(b, 1, 1, 1)
    mean = (x * _GRAY).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = (x - mean) * uniform(lo, hi).view(b, 1, 1, 1) + mean
    gray = (x * _GRAY).sum(1, keepdim=True)
    x = (x - gray) * uniform(lo, hi).view(b, 1, 1, 1) + gray
    to_gray = (torch.rand(b, generator=gen) < aug.grayscale_p).view(b, 1, 1, 1)
    x = torch.where(to_gray, (x * _GRAY).sum(1, keepdim=True).expand_as(x), x)
    return x.clamp(0.0, 1.0)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """The whole image at size x size (bilinear, anti-aliased), float in [0, 1]: the evaluation view."""
    return F.interpolate(images.float() / 255.0, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)
