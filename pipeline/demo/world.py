"""The demo world: a small, seeded, multi-domain image dataset standing in for PACS.

Seven object classes are drawn as procedural shapes (polygons and thick polylines in a unit frame) and
rendered in four styles that differ the way PACS's domains do: `photo` (shaded, textured objects with a
shadow on a textured background), `sketch` (wobbly black strokes and hatching on white paper), `cartoon`
(flat colours, thick black outlines) and `painting` (the scene re-painted with short noisy brush strokes).
Position, scale, aspect, rotation, mirroring and colours vary within every domain.

Every image comes from its own generator seeded by (seed, domain, class, index), so a cell's images do not
depend on how many images other cells hold, and the same seed gives the same PNG bytes (fixed encoder
settings, no metadata). `write_world` writes the DomainBed layout ROOT/<domain>/<class>/<index>.png and
nothing else there: captions are returned to the caller, which keeps them outside the dataset root.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..config import field
from ..errors import UserError
from ..seeding import integer_rng

DOMAINS = ("cartoon", "painting", "photo", "sketch")
SUPERSAMPLE = 2  # render at twice the size and downsample: anti-aliased edges at no extra code

# Named colours the captions can mention; each draw jitters them so colour varies continuously.
PALETTE = {
    "red": (200, 40, 40), "orange": (235, 130, 30), "yellow": (230, 200, 40), "green": (50, 150, 60),
    "blue": (40, 90, 200), "purple": (130, 60, 170), "pink": (230, 120, 170), "brown": (130, 80, 40),
    "gray": (130, 130, 130), "teal": (30, 150, 150),
}

# Per-domain caption templates: {c} class, {col} main colour name (colour is absent from sketches).
CAPTIONS = {
    "photo": ("a photo of a {c}.", "a photo of a {col} {c}.", "a picture of a {c}.", "a close-up photo of a {c}."),
    "sketch": ("a sketch of a {c}.", "a pencil sketch of a {c}.", "a black and white drawing of a {c}."),
    "cartoon": ("a cartoon of a {c}.", "a cartoon of a {col} {c}.", "a clipart of a {c}."),
    "painting": ("a painting of a {c}.", "an oil painting of a {col} {c}.", "a painting of a {c} with brush strokes."),
}


def _ellipse(cx: float, cy: float, rx: float, ry: float, a0: float = 0.0, a1: float = 360.0, n: int = 28):
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
            for a in np.linspace(a0, a1, n, endpoint=a1 - a0 < 360)]


def _rect(x0: float, y0: float, x1: float, y1: float):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _star(points: int, outer: float, inner: float):
    return [((outer if k % 2 == 0 else inner) * math.sin(math.pi * k / points),
             -(outer if k % 2 == 0 else inner) * math.cos(math.pi * k / points)) for k in range(2 * points)]


# A shape is a list of parts drawn in order: ("poly", role, points) or ("line", role, points, width).
# Coordinates are in [-1, 1], y down. Roles pick colours: main, second, dark, light.
SHAPES: dict[str, list[tuple]] = {
    "car": [("poly", "main", [(-0.5, 0.0), (-0.3, -0.42), (0.35, -0.42), (0.58, 0.0)]),
            ("poly", "main", _rect(-0.92, 0.0, 0.92, 0.42)),
            ("poly", "light", [(-0.38, -0.05), (-0.25, -0.34), (0.0, -0.34), (0.0, -0.05)]),
            ("poly", "light", [(0.08, -0.05), (0.08, -0.34), (0.3, -0.34), (0.45, -0.05)]),
            ("poly", "dark", _ellipse(-0.5, 0.45, 0.2, 0.2)), ("poly", "dark", _ellipse(0.5, 0.45, 0.2, 0.2))],
    "cup": [("line", "main", _ellipse(0.48, 0.0, 0.3, 0.3, -80, 80, 14), 0.12),
            ("poly", "main", [(-0.55, -0.6), (0.55, -0.6), (0.38, 0.65), (-0.38, 0.65)]),
            ("poly", "second", [(-0.51, -0.3), (0.51, -0.3), (0.48, -0.1), (-0.48, -0.1)]),
            ("poly", "second", _ellipse(0.0, 0.72, 0.7, 0.1))],
    "fish": [("poly", "second", [(0.4, 0.0), (0.9, -0.45), (0.9, 0.45)]),
             ("poly", "second", [(-0.2, -0.3), (0.1, -0.55), (0.2, -0.2)]),
             ("poly", "main", _ellipse(-0.1, 0.0, 0.62, 0.36)),
             ("poly", "dark", _ellipse(-0.45, -0.08, 0.07, 0.07, n=12))],
    "flower": [("line", "second", [(0.0, -0.3), (0.05, 0.3), (0.0, 0.95)], 0.08),
               ("poly", "second", _ellipse(0.22, 0.55, 0.2, 0.08)),
               *[("poly", "main", _ellipse(0.3 * math.cos(a), -0.3 + 0.3 * math.sin(a), 0.2, 0.2, n=16))
                 for a in np.linspace(0, 2 * math.pi, 6, endpoint=False)],
               ("poly", "light", _ellipse(0.0, -0.3, 0.16, 0.16, n=16))],
    "house": [("poly", "main", _rect(-0.6, -0.1, 0.6, 0.85)),
              ("poly", "second", [(-0.8, -0.05), (0.0, -0.85), (0.8, -0.05)]),
              ("poly", "dark", _rect(-0.15, 0.35, 0.15, 0.85)),
              ("poly", "light", _rect(0.25, 0.1, 0.48, 0.33)), ("poly", "light", _rect(-0.48, 0.1, -0.25, 0.33))],
    "star": [("poly", "main", _star(5, 0.95, 0.4))],
    "tree": [("poly", "second", _rect(-0.12, 0.15, 0.12, 0.92)),
             ("poly", "main", _ellipse(0.0, -0.35, 0.45, 0.45)),
             ("poly", "main", _ellipse(-0.35, 0.0, 0.35, 0.3)), ("poly", "main", _ellipse(0.35, 0.0, 0.35, 0.3))],
}
CLASSES = tuple(sorted(SHAPES))

# Other objects, drawn only for the student's pretraining corpus (the demo's stand-in for ImageNet): the
# student learns shapes from them, never the benchmark's classes. They take image-seed indices after the
# benchmark's classes, so adding one changes no benchmark image.
PRETRAIN_SHAPES: dict[str, list[tuple]] = {
    "apple": [("poly", "main", _ellipse(-0.22, 0.1, 0.45, 0.6)), ("poly", "main", _ellipse(0.22, 0.1, 0.45, 0.6)),
              ("line", "dark", [(0.0, -0.4), (0.05, -0.65), (0.15, -0.85)], 0.07),
              ("poly", "second", _ellipse(0.3, -0.65, 0.22, 0.1))],
    "arrow": [("poly", "main", [(-0.9, -0.15), (0.3, -0.15), (0.3, -0.45), (0.9, 0.0), (0.3, 0.45), (0.3, 0.15),
                                (-0.9, 0.15)])],
    "balloon": [("line", "dark", [(0.0, 0.45), (-0.08, 0.65), (0.06, 0.8), (-0.04, 0.98)], 0.04),
                ("poly", "main", _ellipse(0.0, -0.2, 0.5, 0.65)),
                ("poly", "main", [(-0.1, 0.42), (0.1, 0.42), (0.0, 0.52)]),
                ("poly", "light", _ellipse(-0.2, -0.45, 0.09, 0.14, n=12))],
    "bell": [("poly", "main", [(-0.75, 0.55), (-0.55, 0.35), (-0.45, -0.3), (-0.25, -0.6), (0.25, -0.6),
                               (0.45, -0.3), (0.55, 0.35), (0.75, 0.55)]),
             ("poly", "second", _ellipse(0.0, -0.7, 0.12, 0.12, n=12)),
             ("poly", "dark", _ellipse(0.0, 0.68, 0.16, 0.16, n=14))],
    "bird": [("poly", "second", [(0.45, 0.0), (0.95, -0.3), (0.9, 0.25)]),
             ("poly", "main", _ellipse(0.05, 0.05, 0.5, 0.32)),
             ("poly", "main", _ellipse(-0.5, -0.3, 0.24, 0.22)),
             ("poly", "second", [(-0.72, -0.36), (-0.98, -0.26), (-0.72, -0.2)]),
             ("poly", "second", [(-0.15, -0.05), (0.4, -0.55), (0.3, 0.0)]),
             ("line", "dark", [(-0.05, 0.35), (-0.1, 0.7)], 0.05), ("line", "dark", [(0.15, 0.35), (0.1, 0.7)], 0.05),
             ("poly", "dark", _ellipse(-0.55, -0.35, 0.05, 0.05, n=10))],
    "boat": [("line", "dark", [(0.0, 0.2), (0.0, -0.9)], 0.06),
             ("poly", "light", [(0.05, -0.85), (0.65, 0.1), (0.05, 0.1)]),
             ("poly", "second", [(-0.05, -0.7), (-0.05, 0.1), (-0.5, 0.1)]),
             ("poly", "main", [(-0.9, 0.2), (0.9, 0.2), (0.6, 0.6), (-0.6, 0.6)])],
    "bottle": [("poly", "main", [(-0.3, 0.9), (-0.3, -0.15), (-0.12, -0.45), (-0.12, -0.75), (0.12, -0.75),
                                 (0.12, -0.45), (0.3, -0.15), (0.3, 0.9)]),
               ("poly", "second", _rect(-0.15, -0.92, 0.15, -0.72)),
               ("poly", "light", _rect(-0.3, 0.1, 0.3, 0.45))],
    "chair": [("poly", "main", _rect(-0.45, -0.95, -0.3, 0.85)), ("poly", "main", _rect(0.3, 0.05, 0.45, 0.85)),
              ("poly", "main", _rect(-0.45, -0.05, 0.5, 0.12)), ("poly", "second", _rect(-0.45, -0.85, -0.3, -0.2)),
              ("poly", "main", _rect(-0.25, 0.12, -0.12, 0.85))],
    "clock": [("poly", "main", _ellipse(0.0, 0.0, 0.85, 0.85)), ("poly", "light", _ellipse(0.0, 0.0, 0.7, 0.7)),
              ("line", "dark", [(0.0, 0.0), (0.0, -0.55)], 0.07), ("line", "dark", [(0.0, 0.0), (0.38, 0.12)], 0.09),
              *[("poly", "dark", _ellipse(0.6 * math.cos(a), 0.6 * math.sin(a), 0.05, 0.05, n=8))
                for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)]],
    "heart": [("poly", "main", _ellipse(-0.35, -0.3, 0.4, 0.4, 135, 360, 20) + _ellipse(0.35, -0.3, 0.4, 0.4, 180, 405, 20)
               + [(0.0, 0.85)])],
    "key": [("line", "main", _ellipse(-0.55, 0.0, 0.3, 0.3, 0, 360, 24) + [(-0.25, 0.0)], 0.12),
            ("poly", "main", _rect(-0.27, -0.07, 0.9, 0.07)),
            ("poly", "main", _rect(0.5, 0.07, 0.6, 0.32)), ("poly", "main", _rect(0.72, 0.07, 0.82, 0.25))],
    "kite": [("line", "dark", [(0.0, 0.5), (-0.15, 0.7), (0.1, 0.85), (-0.05, 0.98)], 0.04),
             ("poly", "main", [(0.0, -0.9), (0.45, -0.25), (0.0, 0.5), (-0.45, -0.25)]),
             ("line", "second", [(0.0, -0.9), (0.0, 0.5)], 0.04), ("line", "second", [(-0.45, -0.25), (0.45, -0.25)], 0.04)],
    "lamp": [("poly", "main", [(-0.25, -0.9), (0.25, -0.9), (0.55, -0.3), (-0.55, -0.3)]),
             ("poly", "dark", _rect(-0.06, -0.3, 0.06, 0.7)),
             ("poly", "second", _ellipse(0.0, 0.78, 0.45, 0.14))],
    "moon": [("poly", "main", _ellipse(0.0, 0.0, 0.8, 0.8, 60, 300, 24) + _ellipse(0.45, 0.0, 0.62, 0.7, 250, 110, 20))],
    "mushroom": [("poly", "light", _rect(-0.2, -0.1, 0.2, 0.85)),
                 ("poly", "main", _ellipse(0.0, -0.05, 0.85, 0.75, 180, 360, 24)),
                 ("poly", "light", _ellipse(-0.35, -0.35, 0.12, 0.1, n=12)),
                 ("poly", "light", _ellipse(0.3, -0.5, 0.1, 0.08, n=12))],
    "umbrella": [("line", "dark", [(0.0, -0.2), (0.0, 0.7), (0.05, 0.85), (0.25, 0.85), (0.3, 0.7)], 0.07),
                 ("poly", "main", _ellipse(0.0, -0.1, 0.9, 0.75, 180, 360, 28))],
}
PRETRAIN_CLASSES = tuple(sorted(PRETRAIN_SHAPES))


@dataclasses.dataclass
class WorldConfig:
    enabled: bool = field(True, "Generate the world; false (real datasets) leaves only a placeholder note.",
                          cli=False)
    seed: int = field(0, "Seed of the benchmark images (the teacher's pretraining corpus uses its own seed).")
    per_cell: int = field(50, "Images per class x domain cell.")
    image_size: int = field(64, "Side of the square images in pixels.")
    classes: list[str] = field(list(CLASSES), "Object classes to draw (subset of the built-in shapes).")
    domains: list[str] = field(list(DOMAINS), "Rendering styles, each one domain: photo, sketch, cartoon, painting.")

    def __post_init__(self) -> None:
        for kind, chosen, known in (("class", self.classes, CLASSES), ("domain", self.domains, DOMAINS)):
            bad = [c for c in chosen if c not in known]
            if bad or not chosen:
                raise UserError(f"world: unknown {kind}(es) {', '.join(bad) or '(none given)'}; "
                                f"valid: {', '.join(known)}")
            if len(set(chosen)) != len(chosen):
                raise UserError(f"world: {kind} listed twice in {', '.join(chosen)}")
        if self.per_cell < 1:
            raise UserError(f"world.per_cell must be >= 1, got {self.per_cell}")
        if not 16 <= self.image_size <= 512:
            raise UserError(f"world.image_size must be within 16..512 pixels, got {self.image_size}")


@dataclasses.dataclass(frozen=True)
class Sample:
    domain: str
    class_name: str
    index: int
    image: Image.Image
    caption: str

    @property
    def relpath(self) -> str:
        return f"{self.domain}/{self.class_name}/{self.index:05d}.png"


# ----------------------------------------------------------------------------------------------- geometry

def _pose(rng: np.random.Generator, size: int):
    """Random similarity-plus-aspect transform from the unit frame to pixels (the object stays in view)."""
    scale = rng.uniform(0.26, 0.4) * size
    sx, sy = scale * rng.uniform(0.85, 1.15), scale * rng.uniform(0.85, 1.15)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    theta = math.radians(rng.uniform(-30, 30))
    margin = max(0.0, size / 2 - 1.05 * max(sx, sy))
    cx, cy = size / 2 + rng.uniform(-margin, margin), size / 2 + rng.uniform(-margin, margin)
    cos, sin = math.cos(theta), math.sin(theta)

    def apply(points):
        out = []
        for x, y in points:
            x, y = mirror * x * sx, y * sy
            out.append((cx + cos * x - sin * y, cy + sin * x + cos * y))
        return out

    return apply, scale


def _colours(rng: np.random.Generator) -> tuple[str, dict[str, np.ndarray]]:
    names = list(PALETTE)
    main, second = rng.choice(len(names), size=2, replace=False)

    def jitter(rgb, amount=30):
        return np.clip(np.array(rgb, float) + rng.normal(0, amount, 3), 0, 255)

    return names[main], {"main": jitter(PALETTE[names[main]]), "second": jitter(PALETTE[names[second]]),
                         "dark": jitter((35, 30, 30), 12), "light": jitter((225, 235, 240), 12)}


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = Image.fromarray(rng.random((cells, cells)).astype(np.float32))
    return np.clip(np.asarray(grid.resize((size, size), Image.BICUBIC)), 0.0, 1.0)


def _part_mask(part: tuple, pose, scale: float, size: int) -> np.ndarray:
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    if part[0] == "poly":
        d.polygon(pose(part[2]), fill=255)
    else:
        d.line(pose(part[2]), fill=255, width=max(1, round(part[3] * scale)), joint="curve")
    return np.asarray(m, dtype=np.float32) / 255.0


def _outline(part: tuple, pose) -> list[tuple[float, float]]:
    pts = pose(part[2])
    return pts + [pts[0]] if part[0] == "poly" else pts


# ------------------------------------------------------------------------------------------------- styles

def _over(canvas: np.ndarray, mask: np.ndarray, colour) -> np.ndarray:
    return canvas * (1 - mask[..., None]) + np.asarray(colour, np.float32) * mask[..., None]


def _photo(rng, parts, pose, scale, colours, size) -> np.ndarray:
    # Textured background: two colours mixed by smooth noise, a vertical light falloff and film grain.
    a, b = (np.array(PALETTE[n], float) * rng.uniform(0.5, 1.1) for n in rng.choice(list(PALETTE), 2))
    mix = _noise(rng, size, int(rng.integers(3, 7)))[..., None]
    canvas = a * mix + b * (1 - mix)
    canvas *= (0.75 + 0.35 * np.linspace(0, 1, size))[:, None, None] ** rng.choice([-1, 1])
    union = np.maximum.reduce([_part_mask(p, pose, scale, size) for p in parts])
    shadow = np.asarray(Image.fromarray((union * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(size / 25)), np.float32) / 255.0
    shift = max(1, size // 24)
    canvas *= 1 - 0.45 * np.roll(shadow, (shift, shift), axis=(0, 1))[..., None]
    # Shaded, textured object: directional light over the object plus a mid-frequency material texture.
    light = rng.normal(size=2)
    light /= np.linalg.norm(light)
    ys, xs = np.mgrid[0:size, 0:size] / size - 0.5
    shade = np.clip(0.85 + 0.9 * (xs * light[0] + ys * light[1]), 0.4, 1.4)
    for part in parts:
        mask = _part_mask(part, pose, scale, size)
        texture = 0.85 + 0.3 * _noise(rng, size, int(rng.integers(6, 14)))
        canvas = canvas * (1 - mask[..., None]) + (colours[part[1]] * (shade * texture)[..., None]) * mask[..., None]
    return canvas + rng.normal(0, 6, canvas.shape)


def _sketch(rng, parts, pose, scale, colours, size) -> np.ndarray:
    paper = Image.new("L", (size, size), int(rng.integers(238, 256)))
    d = ImageDraw.Draw(paper)
    width = max(1, round(size / rng.uniform(55, 85)))
    for part in parts:
        if part[1] == "dark" or rng.random() < 0.25:  # hatch some regions the way pencil sketches shade them
            mask = _part_mask(part, pose, scale, size)
            ys, xs = np.mgrid[0:size, 0:size]
            angle = rng.uniform(0, math.pi)
            period = rng.uniform(4, 7) * SUPERSAMPLE
            hatch = ((xs * math.cos(angle) + ys * math.sin(angle)) % period) < width
            arr = np.asarray(paper, np.float32)
            arr = np.where(hatch & (mask > 0.5), 60.0, arr)
            paper = Image.fromarray(arr.astype(np.uint8))
            d = ImageDraw.Draw(paper)
        for _ in range(int(rng.integers(1, 3))):  # one or two wobbly passes per contour
            pts = _outline(part, pose)
            wobble = rng.normal(0, size / 180, (len(pts), 2))
            d.line([(x + dx, y + dy) for (x, y), (dx, dy) in zip(pts, wobble, strict=True)],
                   fill=int(rng.integers(10, 70)), width=width, joint="curve")
    arr = np.asarray(paper, np.float32)
    return np.repeat(arr[..., None], 3, axis=2) + rng.normal(0, 3, (size, size, 1))


def _cartoon(rng, parts, pose, scale, colours, size) -> np.ndarray:
    bg = tuple(int(v) for v in rng.integers(170, 256, 3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    if rng.random() < 0.6:  # a flat ground band
        d.rectangle((0, int(size * rng.uniform(0.65, 0.85)), size, size),
                    fill=tuple(int(v) for v in rng.integers(90, 220, 3)))
    outline = max(2, round(size / rng.uniform(20, 30)))
    vivid = {k: np.clip((v - 128) * 1.3 + 128, 0, 255) for k, v in colours.items()}
    for part in parts:
        fill = tuple(int(v) for v in vivid[part[1]])
        if part[0] == "poly":
            d.polygon(pose(part[2]), fill=fill)
            d.line(_outline(part, pose), fill=(0, 0, 0), width=outline, joint="curve")
        else:
            w = max(1, round(part[3] * scale))
            d.line(pose(part[2]), fill=(0, 0, 0), width=w + 2 * outline, joint="curve")
            d.line(pose(part[2]), fill=fill, width=w, joint="curve")
    return np.asarray(im, np.float32)


def _painting(rng, parts, pose, scale, colours, size) -> np.ndarray:
    # Paint a flat reference scene, then cover it with short strokes whose colour is sampled from it
    # and jittered: edges turn ragged and every region becomes a noisy brushed colour field.
    a, b = (0.6 * np.array(PALETTE[n], float) + 50 for n in rng.choice(list(PALETTE), 2))  # muted ground
    mix = _noise(rng, size, int(rng.integers(2, 5)))[..., None]
    ref = a * mix + b * (1 - mix)
    for part in parts:
        ref = _over(ref, _part_mask(part, pose, scale, size), colours[part[1]])
    ref = np.clip(ref, 0, 255)
    canvas = Image.fromarray(ref.astype(np.uint8)).filter(ImageFilter.GaussianBlur(size / 40))
    d = ImageDraw.Draw(canvas)
    length, width = size / rng.uniform(10, 16), max(2, round(size / rng.uniform(24, 34)))
    flow = rng.uniform(0, math.pi)
    n = int(2.2 * size * size / (length * width))
    centres = rng.uniform(0, size, (n, 2))
    angles = flow + rng.normal(0, 0.6, n)
    jitter = rng.normal(0, 18, (n, 3))
    for (x, y), ang, dc in zip(centres, angles, jitter, strict=True):
        c = ref[min(int(y), size - 1), min(int(x), size - 1)] + dc
        dx, dy = math.cos(ang) * length / 2, math.sin(ang) * length / 2
        d.line((x - dx, y - dy, x + dx, y + dy), fill=tuple(int(v) for v in np.clip(c, 0, 255)), width=width)
    return np.asarray(canvas, np.float32)


STYLES = {"photo": _photo, "sketch": _sketch, "cartoon": _cartoon, "painting": _painting}


# ---------------------------------------------------------------------------------------------- sampling

def _class_number(class_name: str) -> int:
    """A class's number in the image seeds: the benchmark's classes first, the pretraining shapes after."""
    if class_name in SHAPES:
        return CLASSES.index(class_name)
    return len(CLASSES) + PRETRAIN_CLASSES.index(class_name)


def render(domain: str, class_name: str, seed: int, index: int, image_size: int) -> tuple[Image.Image, str]:
    """One image and its caption; a pure function of its arguments. `class_name` is a benchmark class
    (`CLASSES`) or a pretraining shape (`PRETRAIN_CLASSES`)."""
    rng = integer_rng(seed, DOMAINS.index(domain), _class_number(class_name), index)
    size = image_size * SUPERSAMPLE
    pose, scale = _pose(rng, size)
    colour_name, colours = _colours(rng)
    parts = SHAPES[class_name] if class_name in SHAPES else PRETRAIN_SHAPES[class_name]
    arr = STYLES[domain](rng, parts, pose, scale, colours, size)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    im = im.resize((image_size, image_size), Image.LANCZOS)
    template = CAPTIONS[domain][int(rng.integers(len(CAPTIONS[domain])))]
    return im, template.format(c=class_name, col=colour_name)


# Rendering is single-threaded numpy/PIL: on 2 cores it was a third of the teacher's and over half of the
# student's pretraining stage. From this many images on, chunks go to one forked process per core.
PARALLEL_FROM = 1000


def _render_chunk(cells: tuple, seed: int, image_size: int) -> list[tuple[np.ndarray, str]]:
    return [(np.asarray(im), caption) for im, caption in (render(d, c, seed, i, image_size) for d, c, i in cells)]


def render_cells(cells, seed: int, image_size: int, workers: int | None = None) -> Iterator[tuple[Image.Image, str]]:
    """`render(domain, class, seed, index, image_size)` of each (domain, class, index) cell, in order. Each
    image is a pure function of its cell, so spreading chunks over `workers` processes (default one per core,
    in-process under `PARALLEL_FROM` images) gives the same pixels.

    A forked pool, not pipeline.parallel's dask cluster: the workers need nothing but this module, which a
    fork already holds, while a local cluster's spawned workers and nannies import their own interpreter --
    measured on the world stage, 15 CPU-seconds of start-up for 10 of rendering."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from itertools import repeat

    cells = [tuple(c) for c in cells]
    workers = min(8, os.cpu_count() or 1) if workers is None else workers
    if workers <= 1 or len(cells) < PARALLEL_FROM or "fork" not in multiprocessing.get_all_start_methods():
        for d, c, i in cells:
            yield render(d, c, seed, i, image_size)
        return
    size = -(-len(cells) // (4 * workers))  # a few chunks per worker: balanced, little per-task overhead
    chunks = [tuple(cells[k:k + size]) for k in range(0, len(cells), size)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for result in pool.map(_render_chunk, chunks, repeat(seed), repeat(image_size)):
            for arr, caption in result:
                yield Image.fromarray(arr, "RGB"), caption


def iter_samples(cfg: WorldConfig, workers: int | None = None) -> Iterator[Sample]:
    """All samples in a fixed order: domain, class, index (`render_cells`: `workers` processes)."""
    cells = [(d, c, i) for d in sorted(cfg.domains) for c in sorted(cfg.classes) for i in range(cfg.per_cell)]
    for (domain, class_name, i), (im, caption) in zip(cells, render_cells(cells, cfg.seed, cfg.image_size, workers),
                                                      strict=True):
        yield Sample(domain, class_name, i, im, caption)


def png_bytes(im: Image.Image) -> bytes:
    """PNG with fixed encoder settings and no metadata chunks, so equal pixels give equal bytes."""
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6, optimize=False)
    return buf.getvalue()


def write_world(cfg: WorldConfig, root: str | os.PathLike, progress=None) -> list[dict]:
    """Write ROOT/<domain>/<class>/<index>.png; return one {path, domain, class, caption} row per image.

    The folder is built beside ROOT and swapped in at the end, so ROOT is never half-written.
    """
    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    rows = []
    try:
        samples = iter_samples(cfg)
        for s in progress(samples) if progress else samples:
            dest = tmp / s.relpath
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(png_bytes(s.image))
            rows.append({"path": s.relpath, "domain": s.domain, "class": s.class_name, "caption": s.caption})
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rows


def sample_grid(cfg: WorldConfig, per_cell: int = 2, scale: int = 2) -> Image.Image:
    """Class x domain grid of the first `per_cell` images of each cell, labelled, for the README."""
    size, pad, label_w, label_h = cfg.image_size * scale, 4, 60, 16
    domains, classes = sorted(cfg.domains), sorted(cfg.classes)
    cell_w = per_cell * size + (per_cell - 1) * 2
    width = label_w + len(domains) * (cell_w + pad)
    height = label_h + len(classes) * (size + pad)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(grid)
    for j, domain in enumerate(domains):
        d.text((label_w + j * (cell_w + pad) + 2, 2), domain, fill=(0, 0, 0))
    for i, class_name in enumerate(classes):
        y = label_h + i * (size + pad)
        d.text((4, y + size // 2 - 6), class_name, fill=(0, 0, 0))
        for j, domain in enumerate(domains):
            for k in range(per_cell):
                im, _ = render(domain, class_name, cfg.seed, k, cfg.image_size)
                x = label_w + j * (cell_w + pad) + k * (size + 2)
                grid.paste(im.resize((size, size), Image.NEAREST), (x, y))
    return grid
