"""Decoding images the same way everywhere: bytes -> RGB PIL image with EXIF orientation applied, and the
one conversion of such an image to the uint8 tensor that data-loader workers ship (`to_uint8_chw`).

Shards keep the original encoded bytes (grayscale, CMYK, palette, RGBA, 16-bit, rotated photos all
stay as they were); conversion happens here, at embedding and training time, identically for the
teacher and the student so that replayed crop boxes land on the same pixels.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from .errors import BadSample

if TYPE_CHECKING:
    import torch

# Default pixel limit above which an image is treated as a decompression bomb. The shard step's `max_pixels`
# setting overrides it and is recorded in the shard index, so embed and distill decode with the same limit
# the shard step kept images under. It is the only limit: PIL's own is lifted while we decode (below).
MAX_PIXELS = 100_000_000
# Real image formats (as PIL names them) -> the extension a shard sample stores them under.
IMAGE_EXTS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif",
              "TIFF": "tiff"}


_lift_lock = threading.Lock()
_lifted = 0  # how many `only_our_pixel_limit` blocks are running, in all threads
_pil_limit: int | None = None  # PIL's value before the first of them


@contextmanager
def only_our_pixel_limit() -> Iterator[None]:
    """Lift PIL's own decompression-bomb limit for the duration, so that `max_pixels` is the only limit.

    PIL compares image sizes with one global, `PIL.Image.MAX_IMAGE_PIXELS` (~89M: a warning above it, an
    error above twice that), when it opens an image and again when some formats load or when an image is
    cropped; there is no per-call setting. Inside this block that global is None. Use it only around code that
    checks `width * height <= max_pixels` from the header (`Image.open` reads no more) before decoding,
    or that works on an image decoded so. The global goes back to its value when the last block in any
    thread ends; other code sees PIL's limit lifted only while one of these blocks runs."""
    global _lifted, _pil_limit
    with _lift_lock:
        if _lifted == 0:
            _pil_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _lifted += 1
    try:
        yield
    finally:
        with _lift_lock:
            _lifted -= 1
            if _lifted == 0:
                Image.MAX_IMAGE_PIXELS = _pil_limit


def decode_rgb(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes to an upright RGB image; raise BadSample when impossible. More than
    `max_pixels` pixels (from the header, before decoding) is a `decompression_bomb`, whatever PIL's limit."""
    try:
        with only_our_pixel_limit(), Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise BadSample("decompression_bomb", f"{im.width}x{im.height} pixels")
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except BadSample:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadSample("undecodable", str(e)) from None


def to_uint8_chw(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> contiguous 3 x H x W uint8 torch tensor (normalisation happens later, on the model's
    device, so workers ship 4x fewer bytes than float32)."""
    import numpy as np  # lazily: the shard step decodes images but never needs torch
    import torch

    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits instead of clipping (PIL's convert clips at 255).
        im = im.point(lambda v: v / 256).convert("L") if im.mode != "I" else im.convert("L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Composite transparency on white, the way a viewer shows it, rather than dropping alpha to black.
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")
