"""Small images and bad files for the shard-step tests, all made here (no downloads)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    """A distinct image per seed (so no two fixtures are accidental duplicates)."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(h, w, channels), dtype=np.uint8)
    return Image.frombytes(mode, (w, h), arr.tobytes())


def jpeg(seed: int, w: int = 40, h: int = 30) -> bytes:
    return encode(noise(w, h, seed), "JPEG", quality=90)


def exif_rotated_jpeg(seed: int, w: int = 48, h: int = 32, orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(noise(w, h, seed), "JPEG", quality=90, exif=exif.tobytes())


def special_images(seed: int) -> dict[str, tuple[bytes, str, str]]:
    """file name -> (bytes, real extension, PIL mode): the modes and formats that must be kept as they are."""
    gray16 = Image.fromarray(np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 150 + seed)
    palette = noise(20, 20, seed + 1).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return {
        "gray.png": (encode(noise(20, 18, seed + 2, "L"), "PNG"), "png", "L"),
        "cmyk.jpg": (encode(noise(22, 18, seed + 3, "CMYK"), "JPEG"), "jpg", "CMYK"),
        "palette.gif": (encode(palette, "GIF"), "gif", "P"),
        "rgba.png": (encode(noise(20, 20, seed + 4, "RGBA"), "PNG"), "png", "RGBA"),
        "deep16.png": (encode(gray16, "PNG"), "png", "I;16"),
        "really a png.JPG": (encode(noise(21, 19, seed + 5), "PNG"), "png", "RGB"),  # name lies
        "photo.v2.final.JPEG": (jpeg(seed + 6), "jpg", "RGB"),
        "café ☕.webp": (encode(noise(20, 20, seed + 7), "WEBP", lossless=True), "webp", "RGB"),
        "scan.bmp": (encode(noise(18, 20, seed + 8), "BMP"), "bmp", "RGB"),
        "scan.tif": (encode(noise(18, 20, seed + 9), "TIFF"), "tiff", "RGB"),
        "rotated.jpg": (exif_rotated_jpeg(seed + 10), "jpg", "RGB"),
    }


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header claiming width x height pixels (900M by default) over a tiny body."""
    data = bytearray(encode(Image.new("L", (4, 4)), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the IHDR chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


def bad_files(seed: int) -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, expected skip reason)."""
    good = jpeg(seed, 64, 64)
    body_broken = bytearray(encode(noise(40, 40, seed + 1), "PNG"))
    body_broken[60:140] = bytes(80)  # zeroes inside IDAT: header fine, zlib data broken
    return {
        "empty.jpg": (b"", "empty"),
        "notes.txt": (b"class notes\n", "not_image"),
        ".DS_Store": (b"\x00\x00\x00\x01Bud1" + bytes(100), "not_image"),
        "Thumbs.db": (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(200), "not_image"),
        "cut.jpg": (good[: len(good) // 2], "truncated"),
        "broken.png": (bytes(body_broken), "corrupt"),
        "bomb.png": (png_bomb(), "decompression_bomb"),
        "icon.ico": (encode(noise(16, 16, seed + 2), "ICO"), "unsupported_format"),
    }


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def make_plain(root: Path, domains=("photo", "sketch"), classes=("cat", "dog"), per_class: int = 4,
               seed: int = 0) -> Path:
    """DATA/<domain>/<class>/img_<i>.jpg, every image distinct."""
    for d_i, domain in enumerate(domains):
        for c_i, cls in enumerate(classes):
            for i in range(per_class):
                write(root / domain / cls / f"img_{i}.jpg", jpeg(seed + 1000 * d_i + 100 * c_i + i))
    return root


def all_files(root: Path) -> list[str]:
    """Every file under root, relative, independently of the code under test."""
    out = []
    for dirpath, _, names in os.walk(root):
        out += [(Path(dirpath) / n).relative_to(root).as_posix() for n in names]
    return sorted(out)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p: (root / p).read_bytes() for p in all_files(root)}


def tar_bytes(samples) -> bytes:
    """The shard tar for `samples` ({'__key__', ext: bytes, ...}) in memory, through the real writer."""
    import io

    from pipeline.extract.writer import write_tar

    buf = io.BytesIO()
    write_tar(buf, samples)
    return buf.getvalue()
