"""A throw-away git + DVC repository holding this project's dvc.yaml and code, for end-to-end tests that
drive the real `dvc repro` / `dvc exp run` (tests/test_dvc_pipeline.py, tests/demo/test_demo_pipeline.py)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAN = re.compile(r"Running stage '([^']+)'")


def make_repo(dest: Path, params: dict) -> Path:
    """Copy dvc.yaml, its plot templates and the code it names as deps, write `params`, then git init +
    dvc init + commit."""
    dest.mkdir(parents=True)
    for name in ("dvc.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, dest / name)
    for pkg in ("pipeline", "stages"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    write_params(dest, params)
    (dest / ".gitignore").write_text("__pycache__/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        run(dest, cmd)
    shutil.copytree(ROOT / ".dvc" / "plots", dest / ".dvc" / "plots")  # dvc.yaml's plot templates
    for cmd in (["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        run(dest, cmd)
    return dest


def real_data_params(views: int, templates: list[str], batch_size: int, sweep: dict, **distill) -> dict:
    """The project's params.yaml set up as for a real dataset in `data/images` (the demo stages off, as a
    preset leaves them), with a random-weight RISE-micro-ViT teacher and a tiny from-scratch student."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"] = {"root": "data/images", "work": "data/work"}
    for stage in ("world", "teacher", "student"):
        p[stage]["enabled"] = False
    p["shard"].update(shard_size=4, workers=1)
    p["embed"].update(model="RISE-micro-ViT", pretrained="random", views=views, batch_size=32, workers=0,
                      templates=templates)
    p["distill"].update(student="test_resnet", pretrained=False, checkpoint="", epochs=1, image_size=32,
                        batch_size=batch_size, workers=0, **distill)
    p["sweep"] = sweep
    return p


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def env() -> dict:
    e = dict(os.environ)
    # The repo's `rise-pipeline` runs this checkout's code (it is what the copied deps describe).
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    e["PYTHONPATH"] = str(ROOT)
    e.update({"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
              "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1"})
    return e


def run(repo: Path, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    exe = str(BIN / cmd[0]) if (BIN / cmd[0]).exists() else cmd[0]
    r = subprocess.run([exe, *cmd[1:]], cwd=repo, env=env(), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def repro(repo: Path, *args: str) -> tuple[set[str], str]:
    """Run `dvc repro`; return the names of the stages that actually ran, and the whole output."""
    r = run(repo, ["dvc", "repro", *args])
    out = r.stdout + r.stderr
    return set(RAN.findall(out)), out
