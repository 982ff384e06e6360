"""Accuracy of a `Scorer` on any DomainBed folder or index file: per domain, with a confusion matrix.

Classes are matched by name (case, spaces and underscores aside, as the shard step compares them); images of
classes the model does not know are left out, named in one line. Every image of a domain counts (train and
val splits alike), as for the held-out domain of a run: on that domain this reproduces the run's target_acc.
Unreadable files are skipped and counted, never fatal."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..extract.sources import normalise_class, scan
from ..io import write_json, write_text
from .predict import score_files

log = logging.getLogger(__name__)


def match_classes(model_labels: Sequence[str], data_classes: Sequence[str]) -> tuple[dict[str, int], list[str]]:
    """({data class: model class index}, data classes the model does not know)."""
    index = {normalise_class(name): i for i, name in enumerate(model_labels)}
    known = {c: index[normalise_class(c)] for c in data_classes if normalise_class(c) in index}
    return known, [c for c in data_classes if c not in known]


def evaluate(scorer, data_root: str | Path, domains: Sequence[str] | None = None, batch_size: int = 64) -> dict:
    """{model, data_root, classes, unknown_classes, per_domain {domain: {acc, n, correct, confusion}},
    skipped [{path, reason}]}: confusion[i][j] counts images of model class i predicted as class j."""
    source = scan(data_root)
    wanted = list(domains) if domains else source.domains
    unknown_domains = [d for d in wanted if d not in source.domains]
    if unknown_domains:
        raise UserError(f"domain(s) {', '.join(unknown_domains)} not in {data_root}; it has "
                        f"{', '.join(source.domains) or 'none'}")
    labels = scorer.label_names
    known, unknown = match_classes(labels, source.classes)
    if not known:
        raise UserError(f"none of the classes in {data_root} ({', '.join(source.classes[:8])}) is one the model "
                        f"knows ({', '.join(labels[:8])})")
    if unknown:
        log.warning("classes the model does not know, left out: %s", ", ".join(unknown))
    entries = [e for e in source.entries if e.skip is None and e.domain in wanted and e.class_name in known]
    n = len(labels)
    confusion = {d: np.zeros((n, n), dtype=np.int64) for d in wanted}
    skipped = []
    files = [Path(e.path) for e in entries]
    for e, (_, probs, why) in zip(entries, score_files(scorer, files, batch_size, desc="evaluate"), strict=True):
        if probs is None:
            skipped.append({"path": e.source, "reason": why})
            continue
        confusion[e.domain][known[e.class_name], int(probs.argmax())] += 1
    if skipped:
        log.warning("%d unreadable file(s) skipped (listed in evaluation.json), e.g. %s: %s", len(skipped),
                    skipped[0]["path"], skipped[0]["reason"])
    per_domain = {}
    for d, m in confusion.items():
        total, correct = int(m.sum()), int(np.trace(m))
        per_domain[d] = {"acc": correct / total if total else float("nan"), "n": total, "correct": correct,
                         "confusion": m.tolist()}
    return {"model": scorer.description, "data_root": str(data_root), "classes": list(labels),
            "unknown_classes": unknown, "per_domain": per_domain, "skipped": skipped}


def write_outputs(result: dict, out: str | Path) -> None:
    """OUT/evaluation.json, OUT/per_domain.csv, OUT/confusion.csv (long form) and OUT/confusion.png."""
    out = Path(out)
    write_json(out / "evaluation.json", result)
    labels = result["classes"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["domain", "n", "correct", "acc"])
    for d, r in result["per_domain"].items():
        w.writerow([d, r["n"], r["correct"], f"{r['acc']:.6f}"])
    write_text(out / "per_domain.csv", buf.getvalue())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["domain", "true", "predicted", "count"])
    for d, r in result["per_domain"].items():
        for i, row in enumerate(r["confusion"]):
            for j, count in enumerate(row):
                w.writerow([d, labels[i], labels[j], count])
    write_text(out / "confusion.csv", buf.getvalue())
    _figure(result, out / "confusion.png")


def _figure(result: dict, dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    labels, domains = result["classes"], list(result["per_domain"])
    n = len(labels)
    side = min(1.2 + 0.35 * n, 8.0)
    fig, axes = plt.subplots(1, len(domains), figsize=(side * len(domains), side + 0.6), squeeze=False)
    for ax, d in zip(axes[0], domains, strict=True):
        m = np.asarray(result["per_domain"][d]["confusion"], dtype=float)
        rows = m.sum(1, keepdims=True)
        ax.imshow(np.divide(m, rows, out=np.zeros_like(m), where=rows > 0), vmin=0, vmax=1, cmap="Blues")
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    if m[i, j]:
                        ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7)
        ticks = range(n) if n <= 40 else []
        ax.set_xticks(list(ticks), [labels[i] for i in ticks], rotation=90, fontsize=7)
        ax.set_yticks(list(ticks), [labels[i] for i in ticks], fontsize=7)
        acc = result["per_domain"][d]["acc"]
        ax.set_title(f"{d}: {acc:.3f} (n={result['per_domain'][d]['n']})", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.tight_layout()
    with atomic_path(dest, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def summary_lines(result: dict) -> list[str]:
    width = max(len(d) for d in result["per_domain"])
    return [f"{d:<{width}}  acc {r['acc']:.4f}  ({r['correct']}/{r['n']})" for d, r in result["per_domain"].items()]


__all__ = ["evaluate", "write_outputs", "match_classes", "summary_lines"]
