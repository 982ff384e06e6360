"""Groups at once: dvc.yaml's distill stage with `sweep.jobs` 2 against one group after another.

One run prints, side by side, the wall time and CPU time of `rise-pipeline distill --params P --sweep` (the
distill stage's command, a process as DVC starts it) on the same sweep of demo-sized groups under settings
that change speed, never a result:

- `jobs 1, loader 1`: one group after another, each with one DataLoader worker process beside its one torch
  thread (the previous release's demo setting);
- `jobs 2, loader 0`: two groups at once in local worker processes, one torch thread each, images decoded in
  the training process (this release's demo setting);

and whether every student's metrics are the same under both (they must be). Data: a demo-sized world (7
classes x 4 domains x `--per-cell` images of 64 px) embedded by a random-weight RISE-tiny-RN teacher with 10
views (speed does not depend on the weights); students: the demo's recipe (test_resnet at 32 px, batch 16,
erm + kd + rise from one data pass), `--epochs` epochs, one group per domain x seed.

    .venv/bin/python benchmarks/bench_jobs.py                     # 4 domains x 1 seed, 3 epochs (~4 min)
    .venv/bin/python benchmarks/bench_jobs.py --seeds 2 --epochs 10   # 8 groups as the demo trains them
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = {"jobs 1, loader 1": dict(jobs=1, workers=1), "jobs 2, loader 0": dict(jobs=2, workers=0)}


def _params(work: Path, epochs: int, seeds: int, jobs: int, workers: int) -> dict:
    return {"data": {"work": str(work)},
            "distill": {"student": "test_resnet", "pretrained": False, "epochs": epochs, "image_size": 32,
                        "batch_size": 16, "lr": 0.01, "workers": workers, "threads": 1, "device": "cpu"},
            "sweep": {"domains": ["cartoon", "painting", "photo", "sketch"], "methods": ["erm", "kd", "rise"],
                      "seeds": list(range(seeds)), "grid": [{}], "jobs": jobs}}


def _run(project: Path) -> tuple[float, float]:
    """(wall s, CPU s of the command and every process it started) of the distill stage's command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "stages.cli", "-q", "distill", "--params",
                        str(project / "params.yaml"), "--sweep", "--restart-stale"], cwd=ROOT,
                       capture_output=True, text=True, env={**os.environ, "RISE_PROGRESS": "0"})
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"distill failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # dask's worker processes are the nanny's children, not ours: their CPU is counted when they are reaped by
    # the command (a worker process is a child of the command's nanny, which runs in the command).
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _metrics(project: Path) -> dict:
    runs = project / "data" / "runs"
    out = {}
    for p in sorted(runs.glob("*/*/metrics.json")):
        m = json.loads(p.read_text())
        out[f"{p.parent.parent.name}/{p.parent.name}"] = {k: m[k] for k in ("target_acc", "source_val_acc",
                                                                           "selected_epoch", "per_domain_acc")}
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-cell", type=int, default=50, help="world images per class x domain (demo: 50)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=1, help="seeds per domain (groups = 4 x seeds)")
    a = ap.parse_args(argv)
    from bench_distill import build_work

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        work = build_work(tmp, a.per_cell, 64, "RISE-tiny-RN", 10, "cpu")
        results = {}
        for name, s in SETTINGS.items():
            project = tmp / name.replace(", ", "-").replace(" ", "")
            project.mkdir()
            (project / "params.yaml").write_text(yaml.safe_dump(_params(work, a.epochs, a.seeds, **s)))
            wall, cpu = _run(project)
            results[name] = (wall, cpu, _metrics(project))
    groups = 4 * a.seeds
    first, second = results.values()
    print(f"\ndistill stage (`distill --sweep`): {groups} groups x (erm, kd, rise), test_resnet @ 32 px, batch 16, "
          f"{a.epochs} epoch(s), {os.cpu_count()} CPU cores")
    for name, (wall, cpu, _) in results.items():
        print(f"  {name:<18} {wall:7.1f} s wall   {cpu:7.1f} s CPU   CPU/wall {cpu / wall:.2f}")
    print(f"  speed-up {first[0] / second[0]:.2f}x")
    same = first[2] == second[2] and len(first[2]) == 3 * groups
    print(f"  every student's metrics the same under both: {'yes' if same else 'NO'}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
