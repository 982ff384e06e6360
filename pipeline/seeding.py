"""The project's one way of deriving randomness from names instead of from order.

Every seeded choice (a sample's train/val split, a shard boundary, a sample's augmented views, its view
schedule, a demo image) is a function of a tuple of names -- the global seed, a purpose tag, the sample
key, the epoch -- hashed with SHA-256. Nothing depends on how many other samples exist, in which order they
are processed or on which worker, so adding one image changes nothing else and any worker count gives
the same bytes (docs/design.md, "Determinism").
"""

from __future__ import annotations

import hashlib

import numpy as np


def _digest(parts: tuple) -> bytes:
    # The unit separator cannot appear in keys (they are path-derived and escaped), so joins are unambiguous.
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()


def digest64(*parts) -> int:
    """A 64-bit integer hash of `parts` (big-endian head of their SHA-256)."""
    return int.from_bytes(_digest(parts)[:8], "big")


def unit_float(*parts) -> float:
    """A number in [0, 1) from `parts`: a seeded coin that needs no generator state."""
    return digest64(*parts) / 2**64


def seeded_rng(*parts) -> np.random.Generator:
    """A numpy generator seeded by `parts`: independent streams without coordination."""
    return np.random.default_rng(int.from_bytes(_digest(parts)[:8], "little"))


def integer_rng(*numbers: int) -> np.random.Generator:
    """A numpy generator seeded by a tuple of integers through numpy's SeedSequence (the demo world's
    images are indexed by integers -- seed, domain, class, image -- so no hashing is needed)."""
    return np.random.default_rng(list(numbers))
