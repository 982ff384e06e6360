"""GPU throughput check of the embed step: ViT-B-16 (random weights), >= 20,000 synthetic JPEGs, bf16.

Self-contained: makes its own shards, needs no network and no pretrained weights, and prints end-to-end
extraction images/s against the same model's forward on preloaded tensors (goal: ratio >= 0.9 on one H200,
whole script < 8 minutes). `--small` runs a few images on the CPU so the script is known to work anywhere.
See benchmarks/README_gpu.md for running it on a bare GPU machine.

    python benchmarks/gpu_embed.py            # GPU: 20,000 JPEGs (256x192), K=1 view, batch 512, bf16
    python benchmarks/gpu_embed.py --small    # CPU smoke run
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed import main as bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="a CPU smoke run (16 images, batch 8)")
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--views", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    args = ap.parse_args()
    if args.small:
        argv = ["--images", "16", "--views", "1", "--batch-size", "8", "--device", "cpu", "--side", "256",
                "--workers", "1", "--shard-size", "8"]
    else:
        argv = ["--images", str(args.images), "--views", str(args.views), "--batch-size", str(args.batch_size),
                "--device", "cuda", "--side", "256", "--workers", str(args.workers), "--shard-size", "1000"]
    bench(["--model", "ViT-B-16", "--precision", "bf16", *argv])


if __name__ == "__main__":
    main()
