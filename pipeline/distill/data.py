"""Distill data: what one training or evaluation item holds, and the data of one run (plan + loaders).

Training items replay one stored augmented view per (sample, epoch) for the student, at the student's
resolution, and carry the teacher's embedding of *that* view as the KD target (docs/design.md, "Replayable views").
The view of a sample in epoch e is `perm(seed, key)[e % K]`: a per-sample permutation, so no view is
reused before all K have been used, and the choice does not depend on which other samples exist.

Without stored views (a store built with K = 0) the student gets a fresh augmentation drawn from a
(seed, epoch, key)-seeded generator, and the KD target is the teacher's *clean* embedding. This is an
approximation of RISE, whose teacher sees the same augmented image as the student.

The order is the plan of `sampling.epoch_batches` (uniform over the source domains' training rows, a pure
function of (rows, seed, epoch, batch size)); `loader` reads each planned batch by random access into
the shards, so the batches, and the run's result, do not depend on the number of loader workers. The
store is only touched through `StoreReader`, which memory-maps its embeddings inside each worker, so
memory stays bounded whatever the store's size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torchvision.transforms.functional as F
from torchvision.transforms import InterpolationMode

from ..augment import AugmentConfig, ViewParams, apply_view, sample_view
from ..images import MAX_PIXELS, decode_rgb, to_uint8_chw
from ..seeding import seeded_rng
from .loader import RowLocations, StoreImages, eval_batches, planned_loader
from .sampling import balanced_epoch_batches, epoch_batches

log = logging.getLogger(__name__)

TRAIN, VAL = 0, 1


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


def eval_image(img, size: int) -> torch.Tensor:
    """RISE's test transform: resize to size x size (no crop)."""
    return to_uint8_chw(F.resize(img, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True))


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


class TrainItems:
    """(image bytes, store row, epoch) -> the training `Item`: the view planned for that epoch, replayed at
    the student's resolution, with the teacher's embedding of that very view (public so tests can check
    the replay directly)."""

    def __init__(self, store, image_size: int, seed: int):
        self.store, self.image_size, self.seed = store, image_size, seed
        self.augment = augment_config_of(store)
        # The decode limit the shard step kept images under (recorded by embed).
        self.max_pixels = int(store.attrs.get("max_pixels", MAX_PIXELS))

    def __call__(self, data: bytes, row: int, epoch: int) -> Item:
        return self.from_image(decode_rgb(data, self.max_pixels), row, epoch)

    def from_image(self, img, row: int, epoch: int) -> Item:
        """The item of an already decoded image (`StoreImages` keeps decoded images across epochs)."""
        store = self.store
        key = store.keys[row]
        if store.has_views:
            vrow = store.view_row_of(key)
            k = view_index(self.seed, key, epoch, store.views_k)
            params = ViewParams.from_array(store.view_params([vrow], [k])[0])
            target = store.view_embedding([vrow], [k])[0]
        else:
            params = sample_view(seeded_rng("fresh-view", self.seed, epoch, key), img.width, img.height, self.augment)
            target = store.clean([row])[0]
        image = to_uint8_chw(apply_view(img, params, self.image_size))
        return Item(image=image, label=int(store.labels[row]), teacher=torch.from_numpy(np.ascontiguousarray(target)),
                    domain=int(store.domains[row]), row=row)


class EvalItems:
    """(image bytes, store row, epoch) -> the evaluation `Item`: the whole image resized, clean embedding."""

    def __init__(self, store, image_size: int):
        self.store, self.image_size = store, image_size
        self.max_pixels = int(store.attrs.get("max_pixels", MAX_PIXELS))

    def __call__(self, data: bytes, row: int, epoch: int) -> Item:
        return self.from_image(decode_rgb(data, self.max_pixels), row, epoch)

    def from_image(self, img, row: int, epoch: int) -> Item:
        image = eval_image(img, self.image_size)
        return Item(image=image, label=int(self.store.labels[row]), teacher=torch.from_numpy(self.store.clean([row])[0]),
                    domain=int(self.store.domains[row]), row=row)


class RunData:
    """The data of one leave-one-domain-out run: its training rows (the source domains' train split), its
    evaluation rows (their val split and the whole target domain), each epoch's plan, and the loaders.

    Runs that share (store, sources, image size, seed, batch size, balance) share every batch: a group of
    students can train from one `RunData` in one pass."""

    def __init__(self, work, store, sources: Sequence[int], target: int, image_size: int, seed: int,
                 batch_size: int, workers: int = 0, balance: str = "none"):
        self.store, self.seed, self.batch_size, self.workers, self.balance = store, seed, batch_size, workers, balance
        self.sources, self.target = list(sources), target
        self.train_rows = np.flatnonzero(select_rows(store, sources, [TRAIN]))
        self.source_val_rows = np.flatnonzero(select_rows(store, sources, [VAL]))
        self.target_rows = np.flatnonzero(select_rows(store, [target]))
        locations = RowLocations(work, store.keys)
        self.train_set = StoreImages(locations, TrainItems(store, image_size, seed))
        self.eval_set = StoreImages(locations, EvalItems(store, image_size))

    def plan(self, epoch: int) -> list[np.ndarray]:
        """The store rows of each training batch of `epoch`."""
        if self.balance == "domains":
            return balanced_epoch_batches(self.train_rows, self.store.domains[self.train_rows], self.seed, epoch,
                                          self.batch_size)
        return epoch_batches(self.train_rows, self.seed, epoch, self.batch_size)

    def train_loader(self, epoch: int, plan: list[np.ndarray] | None = None):
        self.train_set.epoch = epoch  # workers get a fresh copy of the dataset each epoch
        return planned_loader(self.train_set, self.plan(epoch) if plan is None else plan, self.workers)

    def eval_loader(self):
        rows = np.concatenate([self.source_val_rows, self.target_rows])
        return planned_loader(self.eval_set, eval_batches(rows, self.batch_size), self.workers)
