"""Near-duplicate and leakage audit over the clean-view embeddings, with faiss.

Embeddings are L2-normalised, so inner product = cosine. An exact flat index holds the N x D vectors (O(N)
memory); queries run in blocks asking each row for its k nearest neighbours, and only pairs above the
threshold are kept, so memory never grows as N^2 (500,000 rows of ViT-B-16: 1 GB of float32 vectors). A
k-NN search rather than a range search because faiss GPU indexes implement only k-NN; a row whose k-th
neighbour is still above the threshold may have more duplicates, and is counted as `saturated`.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from ..progress import progress
from ..store import SPLITS, StoreReader

log = logging.getLogger(__name__)


def _index(dim: int, use_gpu: bool):
    import faiss

    index = faiss.IndexFlatIP(dim)
    if use_gpu and faiss.get_num_gpus() > 0:
        res = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(res, 0, index), "gpu", res
    return index, "cpu", None


def near_duplicates(reader: StoreReader, threshold: float, k: int = 10, block: int = 8192,
                    use_gpu: bool = True) -> tuple[np.ndarray, np.ndarray, int, str]:
    """(pairs (P, 2) int64 with i < j, cosines (P,), saturated rows, index kind) of all pairs found among
    each row's k nearest neighbours with cosine >= threshold."""
    n, dim = len(reader), reader.embed_dim
    index, kind, _res = _index(dim, use_gpu)
    for s in range(0, n, block):
        index.add(np.ascontiguousarray(reader.clean(np.arange(s, min(n, s + block)))))
    k = min(k + 1, n)  # +1: a row finds itself
    found: dict[tuple[int, int], float] = {}
    saturated = 0
    for s in progress(range(0, n, block), desc="audit", unit="block", leave=False):
        rows = np.arange(s, min(n, s + block))
        sims, ids = index.search(np.ascontiguousarray(reader.clean(rows)), k)
        saturated += int((sims[:, -1] >= threshold).sum()) if k < n else 0
        qi, col = np.nonzero((sims >= threshold) & (ids != rows[:, None]) & (ids >= 0))
        for a, b, c in zip(rows[qi], ids[qi, col], sims[qi, col], strict=True):
            found[(min(a, b), max(a, b))] = float(c)
    pairs = np.array(sorted(found), dtype=np.int64).reshape(-1, 2)
    cos = np.array([found[tuple(p)] for p in pairs], dtype=np.float32)
    return pairs, cos, saturated, kind


def audit(reader: StoreReader, threshold: float = 0.95, k: int = 10, max_pairs: int = 1000,
          use_gpu: bool = True) -> dict:
    """audit.json content: pairs above `threshold`, grouped cross-domain / cross-split / within."""
    pairs, cos, saturated, kind = near_duplicates(reader, threshold, k, use_gpu=use_gpu)
    dom, split = reader.domains, reader.splits
    a, b = pairs[:, 0], pairs[:, 1]
    cross_domain = dom[a] != dom[b]
    cross_split = ~cross_domain & (split[a] != split[b])
    group = np.where(cross_domain, "cross_domain", np.where(cross_split, "cross_split", "within"))
    by_domains = Counter(
        " | ".join(sorted((reader.domain_names[dom[i]], reader.domain_names[dom[j]]))) for i, j in pairs)
    order = np.argsort(-cos, kind="stable")[:max_pairs]
    listed = [{"a": str(reader.keys[a[i]]), "b": str(reader.keys[b[i]]), "cosine": round(float(cos[i]), 5),
               "group": str(group[i]),
               "domains": [reader.domain_names[dom[a[i]]], reader.domain_names[dom[b[i]]]],
               "splits": [SPLITS[split[a[i]]], SPLITS[split[b[i]]]]} for i in order]
    counts = {g: int((group == g).sum()) for g in ("cross_domain", "cross_split", "within")}
    result = {"threshold": threshold, "k": k, "rows": len(reader), "index": kind, "pairs": len(pairs),
              "counts": counts, "by_domain_pair": dict(sorted(by_domains.items())), "saturated_rows": saturated,
              "listed": listed, "listed_truncated": len(pairs) > max_pairs}
    log.debug("audit: %d near-duplicate pairs (cos >= %.3f): %d cross-domain, %d train/val leakage, %d within",
             len(pairs), threshold, counts["cross_domain"], counts["cross_split"], counts["within"])
    return result
