"""One data pass, many students: a group of N members against the same N runs one after another.

One run prints, side by side: the wall time of the N runs trained one by one (`rise-pipeline distill` per
member), of the same N members trained as one group (`--method ... --grid ...`: each batch read, decoded and
replayed once), their ratio, and whether every member's metrics equal its run alone (they must). It also
splits the cost: N runs alone cost N x (shared + member), a group shared + N x member, where `shared` is what
a group pays once (the data path: reads, decodes, view replays, targets; the store checks and set-up) and
`member` what each student costs itself (its steps, evaluation forwards, checkpoints). From the two measured
times: shared = (T_alone - T_group) / (N - 1), member = T_alone / N - shared; the speed-up of a group of any
size stays below (shared + member) / member. The data path alone (every training and evaluation batch of a
run read, decoded and replayed with its targets, no model) is timed separately, as a check on `shared`.

    .venv/bin/python benchmarks/bench_group.py                       # the demo's student, 6 members, CPU
    .venv/bin/python benchmarks/bench_group.py --preset resnet50     # ResNet-50 at 112 px, 3 members, CPU
    .venv/bin/python benchmarks/bench_group.py --preset gpu          # ResNet-50 at 224 px bf16, 6 members, and
                                                                     # the online-teacher loop (needs CUDA)
    .venv/bin/python benchmarks/bench_group.py --cli                 # also as N commands vs one (processes)
    .venv/bin/python benchmarks/bench_group.py --small               # CPU smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# (world images per cell, world image side, teacher, student, image size, batch, epochs, methods, grid)
PRESETS = {
    "demo": dict(per_cell=50, world_size=64, teacher="RISE-tiny-RN", student="test_resnet", image_size=32,
                 batch_size=16, epochs=2, methods=["erm", "kd", "rise"], grid=[{}, {"lr": 0.02}], device="cpu"),
    "resnet50": dict(per_cell=24, world_size=112, teacher="RISE-tiny-RN", student="resnet50", image_size=112,
                     batch_size=32, epochs=1, methods=["erm", "kd", "rise"], grid=[{}], device="cpu"),
    "gpu": dict(per_cell=100, world_size=224, teacher="ViT-B-16", student="resnet50", image_size=224,
                batch_size=128, epochs=1, methods=["erm", "kd", "rise"], grid=[{}, {"lr": 0.02}],
                device="cuda"),
    "small": dict(per_cell=4, world_size=32, teacher="RISE-micro-ViT", student="test_resnet", image_size=32,
                  batch_size=8, epochs=1, methods=["erm", "rise"], grid=[{}], device="cpu"),
}


def _plain(metrics: dict) -> dict:
    return json.loads(json.dumps(metrics))


def bench(work: Path, tmp: Path, p: dict, repeats: int = 1) -> dict:
    """N runs one by one, then the same N as one group, `repeats` times in alternation (fresh folders each
    time); each wall time is the best of its repeats, the least disturbed figure on a shared machine."""
    from pipeline.distill.config import DistillConfig
    from pipeline.distill.group import members
    from pipeline.distill.step import run, run_group

    target = "cartoon"
    base = DistillConfig(target_domain=target, student=p["student"], pretrained=False, epochs=p["epochs"],
                         image_size=p["image_size"], batch_size=p["batch_size"], workers=0, device=p["device"])
    # warm-up: allocator, page cache, cudnn autotuning
    run(DistillConfig(**{**base.__dict__, "epochs": 1}), work, tmp / "warm")
    t_alone, t_group, same = [], [], True
    for rep in range(repeats):
        t = time.perf_counter()
        alone = {}
        for m in members(base, p["methods"], p["grid"]):  # each distinct student, as the group trains it
            alone[m.name] = run(m.cfg, work, tmp / f"alone{rep}" / m.name)
        t_alone.append(time.perf_counter() - t)
        t = time.perf_counter()
        group = run_group(base, p["methods"], p["grid"], work, tmp / f"group{rep}")
        t_group.append(time.perf_counter() - t)
        same = same and all(_plain(group[n]) == _plain(alone[n]) for n in alone)
    n_train = next(iter(group.values()))["n_train"]
    return {"members": len(group), "alone": min(t_alone), "group": min(t_group), "same": same, "n_train": n_train,
            "alone_all": t_alone, "group_all": t_group}


def _best(times: list[float]) -> str:
    return "" if len(times) == 1 else "   (best of " + ", ".join(f"{t:.1f}" for t in times) + ")"


def _flags(entry: dict) -> list[str]:
    """A grid entry as distill flags: {"w_dist": 2.0} -> ["--w-dist", "2.0"]."""
    return [a for k, v in entry.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def cli_seconds(work: Path, tmp: Path, p: dict, repeats: int = 1) -> tuple[list[float], list[float], bool]:
    """The same comparison as a user runs it: N `rise-pipeline distill` commands, one per member, against one
    command for the group (`--method a,b,c --grid JSON`), each its own process (imports, store checks and
    all), `repeats` times in alternation. Returns (the N commands' seconds, the group command's seconds, one
    figure per repeat, and whether every metrics.json equals its command alone)."""
    common = ["--work", str(work), "--target-domain", "cartoon", "--student", p["student"], "--no-pretrained",
              "--epochs", str(p["epochs"]), "--image-size", str(p["image_size"]), "--batch-size",
              str(p["batch_size"]), "--workers", "0", "--device", p["device"]]
    env = {**os.environ, "RISE_PROGRESS": "0", "PYTHONPATH": str(ROOT)}

    def distill(*args: str) -> None:
        subprocess.run([sys.executable, "-m", "stages.cli", "-q", "distill", *common, *args], cwd=ROOT, env=env,
                       check=True, capture_output=True)

    from pipeline.distill.config import DistillConfig
    from pipeline.distill.group import members

    base = DistillConfig(target_domain="cartoon", student=p["student"], pretrained=False, epochs=p["epochs"],
                         image_size=p["image_size"], batch_size=p["batch_size"], workers=0, device=p["device"])
    t_alone, t_group, same = [], [], True
    for rep in range(repeats):
        alone, group = tmp / f"cli-alone{rep}", tmp / f"cli-group{rep}"
        t = time.perf_counter()
        for m in members(base, p["methods"], p["grid"]):  # each distinct student once, named as in the group
            distill("--out", str(alone / m.name), "--method", m.method, *_flags(p["grid"][m.entries[0]]))
        t_alone.append(time.perf_counter() - t)
        t = time.perf_counter()
        distill("--out", str(group), "--method", ",".join(p["methods"]), "--grid", json.dumps(p["grid"]))
        t_group.append(time.perf_counter() - t)
        same = same and all(json.loads((alone / d.name / "metrics.json").read_text())
                            == json.loads((d / "metrics.json").read_text()) for d in group.iterdir() if d.is_dir())
    return t_alone, t_group, same


def data_pass_seconds(work: Path, p: dict) -> float:
    """One run's data path alone: every planned training batch and every evaluation batch of its epochs read
    by offset, decoded and replayed, with the store's targets, exactly as a run reads them, but no model."""
    from pipeline.distill.data import RunData
    from pipeline.store import verify_store

    store = verify_store(work)
    target = store.domain_names.index("cartoon")
    sources = [i for i in range(len(store.domain_names)) if i != target]
    data = RunData(work, store, sources, target, p["image_size"], 0, p["batch_size"])
    t = time.perf_counter()
    for epoch in range(p["epochs"]):
        for _ in data.train_loader(epoch):
            pass
        for _ in data.eval_loader():
            pass
    return time.perf_counter() - t


def online_epoch_seconds(work: Path, p: dict) -> float:
    """The reference's cost for one member: the teacher's image tower runs on every training batch too."""
    from bench_distill import bench as distill_bench

    r = distill_bench(work, p["student"], p["image_size"], p["batch_size"], 0, p["device"])
    return r["images"] / r["online"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    ap.add_argument("--small", action="store_true", help="CPU smoke test (same as --preset small)")
    ap.add_argument("--repeats", type=int, default=2, help="alone/group measurements in alternation; best of each")
    ap.add_argument("--cli", action="store_true",
                    help="also time N `rise-pipeline distill` commands against one group command (a process each)")
    a = ap.parse_args(argv)
    name = "small" if a.small else a.preset
    p = PRESETS[name]
    if p["device"] == "cuda":
        import torch

        if not torch.cuda.is_available():
            sys.exit("no CUDA device: use --preset demo|resnet50 or --small on the CPU")
        torch.backends.cudnn.benchmark = True
    from bench_distill import build_work

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        work = build_work(tmp, p["per_cell"], p["world_size"], p["teacher"], max(3, p["epochs"]), p["device"])
        built = time.perf_counter() - t0
        r = bench(work, tmp, p, 1 if a.small else max(1, a.repeats))
        data = data_pass_seconds(work, p)
        members = r["members"]
        roster = ", ".join(p["methods"]) + f" x {len(p['grid'])} config(s)"
        print(f"\n{name}: {p['student']} @ {p['image_size']} px, batch {p['batch_size']}, {p['epochs']} epoch(s), "
              f"{r['n_train']} training images, {p['device']}; members {roster}")
        print(f"  {members} runs one by one      {r['alone']:8.1f} s{_best(r['alone_all'])}")
        print(f"  one group of {members} members   {r['group']:8.1f} s   speed-up {r['alone'] / r['group']:.2f}x"
              f"{_best(r['group_all'])}")
        print(f"  every member's metrics equal its run alone: {'yes' if r['same'] else 'NO'}")
        per_run = r["alone"] / members
        shared = (r["alone"] - r["group"]) / (members - 1) if members > 1 else 0.0
        member = per_run - shared
        if shared > 0 and member > 0:
            print(f"  per run: shared {shared:.2f} s ({100 * shared / per_run:.0f} %; data path alone, no model: "
                  f"{data:.2f} s), each member {member:.2f} s; no group size can exceed {per_run / member:.2f}x")
        else:
            print(f"  per run: no shared cost measurable above the noise (data path alone, no model: {data:.2f} s)")
        if a.cli:
            c_alone, c_group, c_same = cli_seconds(work, tmp, p, 1 if a.small else max(1, a.repeats))
            print(f"  as commands: {members} x `rise-pipeline distill` {min(c_alone):8.1f} s{_best(c_alone)}")
            print(f"  one group command {min(c_group):8.1f} s   speed-up {min(c_alone) / min(c_group):.2f}x"
                  f"{_best(c_group)}; metrics equal: {'yes' if c_same else 'NO'} (each process imports torch, "
                  f"timm and open_clip and checks the store)")
            r["same"] = r["same"] and c_same
        if p["device"] == "cuda":
            online = online_epoch_seconds(work, p) * p["epochs"] * members
            print(f"  {members} runs with the teacher online (reference loop, estimated from one epoch x {members}) "
                  f"{online:8.1f} s   group speed-up {online / r['group']:.2f}x")
        print(f"  (stage one: {built:.0f} s)")
        if not r["same"]:
            sys.exit(1)


if __name__ == "__main__":
    main()
