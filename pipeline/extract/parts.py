"""Per-shard embedding parts: one shard in, one part file out (the embed step's resumable unit).

A part holds, for every sample of the shard, the clean-view embedding and, for training-split samples, K
augmented views and their parameters. Decoding and augmentation run in DataLoader worker processes (which
also stack the batch), so the process holding the teacher only moves tensors and runs the model. A part is
named by the shard's content checksum and the fingerprint of everything that shapes its numbers, so an
unchanged shard is never embedded twice and a changed teacher/augmentation/config is never reused.
Rows carry class and domain *names*; indices are assigned when parts are merged, so adding a domain or class
does not invalidate parts.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms import Compose, Normalize

from ..augment import N_PARAMS, AugmentConfig, apply_view, sample_views
from ..errors import BadSample, UserError
from ..images import MAX_PIXELS, decode_rgb, to_uint8_chw
from ..io import atomic_path, sha256_file
from ..shards import iter_samples
from .teacher import Teacher, load_teacher

PART_VERSION = 1


@dataclass(frozen=True)
class EmbedSpec:
    """What a worker needs to embed one shard (picklable, sent to dask workers)."""

    model: str
    pretrained: str
    device: str = "auto"
    precision: str = "fp32"
    views: int = 0
    seed: int = 0
    batch_size: int = 256
    loader_workers: int = 0
    dtype: str = "float16"
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_pixels: int = MAX_PIXELS  # the shard step's decode limit (from the shard index)

    def fingerprint(self, teacher: Teacher) -> str:
        """Hash of everything that changes a part's numbers (not batch size or worker counts)."""
        blob = dict(part_version=PART_VERSION, weights=teacher.provenance["pretrained_sha256"],
                    model=self.model, preprocess=teacher.provenance["preprocess"], precision=teacher.precision,
                    views=self.views, seed=self.seed, dtype=self.dtype, augment=self.augment.to_dict(),
                    max_pixels=self.max_pixels)
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


_TEACHERS: dict[tuple, Teacher] = {}


def _worker_device(device: str) -> str:
    """On a multi-GPU dask cluster, spread workers over the GPUs (one worker per GPU)."""
    if device not in ("auto", "cuda") or not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return device
    try:
        from dask.distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        return device
    index = name if isinstance(name, int) else int(hashlib.sha256(str(name).encode()).hexdigest(), 16)
    return f"cuda:{index % torch.cuda.device_count()}"


def get_teacher(spec: EmbedSpec) -> Teacher:
    """The teacher for `spec`, loaded once per process (each dask worker loads it once)."""
    key = (spec.model, spec.pretrained, _worker_device(spec.device), spec.precision)
    if key not in _TEACHERS:
        _TEACHERS[key] = load_teacher(spec.model, spec.pretrained, key[2], spec.precision)
    return _TEACHERS[key]


def _pil_part(preprocess) -> Compose:
    """open_clip's eval transform is PIL geometry + ToTensor + Normalize. Workers run the PIL part and ship
    uint8 (4x fewer bytes to pin and copy); `_to_input` does ToTensor's and Normalize's arithmetic on the device."""
    ts = list(getattr(preprocess, "transforms", []))
    if len(ts) < 2 or not isinstance(ts[-1], Normalize) or "ToTensor" not in type(ts[-2]).__name__:
        raise ValueError(f"unexpected teacher preprocessing (want ... ToTensor, Normalize): {preprocess}")
    return Compose(ts[:-2])


class SampleMeta(NamedTuple):
    """One decoded sample's row of its part file; `shard` is its shard's position in the loader's list."""

    shard: int
    key: str
    class_name: str
    domain: str
    split: str


class ViewMeta(NamedTuple):
    """A training sample whose K views are in the batch (in the order of the view images)."""

    shard: int
    key: str


class Skipped(NamedTuple):
    """A sample that could not be decoded: recorded in its part file, never embedded."""

    shard: int
    record: dict  # {"key", "reason", "detail"}, as the part file and the teacher report list it


class _Prepared(NamedTuple):
    """A decoded sample from a loader worker: clean image, and views + their parameters for training samples."""

    meta: SampleMeta
    clean: torch.Tensor                  # 3 x H x W uint8
    views: torch.Tensor | None = None    # K x 3 x H x W uint8
    params: np.ndarray | None = None     # K x N_PARAMS


class _Done(NamedTuple):
    """A loader worker finished its samples of one shard."""

    shard: int


class _Failed(NamedTuple):
    """A shard could not be read (a UserError in a worker, re-raised by the main process)."""

    message: str


class Batch(NamedTuple):
    """What `_collate` hands the process holding the teacher: images are [clean images; view images]."""

    errors: list[str]
    done: list[int]
    skipped: list[Skipped]
    meta: list[SampleMeta]
    images: torch.Tensor | None
    view_meta: list[ViewMeta]
    params: np.ndarray | None


@dataclass
class _PartState:
    """One shard's rows collected so far (filled batch by batch, written once every worker is done with it)."""

    meta: list[SampleMeta] = field(default_factory=list)
    clean: list[np.ndarray] = field(default_factory=list)
    view_keys: list[str] = field(default_factory=list)
    view_emb: list[np.ndarray] = field(default_factory=list)
    view_params: list[np.ndarray] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    done: int = 0


class _Shards(IterableDataset):
    """Decoded samples of several shards through one loader (no worker restart or pipeline drain between
    shards); worker i of n takes every n-th sample of each shard and reports each shard it finishes."""

    def __init__(self, paths: list[Path], teacher: Teacher, spec: EmbedSpec):
        self.paths, self.spec = paths, spec
        self.pil, self.size = _pil_part(teacher.preprocess), teacher.image_size

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for si, path in enumerate(self.paths):
            try:
                for i, s in enumerate(iter_samples([path])):
                    if i % nw == wid:
                        yield self._prepare(si, s)
            except UserError as e:
                # Raised in a worker, torch would re-wrap it with a traceback; the main process re-raises it.
                yield _Failed(str(e))
                return
            yield _Done(si)

    def _prepare(self, si: int, s) -> _Prepared | Skipped:
        meta = SampleMeta(si, s.key, s.meta.get("class_name", ""), s.meta.get("domain", ""),
                          s.meta.get("split", "train"))
        try:
            img = decode_rgb(s.data, self.spec.max_pixels)
        except BadSample as e:
            return Skipped(si, {"key": s.key, "reason": e.reason, "detail": e.detail})
        clean = to_uint8_chw(self.pil(img))
        if self.spec.views == 0 or meta.split != "train":
            return _Prepared(meta, clean)
        params = sample_views(s.key, self.spec.seed, self.spec.views, img.width, img.height, self.spec.augment)
        views = torch.stack([to_uint8_chw(apply_view(img, p, self.size)) for p in params])
        return _Prepared(meta, clean, views, np.stack([p.to_array() for p in params]))


def _collate(items: list) -> Batch:
    """Runs in the loader worker: one uint8 tensor [clean images; view images] per batch."""
    good = [it for it in items if isinstance(it, _Prepared)]
    viewed = [it for it in good if it.views is not None]
    images = [it.clean[None] for it in good] + [it.views for it in viewed]
    return Batch(
        errors=[it.message for it in items if isinstance(it, _Failed)],
        done=[it.shard for it in items if isinstance(it, _Done)],
        skipped=[it for it in items if isinstance(it, Skipped)],
        meta=[it.meta for it in good],
        images=torch.cat(images) if images else None,
        view_meta=[ViewMeta(it.meta.shard, it.meta.key) for it in viewed],
        params=np.stack([it.params for it in viewed]) if viewed else None,
    )


def _to_input(images: torch.Tensor, teacher: Teacher) -> torch.Tensor:
    x = images.to(teacher.device, non_blocking=True).float().div_(255)
    return TF.normalize(x, list(teacher.mean), list(teacher.std), inplace=True)


def _encode(teacher: Teacher, images: torch.Tensor, batch_size: int) -> np.ndarray:
    out = [teacher.encode_images(_to_input(images[i:i + batch_size], teacher)).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def write_part(item: dict, state: _PartState, spec: EmbedSpec, dim: int) -> dict:
    """Write one shard's rows (sorted by key, so the bytes do not depend on worker interleaving)."""
    k, meta, vkeys = spec.views, state.meta, state.view_keys
    order = np.argsort([m.key for m in meta], kind="stable")
    vorder = np.argsort(vkeys, kind="stable")
    arrays = {
        "keys": np.array([meta[i].key for i in order], dtype=str),
        "class_names": np.array([meta[i].class_name for i in order], dtype=str),
        "domains": np.array([meta[i].domain for i in order], dtype=str),
        "splits": np.array([meta[i].split == "val" for i in order], dtype=np.uint8),
        "clean": (np.concatenate(state.clean) if meta else np.zeros((0, dim), spec.dtype))[order],
        "view_keys": np.array([vkeys[i] for i in vorder], dtype=str),
        "view_emb": (np.concatenate(state.view_emb) if vkeys else np.zeros((0, k, dim), spec.dtype))[vorder],
        "view_params": (np.concatenate(state.view_params) if vkeys else np.zeros((0, k, N_PARAMS), np.float32))[vorder],
        "info": np.array(json.dumps({"shard": item["rel"], "sha256": item["sha256"],
                                     "bad": sorted(state.skipped, key=lambda b: b["key"]),
                                     "spec": asdict(spec)}, default=list)),
    }
    with atomic_path(item["part"], suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return {"rel": item["rel"], "n": len(meta), "views": len(vkeys), "bad": state.skipped}


def embed_shards(items: list[dict], spec: EmbedSpec) -> list[dict]:
    """Embed shards `items` (path, rel, sha256, part) into their part files, each written as soon as its
    shard is complete (so a killed run keeps finished shards); returns counts and skipped samples."""
    for item in items:
        path = Path(item["path"])
        if not path.is_file():
            raise UserError(f"shard {path} is missing; rerun `rise-pipeline extract --steps shard`")
        if sha256_file(path) != item["sha256"]:
            raise UserError(f"shard {path} is corrupt or changed since it was indexed (sha256 mismatch); "
                            "rerun `rise-pipeline extract --steps shard`")
    teacher = get_teacher(spec)
    k, dim = spec.views, teacher.embed_dim
    workers = spec.loader_workers
    if workers > 0 and multiprocessing.current_process().daemon:
        workers = 0  # daemonic dask workers cannot fork; set distributed.worker.daemon: false to allow it
    loader = DataLoader(_Shards([Path(it["path"]) for it in items], teacher, spec),
                        batch_size=max(1, spec.batch_size // (1 + k)), num_workers=workers, collate_fn=_collate,
                        pin_memory=teacher.device.startswith("cuda"), prefetch_factor=4 if workers else None)
    states: list[_PartState | None] = [_PartState() for _ in items]
    results = []
    for batch in loader:
        if batch.errors:
            raise UserError(batch.errors[0])
        for s in batch.skipped:
            states[s.shard].skipped.append(s.record)
        if batch.images is not None:
            z = _encode(teacher, batch.images, spec.batch_size).astype(spec.dtype)
            n = len(batch.meta)
            shard_of = np.array([m.shard for m in batch.meta])
            vshard_of = np.array([v.shard for v in batch.view_meta], dtype=np.int64)
            views = z[n:].reshape(len(vshard_of), k, dim) if k else None
            for si in np.unique(shard_of):
                st = states[si]
                st.meta += [m for m in batch.meta if m.shard == si]
                st.clean.append(z[:n][shard_of == si])
                if views is not None and (vshard_of == si).any():
                    st.view_keys += [v.key for v in batch.view_meta if v.shard == si]
                    st.view_emb.append(views[vshard_of == si])
                    st.view_params.append(batch.params[vshard_of == si])
        for si in batch.done:
            states[si].done += 1
            if states[si].done == max(1, workers):
                results.append(write_part(items[si], states[si], spec, dim))
                states[si] = None  # written: free its embeddings
    return results


SMALL_ARRAYS = ("keys", "class_names", "domains", "splits", "view_keys")


def load_part(path: Path, names: tuple[str, ...] | None = None) -> dict | None:
    """A part's arrays (all, or only `names`, e.g. SMALL_ARRAYS to plan a merge without loading embeddings),
    or None when unreadable: a killed write never has the final name, but a damaged file is recomputed."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {name: z[name] for name in (names or z.files) if name != "info"}
            out["info"] = json.loads(str(z["info"]))
        return out
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
