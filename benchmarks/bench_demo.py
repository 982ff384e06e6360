"""The embedded default's first two stages at the params.yaml defaults: world generation and teacher pretraining.

    .venv/bin/python benchmarks/bench_demo.py [--params params.yaml] [--threads 2]

Writes the demo world into a temporary folder, pretrains the demo teacher on its own corpus, and prints one
table: world images and seconds, teacher corpus size, steps and seconds (render + train), and the zero-shot
accuracy per domain against chance. The last line is the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import load_section, read_params  # noqa: E402
from pipeline.demo import pretrain_teacher as demo_teacher
from pipeline.demo import world  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    params = read_params(args.params)
    wcfg = load_section(world.WorldConfig, params, "world")
    tcfg = load_section(demo_teacher.PretrainConfig, params, "teacher", {"threads": args.threads})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        n_world = len(world.write_world(wcfg, Path(tmp) / "world"))
        world_s = time.perf_counter() - t0
    _, report = demo_teacher.run(tcfg, wcfg)
    zs = report["zero_shot"]
    rows = [("world images", n_world), ("world seconds", f"{world_s:.1f}"),
            ("teacher corpus images", report["corpus_size"]), ("teacher steps", report["steps"]),
            ("teacher render s", report["seconds"]["render"]), ("teacher train s", report["seconds"]["train"]),
            *((f"zero-shot {d}", f"{a:.3f}") for d, a in zs["per_domain"].items()),
            ("zero-shot mean", f"{zs['mean']:.3f}"), ("chance", f"{zs['chance']:.3f}")]
    for name, value in rows:
        print(f"{name:<24}{value:>10}")
    print(json.dumps({"world_images": n_world, "world_s": round(world_s, 1), "model": report["model"],
                      "threads": tcfg.threads, **{k: report[k] for k in ("corpus_size", "steps", "seconds")},
                      "zero_shot": zs}))


if __name__ == "__main__":
    main()
