"""Reading the shard set: its index, its checksum, and its samples (shared by the embed and distill steps).

Layout (docs/contracts.md): `WORK/shards/<domain>/<domain>-NNNNNN.tar` plus `index.json` (the shard list
with checksums and counts) and `stats.json`. Writing them is `pipeline.extract.writer`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import layout
from .errors import UserError
from .images import IMAGE_EXTS, MAX_PIXELS

_EXT_SET = frozenset(IMAGE_EXTS.values())

@dataclass
class Sample:
    key: str
    data: bytes
    ext: str
    cls: int
    meta: dict = field(default_factory=dict)


def decode_limit(index: dict) -> int:
    """The pixel limit the shard step kept images under (`shard.max_pixels`, recorded in the index):
    every later decode uses it, so no step drops an image that another kept."""
    return int((index.get("config") or {}).get("max_pixels", MAX_PIXELS))


def load_index(work: str | Path) -> dict:
    """WORK/shards/index.json; a missing or unreadable index is a user error naming the file."""
    path = layout.shard_index(work)
    if not path.is_file():
        raise UserError(f"no shard index at {path}; run `rise-pipeline extract --steps shard` first")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read shard index {path}: {e}") from None
    if not isinstance(index, dict) or not {"classes", "domains", "shards"} <= set(index):
        raise UserError(f"shard index {path} lacks classes/domains/shards")
    return index


def shard_paths(work: str | Path, domains: Iterable[str] | None = None) -> list[Path]:
    """Paths of the shards listed in the index, optionally only those of `domains` (index order)."""
    index = load_index(work)
    wanted = None if domains is None else list(domains)
    if wanted is not None:
        unknown = sorted(set(wanted) - set(index["domains"]))
        if unknown:
            raise UserError(f"unknown domain(s) {', '.join(unknown)}; the shards hold: {', '.join(index['domains'])}")
    root = layout.shards_dir(work)
    return [root / s["path"] for s in index["shards"] if wanted is None or s["domain"] in wanted]


def shard_set_checksum(work: str | Path) -> str:
    """sha256 over the sorted 'relative_path sha256' lines of the index: identifies the shard set."""
    return checksum_of_entries(load_index(work)["shards"])


def checksum_of_entries(entries: Iterable[dict]) -> str:
    lines = sorted(f"{e['path']} {e['sha256']}\n" for e in entries)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _expected_counts(path: Path) -> int | None:
    """The sample count the index records for `path`, when it sits in an indexed shards folder."""
    index_path = path.parent.parent / layout.INDEX_NAME
    try:
        counts = _index_counts(str(index_path), index_path.stat().st_mtime_ns)
    except OSError:
        return None
    return counts.get(f"{path.parent.name}/{path.name}")


@functools.lru_cache(maxsize=8)
def _index_counts(index_path: str, mtime_ns: int) -> dict[str, int]:
    """{relative shard path: n} of an index (cached per file version: readers ask once per shard)."""
    try:
        return {e["path"]: int(e["n"]) for e in json.loads(Path(index_path).read_text(encoding="utf-8"))["shards"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _check_tar_end(path: Path) -> None:
    """A complete tar ends with two zero blocks; streaming readers silently stop at a cut header."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < 1024 or size % 512:
                raise UserError(f"shard {path} is truncated or not a tar file ({size} bytes)")
            f.seek(size - 1024)
            if f.read(1024) != bytes(1024):
                raise UserError(f"shard {path} is truncated (no end-of-archive marker)")
    except OSError as e:
        raise UserError(f"cannot read shard {path}: {e}") from None


def iter_samples(paths: Iterable[str | Path]) -> Iterator[Sample]:
    """Samples of the given shards, in order, read with webdataset.

    A truncated or corrupt shard (cut tar, missing sample part, fewer samples than the index says)
    raises UserError naming the shard rather than yielding a silently shorter dataset.
    """
    import webdataset as wds

    for p in paths:
        path = Path(p)
        _check_tar_end(path)
        expected = _expected_counts(path)
        n = 0
        try:
            # No node/worker splitting: callers choose which shards each DataLoader worker reads, and
            # webdataset's default split would leave worker i>0 of a one-shard list with no samples.
            dataset = wds.WebDataset(str(path), shardshuffle=False, empty_check=False,
                                     nodesplitter=None, workersplitter=None)
            for raw in dataset:
                yield _to_sample(raw, path)
                n += 1
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - tarfile/webdataset raise many types for a bad file
            raise UserError(f"shard {path} is corrupt: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        if expected is not None and n != expected:
            raise UserError(f"shard {path} holds {n} samples but the index says {expected}")


def _to_sample(raw: dict, path: Path) -> Sample:
    key = raw["__key__"]
    exts = [k for k in raw if k in _EXT_SET]
    if len(exts) != 1 or "cls" not in raw or "json" not in raw:
        parts = sorted(k for k in raw if not k.startswith("__"))
        raise UserError(f"shard {path}: sample {key} is incomplete (has {', '.join(parts) or 'nothing'})")
    try:
        cls = int(raw["cls"].decode("ascii"))
        meta = json.loads(raw["json"].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"shard {path}: sample {key} has an unreadable cls/json ({e})") from None
    return Sample(key=key, data=raw[exts[0]], ext=exts[0], cls=cls, meta=meta)



# ---------------------------------------------------------------- random access (distill's planned batches)

@dataclass(frozen=True)
class Location:
    """Where one sample's image bytes sit: shard file, member extension, byte offset and size."""

    path: Path
    key: str
    ext: str
    offset: int
    size: int


def sample_locations(work: str | Path, index: dict | None = None) -> dict[str, Location]:
    """key -> Location of every sample, from the offsets the shard step records in the index."""
    index = load_index(work) if index is None else index
    root = layout.shards_dir(work)
    out: dict[str, Location] = {}
    for entry in index["shards"]:
        if not isinstance(entry.get("samples"), list):
            raise UserError(f"the shard index {layout.shard_index(work)} records no sample offsets (written by an older "
                            "version); rerun `rise-pipeline extract --steps shard`, which adds them and reuses "
                            "the shard bytes")
        path = root / entry["path"]
        for key, ext, offset, size in entry["samples"]:
            out[key] = Location(path, key, ext, int(offset), int(size))
    return out


class ShardReader:
    """Reads sample bytes by offset (`os.pread`), one open file per shard and process.

    Before trusting an offset it checks the tar header just in front of it (member name and size): a
    shard rewritten or damaged after its index was written is refused with one line, never read as some
    other sample's bytes. Picklable (DataLoader workers reopen the files they need)."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def __getstate__(self) -> dict:
        return {"_fds": {}}

    def __del__(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise UserError(f"cannot read shard {path}: {e.strerror}") from None
            self._fds[path] = fd
        return fd

    def read(self, loc: Location) -> bytes:
        fd = self._fd(loc.path)
        header = os.pread(fd, 512, loc.offset - 512) if loc.offset >= 512 else b""
        name = f"{loc.key}.{loc.ext}".encode("ascii", "replace")[:100]
        ok = len(header) == 512 and header[:100].rstrip(b"\0") == name and _header_size(header) == loc.size
        data = os.pread(fd, loc.size, loc.offset) if ok else b""
        if not ok or len(data) != loc.size:
            raise UserError(f"shard {loc.path} does not match its index at sample {loc.key} (rewritten or damaged "
                            "since); rerun `rise-pipeline extract --steps shard`, which rewrites it")
        return data


def _header_size(header: bytes) -> int:
    try:
        return int(header[124:136].rstrip(b"\0 ").strip() or b"0", 8)
    except ValueError:
        return -1
