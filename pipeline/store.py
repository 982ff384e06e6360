"""The teacher store (`WORK/embeddings.h5`, named by `pipeline.layout`): writer, reader and provenance check (schema: docs/contracts.md).

Embedding datasets are contiguous and uncompressed so the reader can memory-map them
(`dataset.id.get_offset()` + `np.memmap`): random row reads cost a page fault, not an HDF5 chunk decode, and
memory does not grow with the store (docs/design.md, "Bounded memory"). The writer fills the file one chunk (one shard's
part) at a time, so writing is bounded too. `track_times=False` and a fixed `libver` make the bytes a pure
function of the content (docs/design.md, "Determinism").
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import layout
from .errors import UserError
from .io import atomic_path
from .layout import DEFAULT_STORE

SCHEMA_VERSION = 2  # 2: anchors tagged with the domain they name; raw per-template text features
SPLITS = ("train", "val")
_STR = h5py.string_dtype("utf-8")
REQUIRED = (
    "classes/names", "classes/display", "domains/names", "text/templates", "text/anchors",
    "text/per_template", "text/class_raw", "text/class", "text/anchor", "text/anchor_domain",
    "images/key", "images/label", "images/domain", "images/split", "images/clean",
)
REQUIRED_ATTRS = ("schema_version", "model", "pretrained", "embed_dim", "views", "shard_set_sha256", "dtype")


@dataclass
class ImageChunk:
    """Rows of one shard, in store order. `view_*` cover the training-split rows that have views."""

    keys: np.ndarray          # (n,) str
    labels: np.ndarray        # (n,) int64
    domains: np.ndarray       # (n,) int64
    splits: np.ndarray        # (n,) uint8, 0 train 1 val
    clean: np.ndarray         # (n, D)
    view_keys: np.ndarray     # (m,) str
    view_emb: np.ndarray      # (m, K, D)
    view_params: np.ndarray   # (m, K, 14)


def _strings(f: h5py.File, name: str, values) -> None:
    f.create_dataset(name, data=np.array(list(values), dtype=object), dtype=_STR, track_times=False)


def _array(f: h5py.File, name: str, data: np.ndarray) -> None:
    f.create_dataset(name, data=data, track_times=False)


def write_store(dest: str | os.PathLike, *, attrs: dict, class_names: list[str], display_names: list[str],
                domain_names: list[str], templates: list[str], anchors: list[str], text: dict[str, np.ndarray],
                n_images: int, n_views: int, chunks: Iterable[ImageChunk], param_columns: tuple[str, ...]) -> None:
    """Write the whole store atomically; `chunks` are consumed one at a time and must total the counts."""
    dim = int(attrs["embed_dim"])
    k = int(attrs["views"])
    dtype = np.dtype(attrs["dtype"])
    with atomic_path(dest, suffix=".h5") as tmp, h5py.File(tmp, "w", libver="earliest") as f:
        for key, value in attrs.items():
            f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
        _strings(f, "classes/names", class_names)
        _strings(f, "classes/display", display_names)
        _strings(f, "domains/names", domain_names)
        _strings(f, "text/templates", templates)
        _strings(f, "text/anchors", anchors)
        for name in ("per_template", "class_raw", "class", "anchor"):
            _array(f, f"text/{name}", np.asarray(text[name], dtype=np.float32))
        _array(f, "text/anchor_domain", np.asarray(text["anchor_domain"], dtype=np.int64))
        keys = f.create_dataset("images/key", (n_images,), dtype=_STR, track_times=False)
        labels = f.create_dataset("images/label", (n_images,), dtype=np.int64, track_times=False)
        domains = f.create_dataset("images/domain", (n_images,), dtype=np.int64, track_times=False)
        splits = f.create_dataset("images/split", (n_images,), dtype=np.uint8, track_times=False)
        clean = f.create_dataset("images/clean", (n_images, dim), dtype=dtype, track_times=False)
        if k > 0:
            vkeys = f.create_dataset("views/key", (n_views,), dtype=_STR, track_times=False)
            vemb = f.create_dataset("views/emb", (n_views, k, dim), dtype=dtype, track_times=False)
            vpar = f.create_dataset("views/params", (n_views, k, len(param_columns)), dtype=np.float32,
                                    track_times=False)
            vpar.attrs["columns"] = json.dumps(list(param_columns))
        row = vrow = 0
        for c in chunks:
            n, m = len(c.keys), len(c.view_keys)
            if row + n > n_images or vrow + m > n_views:
                raise ValueError("store chunks hold more rows than announced")
            sl = slice(row, row + n)
            keys[sl] = np.asarray(c.keys, dtype=object)
            labels[sl], domains[sl], splits[sl] = c.labels, c.domains, c.splits
            clean[sl] = np.asarray(c.clean, dtype=dtype)
            if k > 0 and m:
                vsl = slice(vrow, vrow + m)
                vkeys[vsl] = np.asarray(c.view_keys, dtype=object)
                vemb[vsl] = np.asarray(c.view_emb, dtype=dtype)
                vpar[vsl] = np.asarray(c.view_params, dtype=np.float32)
            row, vrow = row + n, vrow + m
        if row != n_images or vrow != n_views:
            raise ValueError(f"store chunks gave {row}/{vrow} rows, announced {n_images}/{n_views}")


def _decode_attr(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    if isinstance(value, np.generic):
        return value.item()
    return value


class StoreReader:
    """Read-only view of a store. Small arrays are loaded eagerly; embeddings are memory-mapped lazily, so an
    instance pickles cheaply into DataLoader workers and each worker maps the file itself."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"teacher store not found: {self.path} (run `rise-pipeline extract --steps embed`)")
        try:
            f = h5py.File(self.path, "r")
        except OSError as e:
            raise UserError(f"cannot open teacher store {self.path}: {e}") from None
        with f:
            version = f.attrs.get("schema_version")
            if version is not None and int(version) != SCHEMA_VERSION:
                raise UserError(f"{self.path}: store schema version {int(version)}, this tool reads version "
                                f"{SCHEMA_VERSION}; rerun `rise-pipeline extract --steps embed`")
            missing = [n for n in REQUIRED if n not in f] + [f"attr {a}" for a in REQUIRED_ATTRS if a not in f.attrs]
            if missing:
                raise UserError(f"{self.path} is not a teacher store: missing {', '.join(missing)}")
            self.attrs = {k: _decode_attr(v) for k, v in f.attrs.items()}
            s = lambda name: [str(x) for x in f[name].asstr()[()]]  # noqa: E731
            self.class_names, self.display_names = s("classes/names"), s("classes/display")
            self.domain_names, self.templates, self.anchors = s("domains/names"), s("text/templates"), s("text/anchors")
            self.text_per_template = f["text/per_template"][()]
            self.text_class_raw = f["text/class_raw"][()]
            self.text_class = f["text/class"][()]
            self.text_anchor = f["text/anchor"][()]
            self.anchor_domains = f["text/anchor_domain"][()]  # domain index each anchor names; -1: none
            self.keys = np.array(s("images/key"), dtype=object)
            self.labels = f["images/label"][()]
            self.domains = f["images/domain"][()]
            self.splits = f["images/split"][()]
            self._clean_loc = self._location(f["images/clean"])
            self.views_k = int(self.attrs["views"])
            self.has_views = self.views_k > 0 and "views/key" in f and len(f["views/key"]) > 0
            if self.has_views:
                self.view_keys = np.array(s("views/key"), dtype=object)
                self._vemb_loc = self._location(f["views/emb"])
                self._vpar_loc = self._location(f["views/params"])
                self.param_columns = json.loads(f["views/params"].attrs["columns"])
            else:
                self.view_keys = np.array([], dtype=object)
        self._row = {k: i for i, k in enumerate(self.keys)}
        self._vrow = {k: i for i, k in enumerate(self.view_keys)}
        self._maps: dict[str, np.memmap] = {}

    @staticmethod
    def _location(ds: h5py.Dataset) -> tuple[int | None, tuple, str]:
        offset = ds.id.get_offset()
        if offset is None and ds.size:
            raise UserError(f"dataset {ds.name} is not contiguous: the store was not written by this tool")
        return offset, ds.shape, ds.dtype.str

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_maps"] = {}  # memmaps are reopened per process
        return state

    def _map(self, name: str, loc) -> np.ndarray:
        if name not in self._maps:
            offset, shape, dtype = loc
            if offset is None:
                self._maps[name] = np.zeros(shape, dtype=dtype)
            else:
                self._maps[name] = np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=shape)
        return self._maps[name]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def embed_dim(self) -> int:
        return int(self.attrs["embed_dim"])

    def row_of(self, key: str) -> int:
        try:
            return self._row[key]
        except KeyError:
            raise KeyError(f"sample {key!r} is not in {self.path}") from None

    def view_row_of(self, key: str) -> int:
        try:
            return self._vrow[key]
        except KeyError:
            raise KeyError(f"sample {key!r} has no augmented views in {self.path}") from None

    def clean(self, rows) -> np.ndarray:
        """(n, D) float32 clean-view embeddings of `rows` (any order)."""
        return np.asarray(self._map("clean", self._clean_loc)[np.asarray(rows)], dtype=np.float32)

    def view_embedding(self, vrows, ks) -> np.ndarray:
        """(n, D) float32 embeddings of view ks[i] of view row vrows[i]."""
        if not self.has_views:
            raise ValueError(f"{self.path} holds no augmented views")
        return np.asarray(self._map("vemb", self._vemb_loc)[np.asarray(vrows), np.asarray(ks)], dtype=np.float32)

    def view_params(self, vrows, ks) -> np.ndarray:
        """(n, 14) float32 `ViewParams.to_array()` rows of view ks[i] of view row vrows[i]."""
        if not self.has_views:
            raise ValueError(f"{self.path} holds no augmented views")
        return np.asarray(self._map("vpar", self._vpar_loc)[np.asarray(vrows), np.asarray(ks)], dtype=np.float32)


def zero_shot_hits(reader: StoreReader, rows=None, block: int = 65536) -> np.ndarray:
    """Per row of `rows` (default: every row, in order), whether the teacher's zero-shot prediction is right:
    argmax over classes of clean embedding . text/class == label. One rule for the embed step's teacher
    report and distill's teacher baseline. Embeddings are read `block` rows at a time, so memory stays
    bounded (docs/design.md, "Bounded memory"); the answer is 1 byte a row."""
    n = len(reader) if rows is None else len(rows)
    picked = None if rows is None else np.asarray(rows, dtype=np.int64)
    hits = np.zeros(n, dtype=bool)
    for start in range(0, n, block):
        r = np.arange(start, min(n, start + block)) if picked is None else picked[start:start + block]
        hits[start:start + len(r)] = (reader.clean(r) @ reader.text_class.T).argmax(1) == reader.labels[r]
    return hits


def verify_store(work: str | os.PathLike, name: str = DEFAULT_STORE) -> StoreReader:
    """Open the store `name` in WORK (`layout.store`) and check that it was made from the shards now in WORK/shards."""
    from .shards import shard_set_checksum

    reader = StoreReader(layout.store(work, name))
    current = shard_set_checksum(work)
    stored = reader.attrs.get("shard_set_sha256")
    if stored != current:
        raise UserError(f"{reader.path} was built from a different shard set (store {str(stored)[:12]}, shards "
                        f"{current[:12]}); rerun `rise-pipeline extract --steps embed --work {work}`")
    return reader
