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

from .augment import AugmentConfig, apply_view, sample_views
from .errors import BadSample, UserError
from .images import decode_rgb
from .io import atomic_path, sha256_file
from .shards import iter_samples
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

    def fingerprint(self, teacher: Teacher) -> str:
        """Hash of everything that changes a part's numbers (not batch size or worker counts)."""
        blob = dict(part_version=PART_VERSION, weights=teacher.provenance["pretrained_sha256"],
                    model=self.model, preprocess=teacher.provenance["preprocess"], precision=teacher.precision,
                    views=self.views, seed=self.seed, dtype=self.dtype, augment=self.augment.to_dict())
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


class _ShardViews(IterableDataset):
    """Decoded, preprocessed samples of one shard; worker i of n takes every n-th sample."""

    def __init__(self, path: Path, teacher: Teacher, spec: EmbedSpec):
        self.path, self.spec = path, spec
        self.preprocess, self.size = teacher.preprocess, teacher.image_size
        self.mean, self.std = list(teacher.mean), list(teacher.std)

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        try:
            for i, s in enumerate(iter_samples([self.path])):
                if i % nw == wid:
                    yield self._prepare(s)
        except UserError as e:
            # Raised in a worker, torch would re-wrap it with a traceback; the main process re-raises it.
            yield {"error": str(e)}

    def _prepare(self, s) -> dict:
        row = {"key": s.key, "class_name": s.meta.get("class_name", ""), "domain": s.meta.get("domain", ""),
               "split": s.meta.get("split", "train")}
        try:
            img = decode_rgb(s.data)
        except BadSample as e:
            return {**row, "bad": e.reason, "detail": e.detail}
        row["clean"] = self.preprocess(img)
        if self.spec.views > 0 and row["split"] == "train":
            params = sample_views(s.key, self.spec.seed, self.spec.views, img.width, img.height, self.spec.augment)
            row["views"] = torch.stack([TF.normalize(TF.to_tensor(apply_view(img, p, self.size)), self.mean, self.std)
                                        for p in params])
            row["params"] = np.stack([p.to_array() for p in params])
        return row


def _collate(rows: list[dict]) -> dict:
    """Runs in the loader worker: stack images so the main process receives a few large tensors."""
    good = [r for r in rows if "clean" in r]
    viewed = [r for r in good if "views" in r]
    return {
        "errors": [r["error"] for r in rows if "error" in r],
        "bad": [{"key": r["key"], "reason": r["bad"], "detail": r["detail"]} for r in rows if "bad" in r],
        "meta": [(r["key"], r["class_name"], r["domain"], r["split"]) for r in good],
        "clean": torch.stack([r["clean"] for r in good]) if good else None,
        "view_keys": [r["key"] for r in viewed],
        "views": torch.cat([r["views"] for r in viewed]) if viewed else None,
        "params": np.stack([r["params"] for r in viewed]) if viewed else None,
    }


def _encode(teacher: Teacher, images: torch.Tensor, batch_size: int) -> np.ndarray:
    out = [teacher.encode_images(images[i:i + batch_size]).cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out).numpy()


def embed_shard(item: dict, spec: EmbedSpec) -> dict:
    """Embed shard `item` (path, sha256, part) into its part file; returns counts and skipped samples."""
    path, part = Path(item["path"]), Path(item["part"])
    if not path.is_file():
        raise UserError(f"shard {path} is missing; rerun `rise-pipeline extract --steps shard`")
    if sha256_file(path) != item["sha256"]:
        raise UserError(f"shard {path} is corrupt or changed since it was indexed (sha256 mismatch); "
                        "rerun `rise-pipeline extract --steps shard`")
    teacher = get_teacher(spec)
    k = spec.views
    workers = spec.loader_workers
    if workers > 0 and multiprocessing.current_process().daemon:
        workers = 0  # daemonic dask workers cannot fork; set distributed.worker.daemon: false to allow it
    per_batch = max(1, spec.batch_size // (1 + k))
    loader = DataLoader(_ShardViews(path, teacher, spec), batch_size=per_batch, num_workers=workers,
                        collate_fn=_collate, pin_memory=teacher.device.startswith("cuda"),
                        prefetch_factor=4 if workers else None)
    meta, clean, vkeys, vemb, vpar, bad = [], [], [], [], [], []
    for batch in loader:
        if batch["errors"]:
            raise UserError(batch["errors"][0])
        bad += batch["bad"]
        if batch["clean"] is None:
            continue
        n = len(batch["clean"])
        images = batch["clean"] if batch["views"] is None else torch.cat([batch["clean"], batch["views"]])
        z = _encode(teacher, images, spec.batch_size).astype(spec.dtype)
        meta += batch["meta"]
        clean.append(z[:n])
        if batch["views"] is not None:
            vkeys += batch["view_keys"]
            vemb.append(z[n:].reshape(len(batch["view_keys"]), k, -1))
            vpar.append(batch["params"])
    dim = teacher.embed_dim
    order = np.argsort([m[0] for m in meta], kind="stable")
    vorder = np.argsort(vkeys, kind="stable")
    arrays = {
        "keys": np.array([meta[i][0] for i in order], dtype=str),
        "class_names": np.array([meta[i][1] for i in order], dtype=str),
        "domains": np.array([meta[i][2] for i in order], dtype=str),
        "splits": np.array([meta[i][3] == "val" for i in order], dtype=np.uint8),
        "clean": (np.concatenate(clean) if clean else np.zeros((0, dim), spec.dtype))[order],
        "view_keys": np.array([vkeys[i] for i in vorder], dtype=str),
        "view_emb": (np.concatenate(vemb) if vemb else np.zeros((0, k, dim), spec.dtype))[vorder],
        "view_params": (np.concatenate(vpar) if vpar else np.zeros((0, k, 14), np.float32))[vorder],
        "info": np.array(json.dumps({"shard": item["rel"], "sha256": item["sha256"], "bad": bad,
                                     "spec": asdict(spec)}, default=list)),
    }
    with atomic_path(part, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return {"n": len(meta), "views": len(vkeys), "bad": bad}


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
