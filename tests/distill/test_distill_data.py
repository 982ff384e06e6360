"""pipeline.distill.data: the student replays exactly the stored views; order and coverage are seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.augment import ViewParams, apply_view, sample_view
from pipeline.distill.data import TRAIN, VAL, Item, RunData, eval_image, seeded_rng, view_index
from pipeline.distill.sampling import epoch_batches, plan_summary
from pipeline.images import decode_rgb
from pipeline.shards import iter_samples, shard_paths
from pipeline.store import verify_store
from tests.distill_fixtures import DOMAINS

K = 3
SIZE = 24


@pytest.fixture(scope="module")
def work(distill_work):
    return distill_work(K)


@pytest.fixture(scope="module")
def store(work):
    return verify_store(work)


def _sources(store):
    return [store.domain_names.index(d) for d in DOMAINS[1:]], list(DOMAINS[1:])


def _data(work, store, seed=0, workers=0, batch_size=4, balance="none"):
    src, _ = _sources(store)
    target = store.domain_names.index(DOMAINS[0])
    return RunData(work, store, src, target, SIZE, seed, batch_size, workers, balance)


def _bytes_by_key(work, names):
    return {s.key: s.data for s in iter_samples(shard_paths(work, names))}


def _items(data, epoch):
    """Every training item of `epoch`, through the real loader, in plan order."""
    return [Item(*fields) for b in data.train_loader(epoch) for fields in zip(*b, strict=True)]


def test_view_schedule_uses_every_view_before_repeating():
    for key in ("photo/dog/001", "sketch/house/009"):
        first = [view_index(0, key, e, 5) for e in range(5)]
        assert sorted(first) == list(range(5))
        assert [view_index(0, key, e, 5) for e in range(5, 10)] == first  # then the cycle repeats
    # a per-sample permutation, not the same order for every sample
    orders = {tuple(view_index(0, f"k{i}", e, 5) for e in range(5)) for i in range(20)}
    assert len(orders) > 1


def test_replayed_views_equal_stored_views(work, store):
    run_data = _data(work, store)
    _, names = _sources(store)
    data = _bytes_by_key(work, names)
    for epoch in range(K + 1):
        items = _items(run_data, epoch)
        assert items
        for it in items:
            it = Item(it.image, int(it.label), it.teacher, int(it.domain), int(it.row))
            key = store.keys[it.row]
            vrow = store.view_row_of(key)
            k = view_index(0, key, epoch, K)
            # independent reference: the stored parameter row, the augment module, the raw shard bytes
            params = ViewParams.from_array(store.view_params([vrow], [k])[0])
            expect = np.array(apply_view(decode_rgb(data[key]), params, SIZE))
            assert torch.equal(it.image, torch.from_numpy(expect).permute(2, 0, 1))
            assert torch.equal(it.teacher, torch.from_numpy(store.view_embedding([vrow], [k])[0]))
            assert it.label == store.labels[it.row] and it.domain == store.domains[it.row]


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")
def test_loader_delivers_the_plan_at_any_worker_count(work, store):
    """The batches the training loop consumes are exactly epoch_batches' plan (rows travel with the batch),
    whatever the number of loader workers, with the composition of an independent uniform draw; the plan
    covers the source train rows, each at most once."""
    src, _ = _sources(store)
    want = {int(r) for r in np.flatnonzero(np.isin(store.domains, src) & (store.splits == TRAIN))}
    plan = epoch_batches(sorted(want), seed=0, epoch=1, batch_size=4)
    assert len(plan) == len(want) // 4
    assert len(shard_paths(work)) >= 6  # several shards per domain, each holding one domain
    reference = None
    for workers in (0, 2, 8):
        batches = list(_data(work, store, workers=workers).train_loader(1))
        assert [b.row.tolist() for b in batches] == [p.tolist() for p in plan], workers
        if reference is None:
            reference = batches
        for a, b in zip(batches, reference, strict=True):
            assert torch.equal(a.image, b.image) and torch.equal(a.teacher, b.teacher)
        got = plan_summary([b.row.numpy() for b in batches], store.domains, store.labels)
        uniform = []  # the reference loader: a shuffled map-style draw with drop_last, many epochs
        rng = np.random.default_rng(workers)
        for _ in range(200):
            perm = rng.permutation(sorted(want))
            uniform += [perm[i * 4:(i + 1) * 4] for i in range(len(perm) // 4)]
        ref = plan_summary(uniform, store.domains, store.labels)
        assert abs(got["domains_per_batch"] - ref["domains_per_batch"]) < 0.35, (workers, got, ref)
        assert abs(got["classes_per_batch"] - ref["classes_per_batch"]) < 0.35, (workers, got, ref)
    rows = np.concatenate(plan)
    assert set(rows.tolist()) <= want and len(set(rows.tolist())) == len(rows)
    target = store.domain_names.index(DOMAINS[0])
    assert target not in {int(store.domains[r]) for r in rows}
    other = [b.row.tolist() for b in _data(work, store, seed=1).train_loader(1)]
    assert other != [p.tolist() for p in plan]


def test_eval_items_resize_whole_images(work, store):
    src, _ = _sources(store)
    run_data = _data(work, store, batch_size=5)
    items = [Item(*fields) for b in run_data.eval_loader() for fields in zip(*b, strict=True)]
    val = np.flatnonzero(np.isin(store.domains, src) & (store.splits == VAL))
    target = np.flatnonzero(store.domains == store.domain_names.index(DOMAINS[0]))
    assert sorted(int(it.row) for it in items) == sorted(val.tolist() + target.tolist()) and len(val) > 0
    data = _bytes_by_key(work, list(store.domain_names))
    for it in items:
        it = Item(it.image, int(it.label), it.teacher, int(it.domain), int(it.row))
        assert it.label == store.labels[it.row] and it.domain == store.domains[it.row]
        assert torch.equal(it.image, eval_image(decode_rgb(data[store.keys[it.row]]), SIZE))
        assert torch.equal(it.teacher, torch.from_numpy(store.clean([it.row])[0]))


def test_without_views_fresh_augmentation_and_clean_target(distill_work):
    work = distill_work(0)
    store = verify_store(work)
    assert not store.has_views
    _, names = _sources(store)
    data = _bytes_by_key(work, names)
    items = _items(_data(work, store), 2)
    for it in items[:5]:
        it = Item(it.image, int(it.label), it.teacher, int(it.domain), int(it.row))
        key = store.keys[it.row]
        img = decode_rgb(data[key])
        params = sample_view(seeded_rng("fresh-view", 0, 2, key), img.width, img.height)
        assert torch.equal(it.image, torch.from_numpy(np.array(apply_view(img, params, SIZE))).permute(2, 0, 1))
        assert torch.equal(it.teacher, torch.from_numpy(store.clean([it.row])[0]))


def test_loader_batches_items_into_one_item_of_batched_fields(work, store):
    run_data = _data(work, store)
    plan = run_data.plan(0)
    first = next(iter(run_data.train_loader(0)))
    items = [run_data.train_set[int(r)] for r in plan[0]]
    assert isinstance(first, Item) and isinstance(items[0], Item)
    assert torch.equal(first.image, torch.stack([it.image for it in items]))
    assert torch.equal(first.teacher, torch.stack([it.teacher for it in items]))
    assert first.label.tolist() == [it.label for it in items]
    assert first.domain.tolist() == [it.domain for it in items]
    assert first.row.tolist() == [it.row for it in items] == plan[0].tolist()


def test_balanced_plan_gives_each_source_domain_an_equal_share(work, store):
    run_data = _data(work, store, batch_size=4, balance="domains")
    for b in run_data.train_loader(0):
        assert np.bincount(b.domain.numpy(), minlength=len(store.domain_names)).tolist().count(2) == 2


def test_decoded_images_are_kept_across_epochs_and_change_no_item(work, store):
    """The main process keeps decoded images (up to its byte budget), so no image is decoded twice; every item
    equals the one decoded afresh (budget 0), and a budget too small for all keeps only what fits."""
    import pipeline.distill.loader as loader_module

    cached, fresh = _data(work, store), _data(work, store)
    fresh.train_set.cache_bytes = 0
    decodes = []
    real = loader_module.decode_rgb

    def counting(data, max_pixels):
        decodes.append(1)
        return real(data, max_pixels)

    loader_module.decode_rgb = counting
    try:
        first = _items(cached, 0)
        n_first = len(decodes)
        second = _items(cached, 1)
    finally:
        loader_module.decode_rgb = real
    # each image is decoded once: epoch 2 decodes only the rows epoch 1 left out (its plan drops a partial batch)
    seen = {int(it.row) for it in first}
    assert n_first == len(seen) and len(decodes) - n_first == len({int(it.row) for it in second} - seen)
    for epoch, items in ((0, first), (1, second)):
        reference = _items(fresh, epoch)
        assert [it.row for it in items] == [it.row for it in reference]
        for it, ref in zip(items, reference, strict=True):
            assert torch.equal(it.image, ref.image) and torch.equal(it.teacher, ref.teacher)
    assert not fresh.train_set._decoded
    one = next(iter(cached.train_set._decoded.values()))
    small = _data(work, store)
    small.train_set.cache_bytes = 3 * one.width * one.height * 3
    _items(small, 0)
    assert len(small.train_set._decoded) == 3
