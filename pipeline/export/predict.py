"""Scoring image files with a `Scorer`: unreadable files become rows with their reason, never a crash."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ..errors import BadSample
from ..images import MAX_PIXELS, decode_rgb
from ..progress import progress


def list_images(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded to every file below them (sorted, hidden entries skipped). Paths that
    do not exist are kept: their row says so."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [Path(root) / f for f in files if not f.startswith(".")]
            out += sorted(found)
        else:
            out.append(p)
    return out


def read_image(path: Path, max_pixels: int = MAX_PIXELS):
    """(upright RGB image, None) or (None, reason) -- decoded as the shard and distill steps decode."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, "not found"
    except OSError as e:
        return None, f"unreadable: {e.strerror or type(e).__name__}"
    if not data:
        return None, "empty file"
    try:
        return decode_rgb(data, max_pixels), None
    except BadSample as e:
        # PIL names the in-memory buffer it was given ("<_io.BytesIO object at 0x...>"): noise in a report
        return None, re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(e).splitlines()[0])[:200]


def score_files(scorer, files: Sequence[Path], batch_size: int = 64, desc: str = "images") \
        -> Iterator[tuple[Path, torch.Tensor | None, str | None]]:
    """(file, probabilities or None, reason or None) for each file, in order, in batches of `batch_size`."""
    bar = progress(total=len(files), unit="img", desc=desc, mininterval=1.0)
    try:
        for start in range(0, len(files), batch_size):
            chunk = files[start:start + batch_size]
            prepared, results = [], []
            for f in chunk:
                img, why = read_image(f)
                if img is not None:
                    try:
                        prepared.append(scorer.prepare(img))
                    except (OSError, ValueError) as e:
                        img, why = None, f"cannot transform: {str(e)[:160]}"
                results.append((f, img is not None, why))
            probs = iter(scorer.probs(torch.stack(prepared)) if prepared else [])
            for f, ok, why in results:
                yield f, next(probs) if ok else None, why
            bar.update(len(chunk))
    finally:
        bar.close()


def predict_csv(scorer, files: Sequence[Path], k: int = 5, batch_size: int = 64) -> tuple[str, int]:
    """CSV text: path, top-k (class, probability) pairs, error; and the number of unreadable files."""
    labels = scorer.label_names
    k = max(1, min(k, len(labels)))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["path", *[c for i in range(1, k + 1) for c in (f"class_{i}", f"prob_{i}")], "error"])
    bad = 0
    for f, probs, why in score_files(scorer, files, batch_size):
        if probs is None:
            bad += 1
            w.writerow([str(f), *[""] * (2 * k), why])
            continue
        top = probs.topk(k)
        w.writerow([str(f), *[v for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                              for v in (labels[i], f"{p:.6f}")], ""])
    return buf.getvalue(), bad
