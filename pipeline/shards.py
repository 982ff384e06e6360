"""WebDataset shards: sample keys, the train/val split, shard planning, writing, validating and reading.

Layout (docs/contracts.md): `WORK/shards/<domain>/<domain>-NNNNNN.tar`, one domain per shard, samples in
key order, plus `index.json` (the shard list with checksums) and `stats.json`.

Stability under growth: shard boundaries are content-defined. Within a domain (samples in key order) a
shard ends after a sample whose key hashes to 0 modulo `shard_size`, or when it holds `shard_size`
samples. Adding or removing one image therefore changes only the shard that receives it (and at most
the following shards up to the next content-defined boundary), never the whole domain, so the embed
step's per-shard cache keeps what did not change.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadSample, UserError
from .io import atomic_path, sha256_file, write_text

SHARDS_DIR = "shards"
INDEX_NAME = "index.json"
STATS_NAME = "stats.json"
# Real image formats (as PIL names them) -> the extension a sample stores them under.
IMAGE_EXTS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif",
              "TIFF": "tiff"}
_EXT_SET = frozenset(IMAGE_EXTS.values())
_KEY_SAFE = re.compile(r"[A-Za-z0-9_\-/]")
FORMAT_VERSION = 1  # bump when the shard bytes for the same plan change (invalidates reuse)
TAR_MTIME = 0  # fixed member metadata: same inputs -> byte-identical tars


# ---------------------------------------------------------------- keys and split

def make_key(rel_path: str) -> str:
    """Key of a sample from its source path relative to the data root.

    Letters, digits, '_', '-' and '/' are kept; every other character (the dots WebDataset would cut
    at, spaces, unicode, '~' itself) becomes '~' + the upper-case hex of its UTF-8 bytes. The mapping is
    injective, so distinct paths can never share a key, and it depends on nothing but the path.
    """
    out = []
    for i, ch in enumerate(rel_path.strip("/")):
        # A leading '_' is escaped too: webdataset skips members named like '__meta__'.
        if _KEY_SAFE.fullmatch(ch) and not (i == 0 and ch == "_"):
            out.append(ch)
        else:
            out.append("".join(f"~{b:02X}" for b in ch.encode("utf-8")))
    return "".join(out)


def _unit_hash(*parts: str) -> float:
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, seed: int, val_fraction: float) -> str:
    """'val' or 'train' from a seeded hash of the key alone, so adding a file moves no other file."""
    return "val" if _unit_hash("split", str(seed), key) < val_fraction else "train"


def _is_boundary(key: str, shard_size: int) -> bool:
    digest = hashlib.sha256(("shard-boundary\x1f" + key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % shard_size == 0


# ---------------------------------------------------------------- planning

def shard_name(domain: str, index: int) -> str:
    return f"{domain}/{domain}-{index:06d}.tar"


def plan_domain(keys: Sequence[str], shard_size: int) -> list[list[str]]:
    """Cut one domain's keys (any order; sorted here) into shards with content-defined boundaries."""
    if shard_size < 1:
        raise UserError(f"shard_size must be >= 1, got {shard_size}")
    shards: list[list[str]] = []
    current: list[str] = []
    for key in sorted(keys):
        current.append(key)
        if len(current) >= shard_size or _is_boundary(key, shard_size):
            shards.append(current)
            current = []
    if current:
        shards.append(current)
    return shards


def plan_units(rows: list[dict], shard_size: int, max_side: int) -> list[dict]:
    """Group kept manifest rows into shard units; fills each row's `shard` and `position`.

    A unit carries everything its worker needs (source paths, keys, metas) and a fingerprint of
    exactly that plus the write options, so a rerun can tell a complete shard of the same plan.
    """
    kept = [r for r in rows if r["status"] == "kept"]
    by_key = {r["key"]: r for r in kept}
    if len(by_key) != len(kept):
        raise UserError("two kept files map to the same sample key; report this as a bug")
    by_domain: dict[str, list[str]] = {}
    for r in kept:
        by_domain.setdefault(r["domain"], []).append(r["key"])
    units = []
    for domain in sorted(by_domain):
        for i, keys in enumerate(plan_domain(by_domain[domain], shard_size)):
            name = shard_name(domain, i)
            samples = []
            for pos, key in enumerate(keys):
                r = by_key[key]
                r["shard"], r["position"] = name, pos
                samples.append({"key": key, "path": r["path"], "ext": r["ext"], "cls": r["meta"]["class_index"],
                                "sha256": r["sha256"], "meta": r["meta"]})
            fp_input = {"version": FORMAT_VERSION, "max_side": max_side,
                        "samples": [{k: s[k] for k in ("key", "ext", "cls", "sha256", "meta")} for s in samples]}
            fingerprint = hashlib.sha256(json.dumps(fp_input, sort_keys=True).encode("utf-8")).hexdigest()
            units.append({"name": name, "domain": domain, "samples": samples, "max_side": max_side,
                          "fingerprint": fingerprint})
    return units


# ---------------------------------------------------------------- writing

def _sidecar(tar_path: Path) -> Path:
    return tar_path.with_suffix(".fp")


def _reusable(tar_path: Path, fingerprint: str) -> dict | None:
    """The sidecar's record when the shard on disk was completed for this very plan and is intact."""
    side = _sidecar(tar_path)
    if not (tar_path.is_file() and side.is_file()):
        return None
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != fingerprint or record.get("sha256") != sha256_file(tar_path):
        return None
    return record


def write_shard(unit: dict, shards_root: str, max_pixels: int) -> dict:
    """One unit of parallel work: write (or reuse) one shard; returns {name, sha256, n, reused}.

    The tar is written under a temporary name and renamed when complete, then its sidecar
    (fingerprint + sha256) is written; a shard without a matching sidecar is never reused.
    """
    from .probe import reencode

    tar_path = Path(shards_root) / unit["name"]
    record = _reusable(tar_path, unit["fingerprint"])
    if record is not None:
        return {"name": unit["name"], "sha256": record["sha256"], "n": record["n"], "reused": True}

    def samples():
        for s in unit["samples"]:
            data = Path(s["path"]).read_bytes()
            if hashlib.sha256(data).hexdigest() != s["sha256"]:
                raise UserError(f"{s['path']} changed while the shard step was running; run it again")
            meta, ext = dict(s["meta"]), s["ext"]
            if unit["max_side"] > 0:
                try:
                    smaller = reencode(data, unit["max_side"], max_pixels)
                except (BadSample, OSError, ValueError) as e:
                    # Probing decoded it already; keep the original bytes rather than lose the sample.
                    smaller, meta["resize_error"] = None, str(e).splitlines()[0] if str(e) else type(e).__name__
                if smaller is not None:
                    data, info = smaller
                    meta["resized_from"] = [meta["width"], meta["height"]]
                    ext = info.pop("ext")
                    meta.update(info)
            yield encode_sample(s["key"], ext, data, s["cls"], meta)

    with atomic_path(tar_path) as tmp, open(tmp, "wb") as f:
        n = write_tar(f, samples())
    digest = sha256_file(tar_path)
    write_text(_sidecar(tar_path), json.dumps({"fingerprint": unit["fingerprint"], "sha256": digest, "n": n},
                                              sort_keys=True) + "\n")
    return {"name": unit["name"], "sha256": digest, "n": n, "reused": False}


def write_tar(fileobj, samples: Iterable[dict]) -> int:
    """Write samples ({'__key__', ext: bytes, ...}) as a WebDataset tar; returns the sample count.

    The same layout as webdataset's TarWriter (members `<key>.<ext>` in sorted-extension order, a
    streamed PAX tar) but with every header field fixed (mtime 0, uid/gid 0, names 'rise', mode 0444),
    so the bytes depend only on the samples. Plain `tarfile` rather than TarWriter because importing
    webdataset imports torch (seconds per dask worker) and the shard step needs neither.
    """
    n = 0
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            for ext in sorted(k for k in sample if k != "__key__"):
                data = sample[ext]
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode = len(data), TAR_MTIME, 0o444
                info.uid = info.gid = 0
                info.uname = info.gname = "rise"
                tar.addfile(info, io.BytesIO(data))
            n += 1
    return n


def encode_sample(key: str, ext: str, data: bytes, cls: int, meta: dict) -> dict:
    return {"__key__": key, ext: data, "cls": str(cls).encode("ascii"),
            "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")}


# ---------------------------------------------------------------- reading (API for the embed/distill steps)

@dataclass
class Sample:
    key: str
    data: bytes
    ext: str
    cls: int
    meta: dict = field(default_factory=dict)


def shards_dir(work: str | Path) -> Path:
    return Path(work) / SHARDS_DIR


def load_index(work: str | Path) -> dict:
    """WORK/shards/index.json; a missing or unreadable index is a user error naming the file."""
    path = shards_dir(work) / INDEX_NAME
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
    root = shards_dir(work)
    return [root / s["path"] for s in index["shards"] if wanted is None or s["domain"] in wanted]


def shard_set_checksum(work: str | Path) -> str:
    """sha256 over the sorted 'relative_path sha256' lines of the index: identifies the shard set."""
    return checksum_of_entries(load_index(work)["shards"])


def checksum_of_entries(entries: Iterable[dict]) -> str:
    lines = sorted(f"{e['path']} {e['sha256']}\n" for e in entries)
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _expected_counts(path: Path) -> int | None:
    """The sample count the index records for `path`, when it sits in an indexed shards folder."""
    index_path = path.parent.parent / INDEX_NAME
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


def tar_bytes(samples: Iterable[dict]) -> bytes:
    """The tar for `samples` in memory (tests and small shards)."""
    buf = io.BytesIO()
    write_tar(buf, samples)
    return buf.getvalue()

