"""Embed-step throughput: end-to-end extraction images/s vs the same model's forward on preloaded tensors.

One run prints both figures and their ratio. End to end = `pipeline.extract.embed_step.run` on
synthetic JPEG shards (decode, clean + K augmented views, teacher, part files, merge, report, audit), counting
every image the teacher embeds (N clean + M*K views). The reference is the teacher's forward alone on a
batch already in memory on the device, at the same batch size and precision.

    python benchmarks/bench_embed.py                      # CPU, RISE-tiny-ViT, 600 images
    python benchmarks/bench_embed.py --model ViT-B-16 --images 20000 --views 1 --device cuda
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.extract.writer import encode_sample, write_tar
from pipeline.io import sha256_file, write_json  # noqa: E402
from pipeline.shards import checksum_of_entries  # noqa: E402

DOMAINS = ("art", "photo", "sketch", "cartoon")
CLASSES = ("cat", "dog", "fish", "tree")


def _jpeg(seed: int, side: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)  # smooth-ish, JPEG-like content
    img = Image.fromarray(small).resize((side, side * 3 // 4), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _write_shard(args) -> dict:
    root, domain, index, start, n, side = args
    rel = f"{domain}/{domain}-{index:06d}.tar"
    path = Path(root) / "shards" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(start, start + n):
        cls = i % len(CLASSES)
        key = f"{domain}/{CLASSES[cls]}/img{i:07d}"
        meta = {"key": key, "domain": domain, "class_name": CLASSES[cls], "class_index": cls,
                "split": "val" if i % 10 == 0 else "train"}
        samples.append(encode_sample(key, "jpg", _jpeg(i, side), cls, meta))
    with open(path, "wb") as f:
        write_tar(f, samples)
    return {"path": rel, "domain": domain, "sha256": sha256_file(path), "n": n}


def make_shards(work: Path, n_images: int, side: int, shard_size: int = 1000, procs: int = 4) -> None:
    """Synthetic JPEG shards + index.json per docs/contracts.md (written in parallel processes)."""
    per_domain = n_images // len(DOMAINS)
    jobs = []
    for d, domain in enumerate(DOMAINS):
        for j, start in enumerate(range(0, per_domain, shard_size)):
            jobs.append((str(work), domain, j, d * per_domain + start, min(shard_size, per_domain - start), side))
    with ProcessPoolExecutor(procs) as ex:
        entries = list(ex.map(_write_shard, jobs))
    write_json(work / "shards" / "index.json", {"classes": list(CLASSES), "domains": sorted(DOMAINS),
                                                 "shards": entries, "shard_set_sha256": checksum_of_entries(entries)})


def forward_rate(teacher, batch_size: int, n_images: int) -> float:
    """Images/s of the teacher's forward alone on one preloaded batch, repeated."""
    h, w = teacher.image_size
    x = torch.randn(batch_size, 3, h, w, device=teacher.device)
    sync = torch.cuda.synchronize if teacher.device.startswith("cuda") else (lambda: None)
    for _ in range(3):
        teacher.encode_images(x)
    sync()
    steps = max(3, n_images // batch_size)
    t = time.perf_counter()
    for _ in range(steps):
        teacher.encode_images(x)
    sync()
    return steps * batch_size / (time.perf_counter() - t)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="RISE-tiny-ViT")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--side", type=int, default=96, help="synthetic image width in pixels")
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers (-1: one per core, max 8)")
    ap.add_argument("--shard-size", type=int, default=1000)
    ap.add_argument("--work", type=Path, default=None, help="folder to use (default: a temporary one)")
    args = ap.parse_args(argv)

    from pipeline.extract.embed_step import EmbedConfig, run
    from pipeline.extract.parts import EmbedSpec, get_teacher
    from pipeline.store import StoreReader

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        t = time.perf_counter()
        make_shards(work, args.images, args.side, args.shard_size)
        print(f"made {args.images} JPEGs ({args.side}px wide) in shards: {time.perf_counter() - t:.1f} s", flush=True)
        cfg = EmbedConfig(model=args.model, pretrained="random", views=args.views, batch_size=args.batch_size,
                          precision=args.precision, device=args.device, workers=args.workers)
        teacher = get_teacher(EmbedSpec(model=cfg.model, pretrained=cfg.pretrained, device=cfg.device,
                                        precision=cfg.precision))  # loaded (and cached) outside the timing
        t = time.perf_counter()
        run(cfg, work)
        e2e_s = time.perf_counter() - t
        r = StoreReader(work / "embeddings.h5")
        embedded = len(r) + len(r.view_keys) * args.views
        fwd = forward_rate(teacher, args.batch_size, min(embedded, 20 * args.batch_size))
    e2e = embedded / e2e_s
    out = {"model": args.model, "device": teacher.device, "precision": teacher.precision, "batch_size": args.batch_size,
           "images": len(r), "views": args.views, "embedded": embedded, "end_to_end_s": round(e2e_s, 2),
           "end_to_end_img_s": round(e2e, 1), "forward_img_s": round(fwd, 1), "ratio": round(e2e / fwd, 3)}
    print(f"{'':24}{'images/s':>12}\nend-to-end extraction   {e2e:12.1f}\nforward on preloaded    {fwd:12.1f}\n"
          f"ratio                   {e2e / fwd:12.3f}   ({embedded} images embedded in {e2e_s:.1f} s, "
          f"{args.model} {teacher.device} {teacher.precision}, batch {args.batch_size})")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
