"""Shard-step throughput (files/s) with 1 and 2 dask workers over generated JPEGs.

    .venv/bin/python benchmarks/bench_shard.py [--files 5000] [--workers 1,2]

Generates --files JPEGs of 200x200 .. 500x500 pixels (4 domains x 5 classes) in a temporary folder,
shards them once per worker count (fresh work folder each time, so nothing is reused) and prints the
wall time, files/s and the speed-up over the first setting, side by side. Wall time includes the
dask cluster start-up; the shard step reads, hashes and fully decodes every file, then writes the tars.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.extract.shard_step import ShardConfig, run  # noqa: E402
from pipeline.parallel import dask_client  # noqa: E402

DOMAINS, CLASSES = ("art", "cartoon", "photo", "sketch"), ("bird", "car", "dog", "house", "tree")


def make_jpeg(rng: np.random.Generator) -> bytes:
    """A smooth picture with some grain: realistic JPEG sizes (tens of kB), not incompressible noise."""
    w, h = (int(v) for v in rng.integers(200, 501, size=2))
    coarse = Image.fromarray(rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8))
    img = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    img = img + rng.integers(-10, 11, size=img.shape, dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def generate(root: Path, n: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        folder = root / DOMAINS[i % len(DOMAINS)] / CLASSES[(i // len(DOMAINS)) % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        data = make_jpeg(rng)
        (folder / f"img_{i:06d}.jpg").write_bytes(data)
        total += len(data)
    return total


def digest(work: Path) -> str:
    h = hashlib.sha256()
    for p in sorted((work / "shards").rglob("*.tar")):
        h.update(p.read_bytes())
    return h.hexdigest()[:12]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--shard-size", type=int, default=1000)
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_shard_") as tmp:
        root = Path(tmp) / "DATA"
        t0 = time.perf_counter()
        size = generate(root, args.files)
        print(f"generated {args.files} JPEGs ({size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s; "
              f"{os.cpu_count()} CPU cores", flush=True)
        startup = {}
        for workers in counts:
            if workers > 1:  # measured alone so the figures below can be read net of it
                t0 = time.perf_counter()
                with dask_client(workers):
                    startup[workers] = time.perf_counter() - t0
        results = []
        for workers in counts:
            work = Path(tmp) / f"work{workers}"
            t0 = time.perf_counter()
            summary = run(ShardConfig(shard_size=args.shard_size, workers=workers), data_root=root, work=work)
            elapsed = time.perf_counter() - t0
            results.append((workers, elapsed, summary["kept"], digest(work)))
    base = results[0][2] / results[0][1]
    print(f"\n{'workers':>8} {'seconds':>9} {'files/s':>9} {'speed-up':>9} {'cluster start-up s':>19}  shards sha256")
    for workers, elapsed, kept, dig in results:
        rate = kept / elapsed
        print(f"{workers:>8} {elapsed:>9.1f} {rate:>9.0f} {rate / base:>8.2f}x {startup.get(workers, 0):>19.1f}  {dig}")
    print("identical shard bytes across worker counts:", len({r[3] for r in results}) == 1)


if __name__ == "__main__":
    main()
