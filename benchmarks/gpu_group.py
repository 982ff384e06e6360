"""GPU group benchmark (one H200, < 8 minutes): `bench_group.py --preset gpu`.

ResNet-50 students at 224 px (bf16 autocast) from a ViT-B-16 teacher store (random weights: speed does not
depend on them; nothing is downloaded): 6 members (erm, kd, rise x 2 configs) as one group against the same
6 runs one by one and against the reference's online-teacher loop.

    .venv/bin/python benchmarks/gpu_group.py            # on a CUDA machine
    .venv/bin/python benchmarks/gpu_group.py --small    # CPU smoke test

On a CUDA machine it first runs `pytest -m cuda` (the tests that must also hold on a GPU: group = alone,
resume, teacher autocast, faiss) and stops if they fail: a figure from a run that is not exact is no figure.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_group import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    if "--small" not in sys.argv[1:]:
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"], cwd=ROOT)
        if tests.returncode != 0:
            sys.exit(f"pytest -m cuda failed (exit {tests.returncode}); no benchmark")
    main(["--small"] if "--small" in sys.argv[1:] else ["--preset", "gpu", "--repeats", "1"])  # fits 8 minutes
