"""Replayable RISE training augmentation (docs/design.md, "Replayable views").

The reference code augments each batch online and feeds the *same* augmented tensor to teacher and
student. Here stage one draws K views per training image, stores their parameters, and embeds them with
the teacher; stage two rebuilds exactly the same view for the student. So sampling (`sample_view`) and
application (`apply_view`) are separate functions, and a view is a small, serialisable `ViewParams`.

The sampling distribution is torchvision's: RandomResizedCrop(scale=(0.8, 1), ratio=(3/4, 4/3)),
RandomHorizontalFlip(0.5), ColorJitter(0.4, 0.4, 0.4, hue=0.4) with its random op order, and
RandomGrayscale(0.1). Crop boxes are in pixels of the upright (EXIF-transposed) original image, so the
same view can be rendered at any resolution: the teacher's and each student's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from .images import only_our_pixel_limit
from .seeding import seeded_rng

# Column layout of the stored parameter rows (float32), documented in docs/contracts.md (the teacher store).
PARAM_COLUMNS = (
    "top", "left", "height", "width", "flip",
    "brightness", "contrast", "saturation", "hue",
    "order0", "order1", "order2", "order3", "grayscale",
)
N_PARAMS = len(PARAM_COLUMNS)


@dataclass(frozen=True)
class AugmentConfig:
    """RISE's training augmentation (docs/method.md, "Augmentation"); stored in the HDF5 store's provenance."""

    scale: tuple[float, float] = (0.8, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.4
    grayscale_p: float = 0.1

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ViewParams:
    """One augmented view: crop box (pixels of the upright original), flip, jitter factors and order, gray."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    brightness: float
    contrast: float
    saturation: float
    hue: float
    order: tuple[int, int, int, int]  # ColorJitter's op numbers: 0 brightness, 1 contrast, 2 saturation, 3 hue
    grayscale: bool

    def to_array(self) -> np.ndarray:
        return np.array(
            [self.top, self.left, self.height, self.width, float(self.flip),
             self.brightness, self.contrast, self.saturation, self.hue,
             *self.order, float(self.grayscale)],
            dtype=np.float32,
        )

    @classmethod
    def from_array(cls, a) -> ViewParams:
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (N_PARAMS,):
            raise ValueError(f"expected {N_PARAMS} view parameters, got shape {a.shape}")
        return cls(
            top=int(round(a[0])), left=int(round(a[1])), height=int(round(a[2])), width=int(round(a[3])),
            flip=bool(a[4] > 0.5),
            brightness=float(np.float32(a[5])), contrast=float(np.float32(a[6])),
            saturation=float(np.float32(a[7])), hue=float(np.float32(a[8])),
            order=tuple(int(round(x)) for x in a[9:13]), grayscale=bool(a[13] > 0.5),
        )


def _crop_box(rng: np.random.Generator, width: int, height: int, cfg: AugmentConfig) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop.get_params, with numpy's generator (10 tries, then a centre crop)."""
    area = height * width
    log_ratio = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(cfg.scale[0], cfg.scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(cfg.ratio):
        w, h = width, int(round(width / min(cfg.ratio)))
    elif in_ratio > max(cfg.ratio):
        h, w = height, int(round(height * max(cfg.ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def sample_view(rng: np.random.Generator, width: int, height: int, cfg: AugmentConfig = AugmentConfig()) -> ViewParams:
    """Draw one view's parameters for an upright image of `width` x `height` pixels."""
    top, left, h, w = _crop_box(rng, width, height, cfg)
    flip = bool(rng.random() < cfg.flip_p)

    def factor(strength: float) -> float:
        return float(np.float32(rng.uniform(max(0.0, 1 - strength), 1 + strength))) if strength > 0 else 1.0

    b, c, s = factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation)
    hue = float(np.float32(rng.uniform(-cfg.hue, cfg.hue))) if cfg.hue > 0 else 0.0
    order = tuple(int(i) for i in rng.permutation(4))
    gray = bool(rng.random() < cfg.grayscale_p)
    return ViewParams(top, left, h, w, flip, b, c, s, hue, order, gray)  # type: ignore[arg-type]


def apply_view(img: Image.Image, p: ViewParams, size: int | tuple[int, int]) -> Image.Image:
    """Render view `p` of an upright RGB image at `size` (int -> square). No normalisation here:
    each model applies its own mean/std afterwards. `img` comes from `images.decode_rgb`, which held it to
    `max_pixels`; PIL's own limit, which it also applies to crop boxes, does not refuse the crop."""
    out_size = [size, size] if isinstance(size, int) else list(size)
    with only_our_pixel_limit():
        out = F.resized_crop(img, p.top, p.left, p.height, p.width, out_size,
                             interpolation=InterpolationMode.BILINEAR, antialias=True)
    if p.flip:
        out = F.hflip(out)
    for op in p.order:
        if op == 0 and p.brightness != 1.0:
            out = F.adjust_brightness(out, p.brightness)
        elif op == 1 and p.contrast != 1.0:
            out = F.adjust_contrast(out, p.contrast)
        elif op == 2 and p.saturation != 1.0:
            out = F.adjust_saturation(out, p.saturation)
        elif op == 3 and p.hue != 0.0:
            out = F.adjust_hue(out, p.hue)
    if p.grayscale:
        out = F.rgb_to_grayscale(out, num_output_channels=3)
    return out


def sample_views(seed_key: str, seed: int, k: int, width: int, height: int,
                 cfg: AugmentConfig = AugmentConfig()) -> list[ViewParams]:
    """K views for one sample, seeded by (global seed, sample key) so each sample's views do not depend
    on which other samples exist or in which order they are processed."""
    # One part "seed:key" (not two): the views of stores written before seeding was shared stay the same.
    rng = seeded_rng(f"{seed}:{seed_key}")
    return [sample_view(rng, width, height, cfg) for _ in range(k)]
