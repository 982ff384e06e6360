"""Reading planned batches: store rows -> images read by offset from the shards -> training/eval items.

`StoreImages` is a map-style dataset over store rows: item `row` reads that sample's image bytes at the
offset the shard index records (`pipeline.shards.ShardReader`), decodes them and either replays the view
planned for the current epoch (training) or resizes (evaluation). Everything an item holds is a function of
(row, seed, epoch), so a torch DataLoader fed the plan as its `batch_sampler` delivers exactly the planned
batches, in order, whatever its number of worker processes: each worker builds whole batches and the
loader returns them in plan order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..devices import worker_count
from ..errors import BadSample, UserError
from ..images import decode_rgb
from ..shards import Location, ShardReader, sample_locations

log = logging.getLogger(__name__)


class RowLocations:
    """Where each store row's image sits, as compact arrays (pickled into every loader worker)."""

    def __init__(self, work: str | Path, keys: Sequence[str]):
        by_key = sample_locations(work)
        self.paths: list[Path] = sorted({loc.path for loc in by_key.values()})
        path_id = {p: i for i, p in enumerate(self.paths)}
        n = len(keys)
        self.shard = np.full(n, -1, np.int32)
        self.offset = np.zeros(n, np.int64)
        self.size = np.zeros(n, np.int64)
        self.ext: list[str] = [""] * n
        missing = []
        for row, key in enumerate(keys):
            loc = by_key.get(key)
            if loc is None:
                missing.append(key)
                continue
            self.shard[row], self.offset[row], self.size[row] = path_id[loc.path], loc.offset, loc.size
            self.ext[row] = loc.ext
        if missing:
            raise UserError(f"{len(missing)} store sample(s) (e.g. {missing[0]}) are not in the shard index; the "
                            "store and shards disagree: rerun `rise-pipeline extract`")
        self.keys = list(keys)

    def __getitem__(self, row: int) -> Location:
        return Location(self.paths[self.shard[row]], self.keys[row], self.ext[row], int(self.offset[row]),
                        int(self.size[row]))


# Decoded images kept by one dataset in the loading process (RGB bytes). A run decodes each image once
# instead of once an epoch when its images fit (the demo's 1,400 images of 64 px: 17 MB; decoding was about a
# tenth of a demo group's time under cProfile); beyond it, images are decoded as they come, as before.
DECODED_CACHE_BYTES = 512 * 2**20


class StoreImages(Dataset):
    """Store row -> item. `make_item(data: bytes, row: int, epoch: int)` turns the image bytes into the
    item (training replay or evaluation resize); a sample it cannot decode becomes None and is left out
    of its batch (logged), never ending the run.

    When `make_item` also has `from_image(img, row, epoch)` and `max_pixels` (its decode limit), decoded
    images are kept in the main process up to `cache_bytes`, so later epochs skip decoding. Never in a loader
    worker: workers are new processes each epoch, a cache there would only be refilled. The item is the
    same either way (decoding is deterministic)."""

    def __init__(self, locations: RowLocations, make_item, cache_bytes: int = DECODED_CACHE_BYTES):
        self.locations = locations
        self.make_item = make_item
        self.reader = ShardReader()
        self.epoch = 0
        self.cache_bytes = cache_bytes if hasattr(make_item, "from_image") else 0
        self._decoded: dict[int, object] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.locations.keys)

    def __getitem__(self, row):
        row = int(row)
        try:
            img = self._decoded.get(row)
            if img is not None:
                return self.make_item.from_image(img, row, self.epoch)
            data = self.reader.read(self.locations[row])
            if not self.cache_bytes or torch.utils.data.get_worker_info() is not None:
                return self.make_item(data, row, self.epoch)
            img = decode_rgb(data, self.make_item.max_pixels)
            size = img.width * img.height * 3
            if self._cached_bytes + size <= self.cache_bytes:
                self._decoded[row] = img
                self._cached_bytes += size
            return self.make_item.from_image(img, row, self.epoch)
        except BadSample as e:
            log.warning("skipping sample %s: %s", self.locations.keys[row], e)
            return None


def collate_present(items: list):
    """default_collate over the items that could be read (bad samples are None)."""
    items = [it for it in items if it is not None]
    return default_collate(items) if items else None


def planned_loader(dataset: StoreImages, batches: Sequence[np.ndarray], workers: int) -> DataLoader:
    """A DataLoader that yields exactly `batches` (lists of store rows), in order, with `workers` processes
    decoding whole batches in parallel (`worker_count`: -1 is one per core)."""
    return DataLoader(dataset, batch_sampler=[np.asarray(b) for b in batches], num_workers=worker_count(workers),
                      collate_fn=collate_present, pin_memory=False, persistent_workers=False,
                      generator=torch.Generator().manual_seed(0))


def eval_batches(rows, batch_size: int) -> list[np.ndarray]:
    """Evaluation rows in store order, cut into batches (the last one may be partial)."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
