"""Why an item was recommended: the history items whose vectors are closest to it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._results import ExplainedRecommendation

TOP = 3  # history items named per result


def explain(hits: list[tuple[str, float]], used: list[str],
            vectors: Callable[[list[str]], np.ndarray]) -> list[ExplainedRecommendation]:
    """Each hit with up to TOP of the `used` history items, most similar first (positive only)."""
    if not hits or not used:
        return [ExplainedRecommendation(i, s, ()) for i, s in hits]
    contrib = vectors([i for i, _ in hits]) @ vectors(used).T  # (k, history)
    out = []
    for (item, score), row in zip(hits, contrib, strict=True):
        order = np.argsort(-row, kind="stable")[:TOP]
        out.append(ExplainedRecommendation(item, score, tuple(used[j] for j in order if row[j] > 0)))
    return out


__all__ = ["explain"]
