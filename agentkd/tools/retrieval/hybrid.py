"""Hybrid retrieval: reciprocal-rank fusion (RRF) of BM25 and dense rankings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rrf(rankings: Sequence[np.ndarray], k: int, rrf_k: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Fuse ranked row lists: score(row) = sum over lists of 1 / (rrf_k + rank), rank 1-based. Ties keep the
    order of first appearance, so the result is deterministic."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, row in enumerate(ranking.tolist(), start=1):
            scores[row] = scores.get(row, 0.0) + 1.0 / (rrf_k + rank)
    best = sorted(scores.items(), key=lambda kv: -kv[1])[:k]
    return (np.asarray([r for r, _ in best], dtype=np.int64), np.asarray([s for _, s in best], dtype=np.float32))


def candidates(k: int) -> int:
    """How deep each list is read before fusing."""
    return max(50, 10 * k)
