"""How far two embeddings of the same texts agree, beyond cosine: the export gate's measure,
shared with the int8 recipe's choice of SmoothQuant alpha (trainer/_quantise.py)."""

from __future__ import annotations

import numpy as np


def neighbour_overlap(reference: np.ndarray, other: np.ndarray, k: int = 10, queries: int = 2000,
                      seed: int = 0) -> float:
    """Mean fraction of each row's top-k cosine neighbours (itself excluded) shared by both spaces."""
    n = len(reference)
    k = min(k, n - 1)
    rows = np.arange(n) if n <= queries else np.sort(np.random.default_rng(seed).choice(n, queries, replace=False))

    def top(vectors: np.ndarray) -> np.ndarray:
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -np.inf
        return np.argpartition(-scores, k - 1, axis=1)[:, :k]

    a, b = top(np.asarray(reference, dtype=np.float32)), top(np.asarray(other, dtype=np.float32))
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a.tolist(), b.tolist(), strict=True)]))
