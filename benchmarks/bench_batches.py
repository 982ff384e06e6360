"""Batch composition and read cost of the training loader, measured side by side in one run.

Builds a 4-domain x 10-class set of JPEGs (default 6,000, about 200-400 px), shards it with
`--shard-size 600`, embeds it with a tiny random teacher, holds one domain out, and then:

  composition  reads one epoch of planned batches (batch 64) through the real loader at 0, 2, 4 and 8
               worker processes and prints domains per batch, classes per batch and the share of
               single-domain batches, next to an independent uniform draw (the reference's shuffled
               map-style loader with drop_last);
  read cost    decodes every training image once by streaming the shards in order (webdataset) and
               once by random access in the planned order (offsets from the shard index), img/s each.

    .venv/bin/python benchmarks/bench_batches.py [--per-cell 150] [--workers 0,2,4,8]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_dataset(root: Path, per_cell: int) -> None:
    rng = np.random.default_rng(0)
    for d in range(4):
        for c in range(10):
            folder = root / f"domain{d}" / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_cell):
                w, h = (int(x) for x in rng.integers(200, 400, 2))
                base = rng.integers(0, 256, 3)
                arr = np.clip(base + rng.normal(0, 40, (h // 8, w // 8, 3)), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).resize((w, h)).save(buf, format="JPEG", quality=90)
                (folder / f"img{i:04d}.jpg").write_bytes(buf.getvalue())


def build(tmp: Path, per_cell: int) -> Path:
    from pipeline.extract.embed_step import EmbedConfig
    from pipeline.extract.embed_step import run as embed_run
    from pipeline.extract.shard_step import ShardConfig
    from pipeline.extract.shard_step import run as shard_run

    write_dataset(tmp / "data", per_cell)
    shard_run(ShardConfig(workers=1, shard_size=600), data_root=tmp / "data", work=tmp / "work")
    embed_run(EmbedConfig(model="RISE-micro-ViT", pretrained="random", views=0, workers=2, batch_size=256),
              work=tmp / "work")
    return tmp / "work"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-cell", type=int, default=150)
    ap.add_argument("--workers", default="0,2,4,8")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()

    from pipeline.distill.data import TRAIN, select_rows
    from pipeline.distill.loader import RowLocations, StoreImages, planned_loader
    from pipeline.distill.sampling import epoch_batches, plan_summary
    from pipeline.images import decode_rgb
    from pipeline.shards import ShardReader, iter_samples, shard_paths
    from pipeline.store import verify_store

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        work = build(Path(tmp), args.per_cell)
        store = verify_store(work)
        print(f"built {len(store)} images in {time.perf_counter() - t0:.0f} s; "
              f"{len(shard_paths(work))} shards; held out: {store.domain_names[0]}")
        sources = list(range(1, len(store.domain_names)))
        rows = np.flatnonzero(select_rows(store, sources, [TRAIN]))
        plan = epoch_batches(rows, seed=0, epoch=0, batch_size=args.batch_size)

        def item(data, row, epoch):
            decode_rgb(data)  # the decode a training item pays
            return np.array([store.labels[row], store.domains[row], row])

        rng = np.random.default_rng(1)
        perm = rng.permutation(rows)
        ref = [perm[i * args.batch_size:(i + 1) * args.batch_size] for i in range(len(perm) // args.batch_size)]
        r = plan_summary(ref, store.domains, store.labels)
        print(f"\n| loader workers | domains per batch (uniform {r['domains_per_batch']:.2f}) | classes per batch "
              f"(uniform {r['classes_per_batch']:.2f}) | single-domain batches | batches = plan |")
        print("|---|---:|---:|---:|---|")
        dataset = StoreImages(RowLocations(work, store.keys), item)
        for w in (int(x) for x in args.workers.split(",")):
            got = [b[:, 2].numpy() for b in planned_loader(dataset, plan, w)]
            same = len(got) == len(plan) and all(np.array_equal(a, b) for a, b in zip(got, plan, strict=True))
            s = plan_summary(got, store.domains, store.labels)
            print(f"| {w} | {s['domains_per_batch']:.2f} | {s['classes_per_batch']:.2f} | "
                  f"{100 * s['single_domain_share']:.0f}% | {'yes' if same else 'NO'} |")

        source_shards = shard_paths(work, [store.domain_names[d] for d in sources])
        train_keys = set(store.keys[rows])
        t = time.perf_counter()
        n = 0
        for s in iter_samples(source_shards):
            if s.key in train_keys:
                decode_rgb(s.data)
                n += 1
        stream = n / (time.perf_counter() - t)
        locations = RowLocations(work, store.keys)
        reader = ShardReader()
        t = time.perf_counter()
        for b in plan:
            for row in b:
                decode_rgb(reader.read(locations[int(row)]))
        random_access = sum(len(b) for b in plan) / (time.perf_counter() - t)
        print(f"\nread + decode, one process: streaming {stream:,.0f} img/s, random access in plan order "
              f"{random_access:,.0f} img/s (ratio {random_access / stream:.2f})")


if __name__ == "__main__":
    main()
