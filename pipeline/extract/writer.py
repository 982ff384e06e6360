"""Writing WebDataset shards: sample keys, the train/val split, shard planning and deterministic tars.

Layout (docs/contracts.md): `WORK/shards/<domain>/<domain>-NNNNNN.tar`, one domain per shard, samples in
key order. Reading them back (index, checksums, `iter_samples`) is `pipeline.shards`, shared with distill.

Stability under growth: shard boundaries are content-defined. Within a domain (samples in key order) a
shard ends after a sample whose key hashes to 0 modulo `shard_size`, or when it holds `shard_size`
samples. Adding or removing one image therefore changes only the shard that receives it (and at most
the following shards up to the next content-defined boundary), never the whole domain, so the embed
step's per-shard cache keeps what did not change.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import BadSample, UserError
from ..images import IMAGE_EXTS
from ..io import atomic_path, sha256_file, write_text
from ..seeding import digest64, unit_float
from .probe import reencode

IMAGE_EXT_SET = frozenset(IMAGE_EXTS.values())
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


def split_of(key: str, seed: int, val_fraction: float) -> str:
    """'val' or 'train' from a seeded hash of the key alone, so adding a file moves no other file."""
    return "val" if unit_float("split", seed, key) < val_fraction else "train"


def _is_boundary(key: str, shard_size: int) -> bool:
    return digest64("shard-boundary", key) % shard_size == 0


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
    if not isinstance(record.get("samples"), list):  # a shard from before offsets were recorded: rewrite it
        return None
    return record


def write_shard(unit: dict, shards_root: str, max_pixels: int) -> dict:
    """One unit of parallel work: write (or reuse) one shard; returns {name, sha256, n, reused}.

    The tar is written under a temporary name and renamed when complete, then its sidecar
    (fingerprint + sha256) is written; a shard without a matching sidecar is never reused.
    """
    tar_path = Path(shards_root) / unit["name"]
    record = _reusable(tar_path, unit["fingerprint"])
    if record is not None:
        return {"name": unit["name"], "sha256": record["sha256"], "n": record["n"], "samples": record["samples"],
                "reused": True}

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

    layout: list[tuple] = []
    with atomic_path(tar_path) as tmp, open(tmp, "wb") as f:
        n = write_tar(f, samples(), layout)
    digest = sha256_file(tar_path)
    # Where each sample's image bytes sit in the tar: distill reads planned batches by random access.
    offsets = [[key, ext, offset, size] for key, ext, offset, size in layout if ext in IMAGE_EXT_SET]
    record = {"fingerprint": unit["fingerprint"], "sha256": digest, "n": n, "samples": offsets}
    write_text(_sidecar(tar_path), json.dumps(record, sort_keys=True) + "\n")
    return {"name": unit["name"], "sha256": digest, "n": n, "samples": offsets, "reused": False}


def write_tar(fileobj, samples: Iterable[dict], layout: list | None = None) -> int:
    """Write samples ({'__key__', ext: bytes, ...}) as a WebDataset tar; returns the sample count.

    `layout`, when given, receives one (key, ext, data offset, size) tuple per member, in tar order.

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
                if layout is not None:  # the data ends where the (block-padded) archive now ends
                    layout.append((key, ext, tar.offset - -(-len(data) // 512) * 512, len(data)))
            n += 1
    return n


def encode_sample(key: str, ext: str, data: bytes, cls: int, meta: dict) -> dict:
    return {"__key__": key, ext: data, "cls": str(cls).encode("ascii"),
            "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")}


