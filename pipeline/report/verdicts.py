"""Is a method better than ERM? A paired comparison over seeds.

Within one seed every method of a group trains on the same batches, from the same store and the same
starting backbone as ERM; only the loss differs. So methods are compared seed by seed: for each seed both
have, the difference of their target accuracies (the selected runs', in points), then the mean of those
differences and a two-sided 95 % confidence interval from Student's t with n - 1 degrees of freedom (the
paired t-test). A method is "better" or "worse" only when the interval excludes 0; otherwise there is "no
significant difference". With fewer than 2 seeds in common nothing is measured about the spread, so no
verdict is given ("unknown").

What the interval covers: seed-to-seed variation of the students (initialisation of the new layers, batch
order, which stored view each epoch replays). It does not cover what all seeds share: the train/val split,
the pool of stored views, the teacher and the pretrained backbone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95  # two-sided confidence level of the interval
BETTER, WORSE, NO_DIFFERENCE, UNKNOWN = "better", "worse", "no significant difference", "unknown"


@dataclass(frozen=True)
class Paired:
    """One method against the baseline on one column (a held-out domain, or the average over domains)."""

    seeds: tuple[int, ...]  # the seeds both have, sorted
    diffs: tuple[float, ...]  # method - baseline per seed, in points

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs)) if self.diffs else math.nan

    @property
    def half_width(self) -> float:
        """t_{(1+LEVEL)/2, n-1} * s / sqrt(n); NaN below 2 seeds (no spread measured)."""
        if self.n < 2:
            return math.nan
        sd = float(np.std(self.diffs, ddof=1))
        return float(stats.t.ppf((1 + LEVEL) / 2, self.n - 1)) * sd / math.sqrt(self.n)

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return UNKNOWN
        if self.low > 0:
            return BETTER
        if self.high < 0:
            return WORSE
        return NO_DIFFERENCE  # the interval holds 0 (a zero-width interval at 0 too)


def pair(method: Mapping[int, float], baseline: Mapping[int, float]) -> Paired:
    """Pair two {seed: accuracy in %} maps on the seeds they share."""
    seeds = tuple(sorted(set(method) & set(baseline)))
    return Paired(seeds, tuple(method[s] - baseline[s] for s in seeds))


def compare_columns(method: Mapping[str, Mapping[int, float]], baseline: Mapping[str, Mapping[int, float]],
                    columns: Sequence[str]) -> dict[str, Paired]:
    """`pair` per column present in both (column -> {seed: accuracy})."""
    return {c: pair(method[c], baseline[c]) for c in columns if c in method and c in baseline}
