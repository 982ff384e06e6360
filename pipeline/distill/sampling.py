"""The training order: which store rows form each batch of each epoch, decided before any image is read.

RISE's reference, like DomainBed, draws every batch uniformly from all source domains' training images (a
shuffled map-style loader with `drop_last`). Here an epoch's batches are a pure function of (rows, seed,
epoch, batch size) -- `epoch_batches` -- so the loss sees the same batches whatever the number of loader
workers or GPUs, a run killed under one worker count resumes under another, and every run that shares
a seed shares its batches. The loader then reads each planned batch by random access into the shards.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import UserError
from ..seeding import seeded_rng


def _check(rows: np.ndarray, batch_size: int) -> None:
    if len(rows) == 0:
        raise UserError("no training rows to draw batches from")
    if batch_size < 1 or batch_size > len(rows):
        raise UserError(f"batch size {batch_size} does not fit {len(rows)} training rows (need 1..{len(rows)})")


def epoch_batches(rows, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    """The batches of one epoch: a seeded permutation of `rows` cut into `batch_size` pieces, the last
    partial batch dropped (as the reference's `drop_last`).

    rows: the store rows to train on (any order: they are sorted first, so the plan depends on the set).
    Returns one int64 array of store rows per batch."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    _check(rows, batch_size)
    order = rows[seeded_rng("epoch-batches", seed, epoch).permutation(len(rows))]
    n = len(order) // batch_size
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n)]


def balanced_epoch_batches(rows, domains, seed: int, epoch: int, batch_size: int) -> list[np.ndarray]:
    """Batches with an equal share of each source domain (`--balance domains`): each domain's rows are
    permuted on their own and every batch takes `batch_size // n_domains` from each (the remainder from
    the first domains in turn); the epoch ends when the smallest domain runs out.

    domains: the domain index of each row (same length as rows)."""
    rows = np.asarray(rows, dtype=np.int64)
    domains = np.asarray(domains)
    if rows.shape != domains.shape:
        raise UserError("rows and domains must have the same length")
    _check(rows, batch_size)
    keys = np.unique(domains)
    if batch_size < len(keys):
        raise UserError(f"batch size {batch_size} is smaller than the {len(keys)} source domains it must balance")
    share = [batch_size // len(keys) + (1 if i < batch_size % len(keys) else 0) for i in range(len(keys))]
    pools = []
    for d, k in zip(keys, share, strict=True):
        own = np.sort(rows[domains == d])
        pools.append((own[seeded_rng("epoch-batches-balanced", seed, epoch, int(d)).permutation(len(own))], k))
    n = min(len(pool) // k for pool, k in pools)
    if n == 0:
        raise UserError("a source domain has fewer training rows than its share of one batch")
    out = []
    for b in range(n):
        parts = [pool[b * k:(b + 1) * k] for pool, k in pools]
        batch = np.concatenate(parts)
        out.append(batch[seeded_rng("batch-mix", seed, epoch, b).permutation(len(batch))])
    return out


def plan_summary(batches: Sequence[np.ndarray], domains: np.ndarray, labels: np.ndarray) -> dict:
    """Mean distinct domains and classes per batch, and the share of single-domain batches."""
    if not batches:
        return {"batches": 0}
    d = [len(np.unique(domains[b])) for b in batches]
    c = [len(np.unique(labels[b])) for b in batches]
    return {"batches": len(batches), "domains_per_batch": float(np.mean(d)), "classes_per_batch": float(np.mean(c)),
            "single_domain_share": float(np.mean([x == 1 for x in d]))}
