"""Model selection: training-domain validation (docs/method.md, "Model selection").

`distill` already keeps, inside one run, the epoch with the best source-validation accuracy; here, within
each (method, target domain, seed), the run - one point of the swept grid - with the highest
`source_val_acc` is chosen. The target accuracy never takes part in the choice. Exact ties go to the run
whose hyper-parameters (canonical JSON) sort first, then to its path, so the choice does not depend on the
order in which folders are found.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .runs import Run


@dataclass(frozen=True)
class Selection:
    run: Run
    candidates: int  # complete runs of that (method, target, seed) that competed


def select(runs: Iterable[Run]) -> dict[tuple[str, str, int], Selection]:
    """Per (method, target, seed): the complete run with the best source-validation accuracy."""
    cells: dict[tuple[str, str, int], list[Run]] = defaultdict(list)
    for r in runs:
        if r.status == "complete":
            cells[(r.method, r.target, r.seed)].append(r)
    return {key: Selection(min(group, key=lambda r: (-r.source_val_acc, r.hparams_key, str(r.path))),
                           len(group))
            for key, group in sorted(cells.items())}
