"""GPU distill benchmark: ResNet-50 student from a ViT-B-16 teacher store, bf16, one H200 (< 8 minutes).

Self-contained: generates demo-world images at 224 px, shards them, embeds them once with a randomly
initialised ViT-B-16 (speed does not depend on the weights; nothing is downloaded), then prints the
three training-throughput figures of bench_distill.py side by side.

    .venv/bin/python benchmarks/gpu_distill.py            # on a CUDA machine
    .venv/bin/python benchmarks/gpu_distill.py --small    # CPU smoke test with the tiny models
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_distill import bench, build_work, report  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="CPU smoke test: tiny teacher/student, few images")
    p.add_argument("--per-cell", type=int, default=150, help="images per class x domain (7 x 4 cells)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=8)
    a = p.parse_args(argv)
    if a.small:
        setup = dict(per_cell=10, world_size=64, teacher="RISE-micro-ViT", student="resnet10t", image_size=32,
                     batch_size=32, workers=2, device="cpu")
    else:
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run with --small for the CPU smoke test")
        torch.backends.cudnn.benchmark = True
        setup = dict(per_cell=a.per_cell, world_size=224, teacher="ViT-B-16", student="resnet50", image_size=224,
                     batch_size=a.batch_size, workers=a.workers, device="cuda")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = build_work(Path(tmp), setup["per_cell"], setup["world_size"], setup["teacher"], 3, setup["device"])
        t1 = time.perf_counter()
        r = bench(work, setup["student"], setup["image_size"], setup["batch_size"], setup["workers"],
                  setup["device"])
    report(r, f"{setup['student']}@{setup['image_size']}px student, {setup['teacher']} teacher, batch "
              f"{setup['batch_size']}, {setup['device']} (bf16 autocast on cuda)")
    print(f"  stage one (world + shards + store) {t1 - t0:.0f} s; benchmark {time.perf_counter() - t1:.0f} s")


if __name__ == "__main__":
    main()
