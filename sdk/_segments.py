"""User segments: spherical k-means over user vectors, each group described by typical items."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ._results import UserSegment


def kmeans(x: np.ndarray, n: int, rng: np.random.Generator, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means with k-means++ seeding: (labels, unit centres)."""
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, n):
        dist = np.clip(1.0 - np.max(x @ np.stack(centres).T, axis=1), 0.0, None)
        total = dist.sum()
        centres.append(x[rng.choice(len(x), p=dist / total)] if total > 0 else x[rng.integers(len(x))])
    c = np.stack(centres)
    labels = np.zeros(len(x), dtype=np.int64)
    for step in range(iterations):
        new = np.argmax(x @ c.T, axis=1)
        if step and np.array_equal(new, labels):
            break
        labels = new
        for j in range(n):
            members = x[labels == j]
            if len(members):
                mean = members.sum(0)
                norm = np.linalg.norm(mean)
                c[j] = mean / norm if norm > 0 else c[j]
    return labels, c


def segments(users: np.ndarray, histories: Sequence[list[str]], vectors: Callable[[list[str]], np.ndarray],
             n: int, top: int, seed: int, iterations: int) -> list[UserSegment]:
    """`n` groups of the unit `users` (one row per history), largest first, each with the `top`
    items of its members' histories closest to its centre."""
    labels, centres = kmeans(users, n, np.random.default_rng(seed), iterations)
    out = []
    for c in range(n):
        members = np.flatnonzero(labels == c).tolist()
        if not members:
            continue
        pool = list(dict.fromkeys(i for m in members for i in histories[m]))
        closeness = vectors(pool) @ centres[c]
        out.append(UserSegment(members, [pool[j] for j in np.argsort(-closeness, kind="stable")[:top]], centres[c]))
    return sorted(out, key=lambda s: -len(s.members))


__all__ = ["kmeans", "segments"]
