"""Sweeps on dask: the distill work of the sweep plan, one dask task per group.

The sweep plan (`pipeline.plan.plan_sweep`) has one group per `sweep.domains x sweep.seeds` (every distinct
student of `sweep.methods x sweep.grid`, one data pass) into `data/runs/<domain>-<seed>/<member>/`.
dvc.yaml's `distill` stage (`distill --sweep`) and `sweep run` both train it with `run_sweep`, which runs
each group with the same library call (`distill.step.run_members`) as a task:
- in this process, one group after another (no cluster);
- on a local cluster of single-threaded worker processes (`workers=N`; `sweep.jobs` for the distill stage):
  a demo-sized group's steps are too small for two torch threads to pay, so two groups at once are what
  keeps both cores of a small machine busy; with GPUs, worker i sees one GPU through its own
  CUDA_VISIBLE_DEVICES and declares the dask resource GPU=1;
- on an existing dask.distributed cluster (`scheduler="tcp://..."`, e.g. dask-jobqueue's SLURMCluster); if
  its workers declare a GPU resource, each group takes one.

Shared storage is assumed: WORK and the runs folder are paths every worker sees (a worker checks before it
trains, and fails the group with one line naming the path otherwise). Complete members (same config and
store) are skipped and killed ones resume from their checkpoints, so a group that dask reschedules after its
worker died, or reruns after an exception, loses at most the epoch in progress. Each group's outcome is
collected on its own: a failed group never hides the others' results.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from . import layout
from .config import to_dict
from .devices import worker_count
from .distill.config import result_differences
from .distill.group import GroupMember, refuse_legacy
from .errors import UserError
from .plan import Group, SweepPlan

log = logging.getLogger(__name__)

IN_PROCESS = "in-process"
CONNECT_TIMEOUT = "10s"  # reaching an existing scheduler


# --- states ---------------------------------------------------------------------------------------------


class OpenedStores(NamedTuple):
    """The teacher stores a sweep reads, opened here: `stores` is {store name: StoreReader}, or None and `why`
    says which one could not be opened."""

    stores: dict | None
    why: str | None = None


def open_stores(work: Path, teachers=("default",)) -> OpenedStores:
    """The default store and `teachers`' stores of WORK (`OpenedStores`); a store that cannot be opened here
    is a reason, not an error."""
    from .store import DEFAULT_STORE, verify_store

    try:
        return OpenedStores({name: verify_store(work, name) for name in dict.fromkeys([DEFAULT_STORE, *teachers])})
    except (UserError, OSError) as e:
        return OpenedStores(None, str(e).splitlines()[0] if str(e) else type(e).__name__)


def member_state(member: GroupMember, out: Path, stores: dict | None) -> str:
    """`complete` (metrics.json of the same config and store), `partial (has last.pt)` (will resume), or
    `to run` (with what makes it stale, when the folder holds another config's files)."""
    from .distill.step import finished

    if stores is not None and finished(member.cfg, stores, out) is not None:
        return "complete"
    last = out / "checkpoints" / "last.pt"
    if last.is_file():
        try:
            same = not result_differences(json.loads((out / "config.json").read_text()), to_dict(member.cfg))
        except (OSError, ValueError, TypeError, AttributeError):
            same = True  # config.json missing or unreadable: the checkpoint itself decides when it resumes
        return "partial (has last.pt)" if same else "to run (checkpoints of another config: discarded)"
    if (out / "metrics.json").is_file():
        return "to run (metrics.json of another config or store)" if stores is not None else "to run"
    return "to run"


def group_states(group: Group, stores: dict | None) -> dict[str, str]:
    return {m.name: member_state(m, group.out / m.name, stores) for m in group.members}


# --- one group as a task --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of one group: each member (a distinct student) `done` (trained now), `skipped` (already
    complete: not trained) or `failed`."""

    key: str
    states: dict[str, str]
    seconds: float
    where: str
    error: str | None = None
    resumed: int = 0         # members that continued from their checkpoints/last.pt

    def count(self, state: str) -> int:
        return sum(s == state for s in self.states.values())

    @property
    def failed(self) -> bool:
        return self.error is not None or self.count("failed") > 0


def _current_worker() -> str:
    from distributed import get_worker

    try:
        return get_worker().address
    except ValueError:
        return IN_PROCESS


def check_inputs(group: Group, where: str) -> None:
    """Before training, on the machine that trains: the store and the runs folder must be visible here."""
    store = layout.store(group.work)
    shared = "sweep run needs WORK and the runs folder on a file system every worker sees"
    if not os.access(store, os.R_OK) or not store.is_file():
        raise UserError(f"cannot read the store {store} on {where} ({shared})")
    if not group.out.parent.is_dir():
        raise UserError(f"cannot see the runs folder {group.out.parent} on {where} ({shared})")
    loaders = [m.cfg.workers for m in group.members if worker_count(m.cfg.workers) > 0]
    if loaders and multiprocessing.current_process().daemon:
        raise UserError(f"distill.workers={loaders[0]} needs DataLoader processes, but the dask worker {where} "
                        "is a daemon process: start workers with DASK_DISTRIBUTED__WORKER__DAEMON=False "
                        "(or set distill.workers: 0)")


def run_group_task(group: Group, where: str | None = None, restart_stale: bool = True) -> Outcome:
    """Train one group where this runs (a dask worker, or `where="in-process"`), as `distill --sweep` does;
    each member is `done` if it trained now, `skipped` if it was complete.

    A UserError (bad store, unknown domain, ...) is returned as a failed outcome, since rerunning cannot fix
    it; any other exception propagates, so dask can rerun the group (it resumes from its checkpoints).
    `restart_stale`: checkpoints of another config or store are discarded (as `distill --restart-stale`)."""
    where = where or _current_worker()
    start = time.perf_counter()
    stores, before, resumed = None, {}, 0
    try:
        check_inputs(group, where)
        from .distill.step import run_members

        stores, why = open_stores(group.work, group.teachers)
        if stores is None:
            raise UserError(why)
        states = group_states(group, stores)
        before = {name: state == "complete" for name, state in states.items()}
        resumed = sum(state.startswith("partial") for state in states.values())
        results = run_members(list(group.members), group.work, group.out, restart_stale=restart_stale)
        states = {name: "done" if trained else "skipped" for name, (_, trained) in results.items()}
        error = None
    except UserError as e:
        error = str(e).splitlines()[0] if str(e) else type(e).__name__
        states = _after_failure(group, stores, before)
    return Outcome(group.key, states, time.perf_counter() - start, where, error, resumed)


def _after_failure(group: Group, stores: dict | None, before: dict[str, bool]) -> dict[str, str]:
    """Member states of a group that failed: complete before (skipped), complete now (done), else failed."""
    from .distill.step import finished

    states = {}
    for m in group.members:
        now = stores is not None and finished(m.cfg, stores, group.out / m.name) is not None
        states[m.name] = "skipped" if before.get(m.name) else "done" if now else "failed"
    return states


def _failed(group: Group, error: BaseException, where: str, seconds: float, before: dict[str, bool]) -> Outcome:
    """The outcome of a task that raised (a bug, a worker that died too often, a lost scheduler)."""
    killed = type(error).__name__ == "KilledWorker"
    if killed:
        last = getattr(getattr(error, "last_worker", None), "address", None)
        where = last or where
        text = f"its worker died {getattr(error, 'allowed_failures', 0) + 1} times while running it"
    else:
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        text = f"{type(error).__name__}: {first}" if first else type(error).__name__
    stores = open_stores(group.work, group.teachers).stores
    return Outcome(group.key, _after_failure(group, stores, before), seconds, where, text)


# --- where the tasks run --------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (one per local worker)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: a CPU cluster
        return []
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def local_cluster(workers: int, gpus: list[str]):
    """A local cluster of `workers` single-threaded worker processes (nannies restart a killed one). With
    GPUs, worker i sees GPU gpus[i % len(gpus)] alone and declares the resource GPU=1; without, a plain
    distributed.LocalCluster."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    options = {"nthreads": 1, "silence_logs": logging.WARNING, "host": "127.0.0.1", "dashboard": False,
               "env": {"RISE_PROGRESS": "0"}}  # the per-group lines are the progress
    if not gpus:
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                            host="127.0.0.1", silence_logs=logging.WARNING, env=options["env"])
    specs = {}
    for i in range(workers):
        env = {**options["env"], "CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]}
        specs[i] = {"cls": Nanny, "options": {**options, "resources": {"GPU": 1}, "env": env}}
    return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": None,
                                                                              "host": "127.0.0.1"}},
                       silence_logs=logging.WARNING, name="rise-sweep")


@contextlib.contextmanager
def sweep_client(workers: int | None, scheduler: str | None, retries: int, gpus: list[str] | None = None):
    """A dask Client on an existing scheduler, or on a new local cluster of `workers` processes."""
    import dask
    from distributed import Client

    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot reach dask scheduler {scheduler}: {first}") from None
        with client:
            yield client
        return
    logging.getLogger("distributed").setLevel(logging.WARNING)
    # Workers are not daemons, so a group may start DataLoader processes (distill.workers > 0); a group whose
    # worker died is rescheduled up to `retries` times (the scheduler's allowed-failures); the cores are shared
    # out between the workers' torch threads (dask's default is one each).
    threads = max(1, (os.cpu_count() or 1) // workers)
    # The nanny's default MALLOC_TRIM_THRESHOLD_=65536 makes glibc hand freed memory back to the OS at once:
    # torch's training steps then page-fault their buffers in again every step (benchmarks/
    # bench_worker_env.py: the demo student's steps 1.2-1.5x as long), so workers start without it.
    # dask's statistical profiler (a stack sample every 10 ms) and GIL monitor (every 1 ms) cost a worker
    # whose task is Python-heavy CPU work too, and nothing here reads them.
    config = {"distributed.worker.daemon": False, "distributed.scheduler.allowed-failures": retries,
              "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
              "distributed.worker.profile.enabled": False, "distributed.admin.system-monitor.gil.enabled": False,
              **{f"distributed.nanny.pre-spawn-environ.{name}": threads
                 for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}
    gpus = visible_gpus() if gpus is None else gpus
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    # A nanny also writes its pre-spawn variables into this process's own environment, which every later
    # worker inherits: after any cluster with dask's defaults ran here, the setting above alone would not keep
    # the variable out. So it is out of this process's environment while the sweep's workers (and any
    # restarted one) spawn, and back afterwards.
    trim = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    try:
        with dask.config.set(config), local_cluster(workers, gpus) as cluster, Client(cluster) as client:
            try:
                yield client
            finally:
                # Closing: a worker still tearing down torch after 4 s is killed ("still alive ... killing");
                # its groups are done and written, so that warning would only alarm.
                nanny.setLevel(logging.ERROR)
    finally:
        nanny.setLevel(level)
        if trim is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = trim


def _gpu_restricted(client) -> bool:
    """Whether the cluster's workers declare a GPU resource (then each group takes one)."""
    if not client.scheduler_info().get("workers"):
        log.info("waiting for a dask worker to join %s ...", client.scheduler.address)
        client.wait_for_workers(1)
    return any("GPU" in (w.get("resources") or {}) for w in client.scheduler_info()["workers"].values())


def run_sweep(plan: SweepPlan, workers: int | None = None, scheduler: str | None = None, retries: int = 2,
              gpus: list[str] | None = None, restart_stale: bool = True) -> Iterator[Outcome]:
    """Run every group of `plan`; yield each group's Outcome as it finishes (in plan order in-process).

    No `workers` and no `scheduler`: in this process. `retries`: how often dask reruns a group whose task
    raised or whose worker died (resuming from its checkpoints); UserErrors are not rerun."""
    if workers is not None and scheduler:
        raise UserError("--workers starts a local cluster, --scheduler uses an existing one: give one of them")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    if retries < 0:
        raise UserError(f"--retries must be >= 0, got {retries}")
    for group in plan.groups:  # before any training: one line says what to do with old run folders
        refuse_legacy(group.out)
    plan.runs.mkdir(parents=True, exist_ok=True)
    stores = open_stores(plan.work, plan.groups[0].teachers if plan.groups else ()).stores
    before = {g.key: {n: s == "complete" for n, s in group_states(g, stores).items()} for g in plan.groups}
    del stores
    if workers is None and not scheduler:
        for group in plan.groups:
            start = time.perf_counter()
            try:
                yield run_group_task(group, IN_PROCESS, restart_stale)
            except Exception as e:  # noqa: BLE001 - one group's bug must not hide the others' results
                log.debug("group %s failed", group.key, exc_info=True)
                yield _failed(group, e, IN_PROCESS, time.perf_counter() - start, before[group.key])
        return

    from distributed import as_completed

    with sweep_client(workers, scheduler, retries, gpus) as client:
        resources = {"GPU": 1} if _gpu_restricted(client) else None
        where = f"scheduler {client.scheduler.address}"
        submitted = time.perf_counter()
        futures = {client.submit(run_group_task, group, None, restart_stale,
                                 key=f"rise-sweep-{group.key}-{uuid.uuid4().hex[:8]}",
                                 pure=False, retries=retries, resources=resources): group
                   for group in plan.groups}
        for future in as_completed(futures):
            group = futures[future]
            try:
                yield future.result()
            except BaseException as e:  # noqa: BLE001 - KilledWorker, a bug in the task, a cancelled future
                if isinstance(e, (KeyboardInterrupt, SystemExit, GeneratorExit)):
                    raise
                log.debug("group %s failed", group.key, exc_info=True)
                yield _failed(group, e, where, time.perf_counter() - submitted, before[group.key])


def local_jobs(plan: SweepPlan) -> int | None:
    """Local worker processes for `sweep.jobs` (None: this process): never more than the plan has groups, and
    no cluster to start for one group at a time."""
    jobs = min(plan.sweep.jobs, len(plan.groups))
    return jobs if jobs > 1 else None


def run_and_print(plan: SweepPlan, echo, **how) -> list[Outcome]:
    """`run_sweep(plan, **how)`, echoing one line per group as it finishes, then the table; the outcomes in
    plan order."""
    outcomes = []
    for outcome in run_sweep(plan, **how):
        echo(describe(outcome))
        outcomes.append(outcome)
    order = {g.key: i for i, g in enumerate(plan.groups)}
    outcomes.sort(key=lambda o: order[o.key])
    echo("")
    echo(table(outcomes).rstrip("\n"))
    echo("")
    return outcomes


def totals(outcomes: list[Outcome]) -> dict[str, int]:
    return {state: sum(o.count(state) for o in outcomes) for state in ("done", "skipped", "failed")}


def describe(outcome: Outcome) -> str:
    """One line per finished group: what it did, its wall time, where it ran."""
    where = outcome.where if outcome.where == IN_PROCESS else f"on {outcome.where}"
    resumed = f" ({outcome.resumed} resumed)" if outcome.resumed else ""
    if outcome.error is None:
        return (f"{outcome.key}: {outcome.count('done')} done{resumed}, {outcome.count('skipped')} skipped in "
                f"{outcome.seconds:.1f} s {where}")
    return (f"{outcome.key}: FAILED after {outcome.seconds:.1f} s {where} "
            f"({outcome.count('done')} done, {outcome.count('skipped')} skipped, "
            f"{outcome.count('failed')} failed): {outcome.error}")


def table(outcomes: list[Outcome]) -> str:
    """The final table: group, members done/skipped/failed, seconds, where."""
    rows = [("group", "done", "skipped", "failed", "seconds", "where")]
    rows += [(o.key, str(o.count("done")), str(o.count("skipped")), str(o.count("failed")), f"{o.seconds:.1f}",
              o.where) for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in range(1, 5)] + [r[5]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
