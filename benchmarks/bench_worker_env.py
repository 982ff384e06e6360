"""Why the sweep's dask workers start without the nanny's MALLOC_TRIM_THRESHOLD_: one training loop, three ways.

One run prints, side by side, the wall time of the same `--steps` SGD steps of the demo student (`test_resnet`
at 32 px, batch 16, one torch thread):

- in a plain process;
- in a plain process given `MALLOC_TRIM_THRESHOLD_=65536`, the value dask's nanny sets by default (glibc then
  returns freed memory at once, and every step page-faults its buffers back in);
- in a worker of the sweep's own local cluster (`pipeline.sweep.sweep_client`), which starts workers without it.

    .venv/bin/python benchmarks/bench_worker_env.py [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_steps(steps: int) -> float:
    """Seconds for `steps` SGD steps of test_resnet on one batch (after 5 warm-up steps), one torch thread."""
    import time

    import timm
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 7, (16,))

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - start


def _in_process(steps: int, env: dict) -> float:
    code = f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import bench_worker_env as b; " \
           f"print(b.train_steps({steps}))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                         check=True).stdout
    return float(out.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args(argv)
    plain = _in_process(a.steps, {"OMP_NUM_THREADS": "1"})
    trimmed = _in_process(a.steps, {"OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": "65536"})
    from pipeline.sweep import sweep_client

    with sweep_client(1, None, 0, gpus=[]) as client:
        worker = client.submit(train_steps, a.steps, pure=False).result()
    print(f"\n{a.steps} steps of test_resnet @ 32 px, batch 16, one torch thread:")
    print(f"  plain process                              {plain:6.2f} s   1.00x")
    print(f"  plain process, MALLOC_TRIM_THRESHOLD_=65536  {trimmed:6.2f} s   {trimmed / plain:.2f}x")
    print(f"  sweep worker (started without it)          {worker:6.2f} s   {worker / plain:.2f}x")


if __name__ == "__main__":
    main()
