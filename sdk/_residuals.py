"""`ResidualTable`: what training learnt per item beyond its text, and what a new item borrows of it.

A trained item's vector is normalise(t + r): t its text vector (the encoder's output), r its
residual. A new item has no residual of its own, so it borrows one: the softmax-weighted
residuals of the `k` trained items nearest to it in text space (weights softmax(cos / temperature)
times `shrink`). Training simulates exactly this on items whose residual it drops, so the user
model learns to score borrowed residuals; the SDK applies the same rule to every item it embeds
(`residuals.npz` holds the trained items' text vectors and residuals, float16).

`bonus` is added to new items' scores when a user model ranks them, chosen on validation at
training time: at most 3 % of the warm targets' NDCG@10 may go, and within that the least bonus
that ranks new items as well as the untrained encoder does, else the best it can
(bench/RESULTS.md, "The language model learns").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._errors import BundleError
from ._manifest import NewItemsInfo

_CHUNK = 2048  # query rows per similarity block: bounds memory at CHUNK x trained items


class ResidualTable:
    """Trained items' text vectors and residuals (rows in `ids` order)."""

    def __init__(self, ids: Sequence[str], text: np.ndarray, residual: np.ndarray, info: NewItemsInfo) -> None:
        self.ids = list(ids)
        self.row = {item: n for n, item in enumerate(self.ids)}
        # held at the precision they are stored in, so a table in memory ranks as its loaded copy does
        self.text = np.asarray(text, dtype=np.float16).astype(np.float32)
        self.residual = np.asarray(residual, dtype=np.float16).astype(np.float32)
        self.info = info
        # t̄ of the text term's centred part (UserModelInfo.centred_text_weight)
        self.text_mean = self.text.mean(axis=0) if len(self.text) else np.zeros(self.text.shape[1:], np.float32)
        if self.text.shape != self.residual.shape or len(self.ids) != len(self.text):
            raise ValueError(f"residual table: {len(self.ids)} ids, text {self.text.shape}, "
                             f"residual {self.residual.shape} do not match")

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.row

    # -- files ------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:
            np.savez(f, ids=np.array(self.ids, dtype=str), text=self.text.astype(np.float16),
                     residual=self.residual.astype(np.float16))

    @classmethod
    def load(cls, path: str | os.PathLike[str], info: NewItemsInfo, dim: int) -> ResidualTable:
        try:
            with np.load(Path(path), allow_pickle=False) as z:
                ids, text, residual = z["ids"].tolist(), z["text"], z["residual"]
        except (OSError, KeyError, ValueError) as e:
            raise BundleError(f"{path}: not a residual table ({e})") from None
        if text.ndim != 2 or text.shape[1] != dim:
            raise BundleError(f"{path}: text vectors of shape {text.shape}, the bundle's dim is {dim}")
        try:
            return cls(ids, text, residual, info)
        except ValueError as e:
            raise BundleError(f"{path}: {e}") from None

    # -- the rule ---------------------------------------------------------------------------------
    def neighbours(self, text: np.ndarray, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows (n, k), weights (n, k)): each text vector's k nearest trained items and their
        borrowing weights; `exclude[i]` (a row, or -1) is never a neighbour of query i (itself)."""
        k = min(self.info.k, len(self.ids) - (1 if exclude is not None else 0))
        n = len(text)
        rows = np.zeros((n, max(k, 0)), dtype=np.int64)
        weights = np.zeros((n, max(k, 0)), dtype=np.float32)
        if k < 1:
            return rows, weights
        for start in range(0, n, _CHUNK):
            sims = np.asarray(text[start:start + _CHUNK], dtype=np.float32) @ self.text.T
            if exclude is not None:
                own = exclude[start:start + _CHUNK]
                hit = own >= 0
                sims[np.flatnonzero(hit), own[hit]] = -np.inf
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            s = np.take_along_axis(sims, top, 1)
            w = np.exp((s - s.max(1, keepdims=True)) / self.info.temperature)
            rows[start:start + _CHUNK] = top
            weights[start:start + _CHUNK] = self.info.shrink * w / w.sum(1, keepdims=True)
        return rows, weights

    def borrowed(self, text: np.ndarray) -> np.ndarray:
        """(n, dim) residuals borrowed by items with these text vectors."""
        rows, weights = self.neighbours(text)
        return np.einsum("nk,nkd->nd", weights, self.residual[rows]) if rows.shape[1] else np.zeros_like(text)

    def apply(self, ids: Sequence[str], text: np.ndarray) -> np.ndarray:
        """Item vectors for `ids` embedded as `text` (n, dim): a trained item adds its own
        residual, any other item the borrowed one; L2-normalised."""
        text = np.asarray(text, dtype=np.float32)
        own = np.array([self.row.get(i, -1) for i in ids], dtype=np.int64)
        out = text.copy()
        trained = own >= 0
        if trained.any():
            out[trained] += self.residual[own[trained]]
        if (~trained).any():
            out[~trained] += self.borrowed(text[~trained])
        return _unit(out)

    def place(self, text: np.ndarray) -> np.ndarray:
        """Where a text vector stands among item vectors: as a new item with that text would
        (plus the residual it borrows), so a free-text query meets items in their own space."""
        text = np.asarray(text, dtype=np.float32)
        return _unit(text + self.borrowed(text))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


__all__ = ["ResidualTable"]
