"""GPU group benchmark (one H200, < 8 minutes): `bench_group.py --preset gpu`.

ResNet-50 students at 224 px (bf16 autocast) from a ViT-B-16 teacher store (random weights: speed does not
depend on them; nothing is downloaded): 6 members (erm, kd, rise x 2 configs) as one group against the same
6 runs one by one and against the reference's online-teacher loop.

    .venv/bin/python benchmarks/gpu_group.py            # on a CUDA machine
    .venv/bin/python benchmarks/gpu_group.py --small    # CPU smoke test
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_group import main  # noqa: E402

if __name__ == "__main__":
    main(["--small"] if "--small" in sys.argv[1:] else ["--preset", "gpu", "--repeats", "1"])  # fits 8 minutes
