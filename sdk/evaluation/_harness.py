"""Run scorers over evaluation cases in batches and collect per-user metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .._progress import progress_bar
from ..data import Dataset
from ._metrics import MethodResult, per_user_metrics, ranks_and_topk
from ._splits import Cases, Split

ScoreFn = Callable[[Sequence[np.ndarray]], np.ndarray]


class Scorer(Protocol):
    """A method under evaluation. `fit` sees only the training part and validation cases;
    `score` returns float scores over the whole catalogue for each history (item indices)."""

    name: str
    params: dict[str, Any]

    def fit(self, ctx: FitContext) -> None: ...

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray: ...


def evaluate(score: ScoreFn, cases: Cases, n_items: int, batch_size: int = 512,
             desc: str | None = None) -> MethodResult:
    """Exact full-ranking evaluation of `score` on `cases`."""
    ranks = np.zeros(len(cases), dtype=np.int64)
    topk = np.zeros((len(cases), min(10, n_items)), dtype=np.int64)
    for start in progress_bar(range(0, len(cases), batch_size), enabled=desc is not None, desc=desc, unit="batch",
                              leave=False):
        sl = slice(start, start + batch_size)
        hist = cases.histories[sl]
        scores = np.array(score(hist), dtype=np.float32, copy=True)
        if scores.shape != (len(hist), n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected ({len(hist)}, {n_items})")
        ranks[sl], topk[sl] = ranks_and_topk(scores, hist, cases.targets[sl])
    return MethodResult(per_user_metrics(ranks), topk, n_items)


@dataclass
class FitContext:
    """What a method may use while fitting: data, the split's training part, validation cases."""

    data: Dataset
    split: Split
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self, score: ScoreFn, metric: str = "ndcg@10") -> float:
        """Mean `metric` on the validation cases: the only signal for choosing anything."""
        return float(evaluate(score, self.split.valid, self.split.n_items).values[metric].mean())
