"""Atomic file output (docs/design.md, "Atomic outputs").

Everything is written under a temporary name in the destination folder and then `os.replace`d, so a
killed process never leaves a partial file under a final name, and DVC outputs are never modified in
place (which would corrupt a hardlink/symlink cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it over `dest`, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(dest: str | os.PathLike, data: bytes) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: str | os.PathLike, text: str) -> None:
    write_bytes(dest, text.encode("utf-8"))


def dumps_json(obj) -> str:
    """Canonical JSON (sorted keys, fixed indent) so identical content gives identical bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_json(dest: str | os.PathLike, obj) -> None:
    write_text(dest, dumps_json(obj))


def write_torch(dest: str | os.PathLike, obj) -> str:
    """`torch.save(obj)` to `dest` atomically; returns the bytes' SHA-256. Serialised in memory first:
    saved to a path, torch names the archive inside after the file -- here a random temporary name -- so
    the same object would give other bytes on every write."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    write_bytes(dest, data)
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()
