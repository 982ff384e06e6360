"""Running independent units of work (shards, per-shard embedding parts) on dask (docs/design.md, "One engine for parallel work").

`run_tasks` maps a picklable function over items and yields `(item, result)` as units finish, with a
progress bar. Where it runs:
- `scheduler="tcp://host:8786"`: an existing dask.distributed cluster (one worker per GPU for embedding);
- `workers >= 2`: a local dask cluster of that many single-threaded worker processes;
- `workers <= 1`: in this process, in order (no cluster start-up cost; what tests and tiny runs use).
A failing unit raises in the caller; units are expected to turn bad *samples* into recorded skips.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import UserError
from .progress import progress


@contextlib.contextmanager
def dask_client(workers: int, scheduler: str | None = None):
    """A dask.distributed Client for an existing scheduler or a new local process cluster."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise UserError(f"cannot reach dask scheduler {scheduler}: {e}") from None
        with client:
            yield client
        return
    # Quiet dask's own start-up logging; our progress bar says what happens.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        yield client


def run_tasks(fn: Callable[..., Any], items: Iterable[Any], *, workers: int = 1, scheduler: str | None = None,
              desc: str = "", unit: str = "task", extra: tuple = (),
              ) -> Iterator[tuple[Any, Any]]:
    """Yield (item, fn(item, *extra)) for every item, as they complete."""
    items = list(items)
    bar = progress(total=len(items), desc=desc, unit=unit, leave=False)
    try:
        if not scheduler and workers <= 1:
            for item in items:
                yield item, fn(item, *extra)
                bar.update(1)
            return
        from dask.distributed import as_completed

        with dask_client(workers, scheduler) as client:
            futures = {client.submit(fn, item, *extra, pure=False): i for i, item in enumerate(items)}
            for fut in as_completed(futures):
                yield items[futures[fut]], fut.result()
                bar.update(1)
    finally:
        bar.close()
