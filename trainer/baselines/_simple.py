"""Baselines without training: popularity, item-item kNN and the zero-shot text encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from lmrec.evaluation import FitContext

from .._encoder import cached_item_vectors


class Pop:
    """Training-set interaction counts: the same ranking for every user."""

    name = "pop"

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def fit(self, ctx: FitContext) -> None:
        self.counts = ctx.split.train_counts().astype(np.float32)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.tile(self.counts, (len(histories), 1))


def _last(histories: Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    return [h[-n:] for h in histories]


class ItemKNN:
    """Item–item cosine on training co-occurrence (users as features), summed over the user's
    last n history items; n ∈ {1, 20} chosen on validation."""

    name = "itemknn"
    candidates = (1, 20)

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def fit(self, ctx: FitContext) -> None:
        import scipy.sparse as sp

        split = ctx.split
        rows = np.repeat(np.arange(len(split.train)), [len(s) for s in split.train])
        cols = np.concatenate(split.train)
        x = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)),
                          shape=(len(split.train), split.n_items))
        x.data[:] = 1.0  # repeated items count once
        co = (x.T @ x).tocsr().astype(np.float32)
        norms = np.sqrt(co.diagonal())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        sim = sp.diags(inv) @ co @ sp.diags(inv)
        sim.setdiag(0.0)
        sim.eliminate_zeros()
        self.sim = sim.toarray() if split.n_items <= 20_000 else sim.tocsr()
        best = max(self.candidates, key=lambda n: ctx.validate(lambda h: self._score(h, n)))
        self.params = {"last_n": best}

    def _score(self, histories: Sequence[np.ndarray], n: int) -> np.ndarray:
        import scipy.sparse as sp

        last = _last(histories, n)
        rows = np.repeat(np.arange(len(last)), [len(h) for h in last])
        h = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, np.concatenate(last))),
                          shape=(len(last), self.sim.shape[0]))
        out = h @ self.sim
        return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float32)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self._score(histories, self.params["last_n"])


class ZeroShot:
    """The untrained base text encoder: user = mean of the last n history item vectors,
    n ∈ {1, 5, 20} chosen on validation; score = cosine to every item."""

    name = "zeroshot"
    candidates = (1, 5, 20)

    def __init__(self, base_model: str | None = None, max_length: int = 128) -> None:
        self.base_model = base_model
        self.max_length = max_length
        self.params: dict[str, Any] = {}

    def fit(self, ctx: FitContext) -> None:
        self.vectors = cached_item_vectors(ctx.data.item_texts, self.base_model, self.max_length,
                                           device=ctx.device, progress=ctx.progress)
        best = max(self.candidates, key=lambda n: ctx.validate(lambda h: self._score(h, n)))
        self.params = {"last_n": best, "max_length": self.max_length}

    def _score(self, histories: Sequence[np.ndarray], n: int) -> np.ndarray:
        users = np.stack([self.vectors[h[-n:]].mean(0) for h in histories])
        return users @ self.vectors.T

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self._score(histories, self.params["last_n"])
