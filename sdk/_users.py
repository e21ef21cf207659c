"""Users as queries: a history of item ids, a vector, or examples → a vector in the catalogue's space."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._catalogue import Catalogue, TextQuery
from ._checks import id_list
from ._errors import UnknownItemError
from ._index import normalise
from ._user_encoder import UserEncoder


class Users:
    """The bundle's user model when it has one, else the mean of the last `recent` item vectors
    (`manifest.recent`). Callers hold the catalogue's read lock across a query."""

    def __init__(self, catalogue: Catalogue, encoder: UserEncoder | None, recent: int) -> None:
        self.catalogue = catalogue
        self.encoder = encoder
        self.recent = recent
        info = catalogue.bundle.manifest.user_model if encoder is not None else None
        self.mix = (info.recent_items, info.recent_weight) if info is not None and info.recent_weight else None
        # UserModelInfo's text term: (last items, β, C of its centred part), or None (off, or no user model)
        self.text = ((info.text_items, info.text_weight, info.centred_text_weight)
                     if info is not None and (info.text_weight or info.centred_text_weight) else None)
        self.span = encoder.max_history if encoder is not None else recent  # history items that shape a user
        self.skipped = 0  # unknown ids dropped from histories
        self._lock = threading.Lock()

    def known(self, history: Any, strict: bool, name: str = "history") -> tuple[list[str], list[str]]:
        """(known ids, unknown ids) of a history; UnknownItemError for an unknown id when strict."""
        history = id_list(history, name)
        known = [i for i in history if i in self.catalogue]
        unknown = [i for i in history if i not in self.catalogue] if len(known) != len(history) else []
        if unknown:
            if strict:
                raise UnknownItemError.of(name, unknown)
            with self._lock:
                self.skipped += len(unknown)
        return known, unknown

    def known_all(self, histories: Sequence[Any], strict: bool) -> list[list[str]]:
        return [self.known(h, strict, f"histories[{n}]")[0] for n, h in enumerate(histories)]

    def vectors(self, histories: Sequence[list[str]]) -> np.ndarray:
        """(b, dim) user vectors for non-empty histories of known ids."""
        return self.from_item_vectors([self.catalogue.vectors(h[-self.span:]) for h in histories])

    def from_item_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """(b, dim) user vectors for histories given as their item vectors (n_i, dim), oldest first."""
        if self.encoder is None:
            return np.stack([h[-self.recent:].mean(0) for h in histories]).astype(np.float32)
        users = self.encoder([h[-self.span:] for h in histories])
        if self.mix is None:
            return users
        items, weight = self.mix  # UserModelInfo: (1 - w) u + w |u| m̂, m̂ the last items' unit mean
        last = np.stack([h[-items:].mean(0) for h in histories])
        last /= np.maximum(np.linalg.norm(last, axis=1, keepdims=True), 1e-12)
        return ((1 - weight) * users + weight * np.linalg.norm(users, axis=1, keepdims=True) * last).astype(np.float32)

    def text_queries(self, histories: Sequence[list[str]]) -> TextQuery | None:
        """The text term's queries per history, β r̂ on every item and C r̂ centred on new items
        (r̂ the unit mean text vector of its last `text_items` items), in the units of the index's
        scores (cosines of the user vector: β |u| r̂·t / |u|); None when the bundle ranks without
        a text term."""
        if self.text is None:
            return None
        items, beta, centred = self.text
        recent = np.stack([self.catalogue.text_vectors(h[-items:]).mean(0) for h in histories])
        unit = (recent / np.maximum(np.linalg.norm(recent, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        return TextQuery(beta * unit if beta else None, centred * unit if centred else None)

    def example(self, examples: Sequence[Any], name: str) -> np.ndarray:
        """The mean of item ids' and vectors' unit vectors (Qdrant's average_vector)."""
        if isinstance(examples, (str, bytes)) or not isinstance(examples, Iterable):
            raise ValueError(f"{name}: expected a list of item ids or vectors")
        rows = []
        for n, e in enumerate(examples):
            if isinstance(e, str):
                if e not in self.catalogue:
                    raise UnknownItemError(f"{name}[{n}]: unknown item id {e!r}")
                rows.append(self.catalogue.vectors([e])[0])
            else:
                rows.append(normalise(e, self.catalogue.dim, f"{name}[{n}]")[0])
        return np.mean(rows, axis=0)


__all__ = ["Users"]
