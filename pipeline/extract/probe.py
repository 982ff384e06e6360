"""Inspecting a file's bytes: is it an image, which format really, does it fully decode, how big.

The format comes from the content (PIL's identification), never from the file name. A file is fully
decoded once here, so an image that PIL can open but not decode (truncated, corrupt data) is skipped
at shard time instead of failing an embedding run hours later. Modes are recorded, not converted.
"""

from __future__ import annotations

import hashlib
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import BadSample
from ..images import IMAGE_EXTS, MAX_PIXELS, only_our_pixel_limit

EXIF_ORIENTATION = 0x0112
# Re-encoding keeps the format where it can; the rest become PNG (lossless, every mode).
_REENCODE = {"JPEG": ("JPEG", "jpg"), "MPO": ("JPEG", "jpg"), "WEBP": ("WEBP", "webp"), "PNG": ("PNG", "png")}
_JPEG_MODES = ("L", "RGB", "CMYK")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (reading the header only) and check the pixel count against `max_pixels`, the only limit: callers
    hold `only_our_pixel_limit()` around this and whatever they do with the image, as `decode_rgb` does."""
    if not data:
        raise BadSample("empty", "zero-byte file")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadSample("not_image", "not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise BadSample("corrupt", _first_line(e)) from None
    if im.width * im.height > max_pixels:
        raise BadSample("decompression_bomb", f"{im.width}x{im.height} pixels > limit {max_pixels}")
    return im


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def inspect_bytes(data: bytes, max_pixels: int = MAX_PIXELS) -> dict:
    """Describe an encoded image; raise BadSample (with a reason) when it is not a usable image."""
    with only_our_pixel_limit():
        im = _open(data, max_pixels)
        if im.format not in IMAGE_EXTS:
            raise BadSample("unsupported_format", f"{im.format} (supported: {', '.join(sorted(IMAGE_EXTS))})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                orientation = int(im.getexif().get(EXIF_ORIENTATION, 1) or 1)
                im.load()
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            msg = _first_line(e)
            raise BadSample("truncated" if "truncated" in msg.lower() else "corrupt", msg) from None
    return {"format": im.format, "ext": IMAGE_EXTS[im.format], "width": im.width, "height": im.height,
            "mode": im.mode, "exif_orientation": orientation if 1 <= orientation <= 8 else 1}


def probe_file(path: str, max_pixels: int = MAX_PIXELS) -> dict:
    """{'sha256', 'size', and inspect_bytes' fields} or {'skip': reason, 'detail', 'sha256', 'size'}."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return {"skip": "unreadable", "detail": _first_line(e)}
    out = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    try:
        out.update(inspect_bytes(data, max_pixels))
    except BadSample as e:
        out.update(skip=e.reason, detail=e.detail)
    return out


def probe_batch(paths: list[str], max_pixels: int = MAX_PIXELS) -> list[dict]:
    """One unit of parallel work: probe several files (results are small; the bytes stay here)."""
    return [probe_file(p, max_pixels) for p in paths]


def reencode(data: bytes, max_side: int, max_pixels: int = MAX_PIXELS) -> tuple[bytes, dict] | None:
    """Shrink an image whose longer side exceeds `max_side`; None when it is small enough already.

    EXIF orientation is applied first because re-encoding drops the EXIF block; the result is upright
    (orientation 1). JPEG stays JPEG (quality 95), WebP stays lossless WebP, others become PNG.
    """
    with only_our_pixel_limit():
        im = _open(data, max_pixels)
        if max(im.width, im.height) <= max_side:
            return None
        src_format = im.format
        im = ImageOps.exif_transpose(im)
        if im.mode == "P":
            im = im.convert("RGBA")
        scale = max_side / max(im.width, im.height)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS if im.mode not in ("I;16", "I;16B", "I;16L", "1")
                       else Image.Resampling.NEAREST)
        fmt, ext = _REENCODE.get(src_format, ("PNG", "png"))
        if fmt == "JPEG" and im.mode not in _JPEG_MODES:
            fmt, ext = "PNG", "png"
        buf = io.BytesIO()
        options = {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}, "PNG": {"optimize": False}}[fmt]
        im.save(buf, format=fmt, **options)
        return buf.getvalue(), {"format": fmt, "ext": ext, "width": im.width, "height": im.height,
                                "mode": im.mode, "exif_orientation": 1}
