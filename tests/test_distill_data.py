"""pipeline.distill.data: the student replays exactly the stored views; order and coverage are seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.augment import ViewParams, apply_view, sample_view
from pipeline.distill.data import (
    TRAIN,
    VAL,
    EvalStream,
    Item,
    TrainStream,
    eval_image,
    seeded_rng,
    select_rows,
    view_index,
)
from pipeline.images import decode_rgb
from pipeline.shards import iter_samples, shard_paths
from pipeline.store import verify_store
from tests.distill_fixtures import DOMAINS, shared_work

K = 3
SIZE = 24


@pytest.fixture(scope="module")
def work():
    return shared_work(3)


@pytest.fixture(scope="module")
def store(work):
    return verify_store(work)


def _sources(store):
    return [store.domain_names.index(d) for d in DOMAINS[1:]], list(DOMAINS[1:])


def _stream(work, store, seed=0):
    src, names = _sources(store)
    return TrainStream(shard_paths(work, names), store, src, SIZE, seed, shuffle_buffer=16)


def _bytes_by_key(work, names):
    return {s.key: s.data for s in iter_samples(shard_paths(work, names))}


def _collect(stream, epoch):
    stream.epoch = epoch
    return list(stream)


def test_view_schedule_uses_every_view_before_repeating():
    for key in ("photo/dog/001", "sketch/house/009"):
        first = [view_index(0, key, e, 5) for e in range(5)]
        assert sorted(first) == list(range(5))
        assert [view_index(0, key, e, 5) for e in range(5, 10)] == first  # then the cycle repeats
    # a per-sample permutation, not the same order for every sample
    orders = {tuple(view_index(0, f"k{i}", e, 5) for e in range(5)) for i in range(20)}
    assert len(orders) > 1


def test_replayed_views_equal_stored_views(work, store):
    stream = _stream(work, store)
    _, names = _sources(store)
    data = _bytes_by_key(work, names)
    for epoch in range(K + 1):
        items = _collect(stream, epoch)
        assert items
        for it in items:
            assert isinstance(it, Item)
            key = store.keys[it.row]
            vrow = store.view_row_of(key)
            k = view_index(0, key, epoch, K)
            # independent reference: the stored parameter row, the augment module, the raw shard bytes
            params = ViewParams.from_array(store.view_params([vrow], [k])[0])
            expect = np.array(apply_view(decode_rgb(data[key]), params, SIZE))
            assert torch.equal(it.image, torch.from_numpy(expect).permute(2, 0, 1))
            assert torch.equal(it.teacher, torch.from_numpy(store.view_embedding([vrow], [k])[0]))
            assert it.label == store.labels[it.row] and it.domain == store.domains[it.row]


def test_epoch_covers_source_train_rows_once_in_a_seeded_order(work, store):
    stream = _stream(work, store)
    src, _ = _sources(store)
    want = {int(r) for r in np.flatnonzero(np.isin(store.domains, src) & (store.splits == TRAIN))}
    rows0 = [it.row for it in _collect(stream, 0)]
    assert sorted(rows0) == sorted(want) and len(rows0) == len(stream)
    assert rows0 == [it.row for it in _collect(stream, 0)]  # pure function of (seed, epoch)
    assert rows0 != [it.row for it in _collect(stream, 1)]
    assert rows0 != [it.row for it in _collect(_stream(work, store, seed=1), 0)]
    target = store.domain_names.index(DOMAINS[0])
    assert not {int(store.domains[r]) for r in rows0} & {target}


def test_eval_streams_resize_whole_images(work, store):
    src, names = _sources(store)
    val = EvalStream(shard_paths(work, names), store, select_rows(store, src, [VAL]), SIZE, 0)
    items = list(val)
    assert len(items) == len(val) == int((np.isin(store.domains, src) & (store.splits == VAL)).sum()) > 0
    data = _bytes_by_key(work, names)
    for it in items:
        assert isinstance(it, Item)
        assert it.label == store.labels[it.row] and it.domain == store.domains[it.row]
        assert torch.equal(it.image, eval_image(decode_rgb(data[store.keys[it.row]]), SIZE))
        assert torch.equal(it.teacher, torch.from_numpy(store.clean([it.row])[0]))


def test_without_views_fresh_augmentation_and_clean_target():
    work = shared_work(0)
    store = verify_store(work)
    assert not store.has_views
    stream = _stream(work, store)
    _, names = _sources(store)
    data = _bytes_by_key(work, names)
    items = _collect(stream, 2)
    for it in items[:5]:
        key = store.keys[it.row]
        img = decode_rgb(data[key])
        params = sample_view(seeded_rng("fresh-view", 0, 2, key), img.width, img.height)
        assert torch.equal(it.image, torch.from_numpy(np.array(apply_view(img, params, SIZE))).permute(2, 0, 1))
        assert torch.equal(it.teacher, torch.from_numpy(store.clean([it.row])[0]))


def test_loader_batches_items_into_one_item_of_batched_fields(work, store):
    stream = _stream(work, store)
    items = _collect(stream, 0)
    batches = list(torch.utils.data.DataLoader(stream, batch_size=4, num_workers=0))
    assert all(isinstance(b, Item) for b in batches) and sum(len(b.row) for b in batches) == len(items)
    first = batches[0]
    assert torch.equal(first.image, torch.stack([it.image for it in items[:4]]))
    assert torch.equal(first.teacher, torch.stack([it.teacher for it in items[:4]]))
    assert first.label.tolist() == [it.label for it in items[:4]]
    assert first.domain.tolist() == [it.domain for it in items[:4]]
    assert first.row.tolist() == [it.row for it in items[:4]]
