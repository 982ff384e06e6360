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

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.transforms import Compose, Normalize

from ..augment import AugmentConfig, apply_view, sample_views
from ..errors import BadSample, UserError
from ..images import MAX_PIXELS, decode_rgb
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


def _uint8(img) -> torch.Tensor:
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1)


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
                yield {"error": str(e)}
                return
            yield {"done": si}

    def _prepare(self, si: int, s) -> dict:
        row = {"shard": si, "key": s.key, "class_name": s.meta.get("class_name", ""),
               "domain": s.meta.get("domain", ""), "split": s.meta.get("split", "train")}
        try:
            img = decode_rgb(s.data, self.spec.max_pixels)
        except BadSample as e:
            return {**row, "bad": e.reason, "detail": e.detail}
        row["clean"] = _uint8(self.pil(img))
        if self.spec.views > 0 and row["split"] == "train":
            params = sample_views(s.key, self.spec.seed, self.spec.views, img.width, img.height, self.spec.augment)
            row["views"] = torch.stack([_uint8(apply_view(img, p, self.size)) for p in params])
            row["params"] = np.stack([p.to_array() for p in params])
        return row


def _collate(rows: list[dict]) -> dict:
    """Runs in the loader worker: one uint8 tensor [clean images; view images] per batch."""
    good = [r for r in rows if "clean" in r]
    viewed = [r for r in good if "views" in r]
    images = [r["clean"][None] for r in good] + [r["views"] for r in viewed]
    return {
        "errors": [r["error"] for r in rows if "error" in r],
        "done": [r["done"] for r in rows if "done" in r],
        "bad": [(r["shard"], {"key": r["key"], "reason": r["bad"], "detail": r["detail"]}) for r in rows if "bad" in r],
        "meta": [(r["shard"], r["key"], r["class_name"], r["domain"], r["split"]) for r in good],
        "images": torch.cat(images) if images else None,
        "view_meta": [(r["shard"], r["key"]) for r in viewed],
        "params": np.stack([r["params"] for r in viewed]) if viewed else None,
    }


def _to_input(images: torch.Tensor, teacher: Teacher) -> torch.Tensor:
    x = images.to(teacher.device, non_blocking=True).float().div_(255)
    return TF.normalize(x, list(teacher.mean), list(teacher.std), inplace=True)


def _encode(teacher: Teacher, images: torch.Tensor, batch_size: int) -> np.ndarray:
    out = [teacher.encode_images(_to_input(images[i:i + batch_size], teacher)).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def write_part(item: dict, state: dict, spec: EmbedSpec, dim: int) -> dict:
    """Write one shard's rows (sorted by key, so the bytes do not depend on worker interleaving)."""
    k, meta, vmeta = spec.views, state["meta"], state["vkeys"]
    order = np.argsort([m[0] for m in meta], kind="stable")
    vorder = np.argsort(vmeta, kind="stable")
    arrays = {
        "keys": np.array([meta[i][0] for i in order], dtype=str),
        "class_names": np.array([meta[i][1] for i in order], dtype=str),
        "domains": np.array([meta[i][2] for i in order], dtype=str),
        "splits": np.array([meta[i][3] == "val" for i in order], dtype=np.uint8),
        "clean": (np.concatenate(state["clean"]) if meta else np.zeros((0, dim), spec.dtype))[order],
        "view_keys": np.array([vmeta[i] for i in vorder], dtype=str),
        "view_emb": (np.concatenate(state["vemb"]) if vmeta else np.zeros((0, k, dim), spec.dtype))[vorder],
        "view_params": (np.concatenate(state["vpar"]) if vmeta else np.zeros((0, k, 14), np.float32))[vorder],
        "info": np.array(json.dumps({"shard": item["rel"], "sha256": item["sha256"],
                                     "bad": sorted(state["bad"], key=lambda b: b["key"]),
                                     "spec": asdict(spec)}, default=list)),
    }
    with atomic_path(item["part"], suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return {"rel": item["rel"], "n": len(meta), "views": len(vmeta), "bad": state["bad"]}


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
    states = [{"meta": [], "clean": [], "vkeys": [], "vemb": [], "vpar": [], "bad": [], "done": 0} for _ in items]
    results = []
    for batch in loader:
        if batch["errors"]:
            raise UserError(batch["errors"][0])
        for si, bad in batch["bad"]:
            states[si]["bad"].append(bad)
        if batch["images"] is not None:
            z = _encode(teacher, batch["images"], spec.batch_size).astype(spec.dtype)
            n = len(batch["meta"])
            shard_of = np.array([m[0] for m in batch["meta"]])
            vshard_of = np.array([m[0] for m in batch["view_meta"]], dtype=np.int64)
            views = z[n:].reshape(len(vshard_of), k, dim) if k else None
            for si in np.unique(shard_of):
                st = states[si]
                st["meta"] += [m[1:] for m in batch["meta"] if m[0] == si]
                st["clean"].append(z[:n][shard_of == si])
                if views is not None and (vshard_of == si).any():
                    st["vkeys"] += [m[1] for m in batch["view_meta"] if m[0] == si]
                    st["vemb"].append(views[vshard_of == si])
                    st["vpar"].append(batch["params"][vshard_of == si])
        for si in batch["done"]:
            states[si]["done"] += 1
            if states[si]["done"] == max(1, workers):
                results.append(write_part(items[si], states[si], spec, dim))
                states[si] = {}
    return results


def embed_shard(item: dict, spec: EmbedSpec) -> dict:
    """One shard (the dask unit on a cluster)."""
    return embed_shards([item], spec)[0]


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
