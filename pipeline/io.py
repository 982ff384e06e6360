"""Atomic file output (docs/design.md, "Atomic outputs").

Everything is written under a temporary name in the destination folder and then `os.replace`d, so a
killed process never leaves a partial file under a final name, and DVC outputs are never modified in
place (which would corrupt a hardlink/symlink cache). The temporary file is created as `open()` creates a
file -- mode 0666 less the process's umask -- so colleagues on shared storage read what the user's umask
lets them read (tempfile.mkstemp would make every output 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `dest`; on success rename it over `dest`, on error delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_file(dest.parent, f".{dest.name}.", suffix + ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _new_file(folder: Path, prefix: str, suffix: str) -> Path:
    """Create a new, empty file with a random name in `folder`, mode 0666 & ~umask (as `open()` does)."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"no free temporary name in {folder}")


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
