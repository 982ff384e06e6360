"""The training order (`epoch_batches`): a pure, uniform, worker-independent plan of store rows."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.distill.sampling import balanced_epoch_batches, epoch_batches, plan_summary
from pipeline.errors import UserError


def test_plan_is_a_pure_function_of_rows_seed_epoch_and_batch_size():
    rows = np.arange(10, 1010, 3)
    a = epoch_batches(rows, seed=7, epoch=2, batch_size=32)
    shuffled = np.random.default_rng(0).permutation(rows)
    b = epoch_batches(shuffled, seed=7, epoch=2, batch_size=32)  # the same set in another order
    assert len(a) == len(rows) // 32 and all(len(x) == 32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    flat = np.concatenate(a)
    assert len(np.unique(flat)) == len(flat) and set(flat) <= set(rows)  # each row at most once
    assert len(rows) - len(flat) == len(rows) % 32  # only the last partial batch is dropped
    other_epoch = np.concatenate(epoch_batches(rows, seed=7, epoch=3, batch_size=32))
    other_seed = np.concatenate(epoch_batches(rows, seed=8, epoch=2, batch_size=32))
    assert not np.array_equal(flat, other_epoch) and not np.array_equal(flat, other_seed)


def test_plan_composition_matches_an_independent_uniform_draw():
    # 4 domains x 10 classes, rows grouped by domain and class as shards hold them.
    n_dom, n_cls, per = 4, 10, 40
    domains = np.repeat(np.arange(n_dom), n_cls * per)
    labels = np.tile(np.repeat(np.arange(n_cls), per), n_dom)
    rows = np.arange(len(domains))
    sources = rows[domains != 0]
    ours = plan_summary([b for e in range(20) for b in epoch_batches(sources, 0, e, 64)], domains, labels)
    rng = np.random.default_rng(123)  # the reference: a shuffled map-style loader with drop_last
    ref_batches = []
    for _ in range(20):
        perm = rng.permutation(sources)
        ref_batches += [perm[i * 64:(i + 1) * 64] for i in range(len(perm) // 64)]
    ref = plan_summary(ref_batches, domains, labels)
    assert ours["single_domain_share"] == 0.0
    assert abs(ours["domains_per_batch"] - ref["domains_per_batch"]) < 0.02
    assert abs(ours["classes_per_batch"] - ref["classes_per_batch"]) < 0.05


def test_balanced_batches_hold_equal_domain_shares():
    domains = np.array([0] * 300 + [1] * 150 + [2] * 90)
    rows = np.arange(len(domains)) + 5
    batches = balanced_epoch_batches(rows, domains, seed=1, epoch=0, batch_size=30)
    assert len(batches) == 90 // 10  # the smallest domain runs out first
    for b in batches:
        counts = np.bincount(domains[b - 5], minlength=3)
        assert counts.tolist() == [10, 10, 10]
    flat = np.concatenate(batches)
    assert len(np.unique(flat)) == len(flat)


@pytest.mark.parametrize("rows,batch", [(np.array([], np.int64), 4), (np.arange(10), 11), (np.arange(10), 0)])
def test_bad_plans_are_one_line_errors(rows, batch):
    with pytest.raises(UserError) as e:
        epoch_batches(rows, 0, 0, batch)
    assert "\n" not in str(e.value)
