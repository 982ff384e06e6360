"""Distill data: source shards streamed with WebDataset, joined by key to the teacher store.

Training items replay one stored augmented view per (sample, epoch) for the student, at the student's
resolution, and carry the teacher's embedding of *that* view as the KD target (docs/design.md, "Replayable views").
The view of a sample in epoch e is `perm(seed, key)[e % K]`: a per-sample permutation, so no view is
reused before all K have been used, and the choice does not depend on which other samples exist.

Without stored views (a store built with K = 0) the student gets a fresh augmentation drawn from a
(seed, epoch, key)-seeded generator, and the KD target is the teacher's *clean* embedding. This is an
approximation of RISE, whose teacher sees the same augmented image as the student.

Order is a pure function of (seed, epoch, number of workers): shards are permuted per epoch, dealt to
workers round-robin, read a few at a time in a seeded interleave and passed through a seeded shuffle
buffer. The store is only touched through `StoreReader`, which memory-maps its embeddings inside each
worker, so memory stays bounded whatever the store's size.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms.functional as F
from torch.utils.data import IterableDataset, get_worker_info
from torchvision.transforms import InterpolationMode

from ..augment import AugmentConfig, ViewParams, apply_view, sample_view
from ..errors import BadSample
from ..images import MAX_PIXELS, decode_rgb
from ..seeding import seeded_rng
from ..shards import iter_samples

log = logging.getLogger(__name__)

TRAIN, VAL = 0, 1
# Shards read at once per worker: mixes domains/classes within a batch without opening every file.
OPEN_SHARDS = 8


class Item(NamedTuple):
    """One training or evaluation sample. DataLoader's default collate batches a list of these into one
    `Item` of batched fields (image B x 3 x S x S, label B, teacher B x D, domain B, row B)."""

    image: torch.Tensor    # uint8 3 x S x S (normalisation happens on the model's device)
    label: int
    teacher: torch.Tensor  # (D,) float32 teacher embedding: of the same view (training), of the clean image (eval)
    domain: int
    row: int               # the sample's store row


def view_index(seed: int, key: str, epoch: int, k: int) -> int:
    """Stored view used for `key` in `epoch`: a per-sample permutation of the K views, cycled."""
    return int(seeded_rng("view-schedule", seed, key).permutation(k)[epoch % k])


def to_uint8_tensor(img) -> torch.Tensor:
    """RGB PIL image -> 3 x H x W uint8 (normalisation happens on the model's device)."""
    return torch.from_numpy(np.array(img, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def eval_image(img, size: int) -> torch.Tensor:
    """RISE's test transform: resize to size x size (no crop)."""
    return to_uint8_tensor(F.resize(img, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True))


def augment_config_of(store) -> AugmentConfig:
    raw = store.attrs.get("augment")
    if not isinstance(raw, dict):
        return AugmentConfig()
    return AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def select_rows(store, domains: Sequence[int], splits: Sequence[int] | None = None) -> np.ndarray:
    """Boolean mask over store rows: in `domains` and (when given) in `splits`."""
    mask = np.isin(store.domains, list(domains))
    if splits is not None:
        mask &= np.isin(store.splits, list(splits))
    return mask


class _StoreStream(IterableDataset):
    """Shared plumbing: which shards this worker reads, and which of their samples (store rows) are used."""

    def __init__(self, shards: Sequence[Path], store, selected: np.ndarray, image_size: int, seed: int):
        super().__init__()
        self.shards = [Path(p) for p in shards]
        self.store = store
        self.selected = np.asarray(selected, dtype=bool)
        self.image_size = image_size
        self.seed = seed
        self.epoch = 0
        # The decode limit the shard step kept images under (recorded by embed); older stores: the default.
        self.max_pixels = int(store.attrs.get("max_pixels", MAX_PIXELS))

    def __len__(self) -> int:
        return int(self.selected.sum())

    def _wanted(self, key: str) -> int | None:
        """Store row of `key` if this stream uses it; samples the embed step skipped are not in the store."""
        try:
            row = self.store.row_of(key)
        except KeyError:
            return None
        return row if self.selected[row] else None

    def _my_shards(self, order: Sequence[Path]) -> list[Path]:
        info = get_worker_info()
        return list(order) if info is None else list(order)[info.id::info.num_workers]


class TrainStream(_StoreStream):
    """Training `Item`s, the teacher embedding being that of the replayed view; set `epoch` before each pass
    (workers receive a fresh copy of the dataset every epoch)."""

    def __init__(self, shards, store, domains: Sequence[int], image_size: int, seed: int, shuffle_buffer: int = 2000):
        super().__init__(shards, store, select_rows(store, domains, [TRAIN]), image_size, seed)
        self.shuffle_buffer = shuffle_buffer
        self.augment = augment_config_of(store)

    def item(self, key: str, data: bytes, row: int, epoch: int) -> Item:
        """One training item for `key` in `epoch` (public so tests can check the replay directly)."""
        img = decode_rgb(data, self.max_pixels)
        store = self.store
        if store.has_views:
            vrow = store.view_row_of(key)
            k = view_index(self.seed, key, epoch, store.views_k)
            params = ViewParams.from_array(store.view_params([vrow], [k])[0])
            target = store.view_embedding([vrow], [k])[0]
        else:
            params = sample_view(seeded_rng("fresh-view", self.seed, epoch, key), img.width, img.height, self.augment)
            target = store.clean([row])[0]
        image = to_uint8_tensor(apply_view(img, params, self.image_size))
        return Item(image=image, label=int(store.labels[row]), teacher=torch.from_numpy(np.ascontiguousarray(target)),
                    domain=int(store.domains[row]), row=row)

    def _interleaved(self, shards: list[Path], rng: np.random.Generator) -> Iterator:
        pending = list(shards)
        live = []
        while pending or live:
            while pending and len(live) < OPEN_SHARDS:
                live.append(iter_samples([pending.pop(0)]))
            i = int(rng.integers(len(live)))
            sample = next(live[i], None)
            if sample is None:
                live.pop(i)
            else:
                yield sample

    def __iter__(self) -> Iterator[Item]:
        epoch = self.epoch
        info = get_worker_info()
        worker = 0 if info is None else info.id
        order = [self.shards[i] for i in seeded_rng("shards", self.seed, epoch).permutation(len(self.shards))]
        rng = seeded_rng("stream", self.seed, epoch, worker)
        buffer: list[tuple[str, bytes, int]] = []
        for sample in self._interleaved(self._my_shards(order), rng):
            row = self._wanted(sample.key)
            if row is None:
                continue
            buffer.append((sample.key, sample.data, row))
            if len(buffer) >= self.shuffle_buffer:
                out = self._emit(buffer.pop(int(rng.integers(len(buffer)))), epoch)
                if out is not None:
                    yield out
        while buffer:
            out = self._emit(buffer.pop(int(rng.integers(len(buffer)))), epoch)
            if out is not None:
                yield out

    def _emit(self, entry: tuple[str, bytes, int], epoch: int) -> Item | None:
        key, data, row = entry
        try:
            return self.item(key, data, row, epoch)
        except BadSample as e:  # a bad sample never ends a run (docs/design.md, "Bad input")
            log.warning("skipping sample %s: %s", key, e)
            return None


class EvalStream(_StoreStream):
    """Evaluation `Item`s (whole image resized, clean teacher embedding) of the `selected` rows, shards in the
    given order."""

    def __iter__(self) -> Iterator[Item]:
        for sample in iter_samples(self._my_shards(self.shards)):
            row = self._wanted(sample.key)
            if row is None:
                continue
            try:
                image = eval_image(decode_rgb(sample.data, self.max_pixels), self.image_size)
            except BadSample as e:
                log.warning("skipping sample %s: %s", sample.key, e)
                continue
            target = torch.from_numpy(self.store.clean([row])[0])
            yield Item(image=image, label=int(self.store.labels[row]), teacher=target,
                       domain=int(self.store.domains[row]), row=row)
