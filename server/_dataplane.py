"""The data plane: what each call of the service does, with no gRPC in sight.

It holds the Recommender being served (swappable while serving), the micro-batcher that merges
concurrent Embed/Search texts into one model run, and the gate that admits CPU-bound queries
(Recommend, SimilarItems) a few at a time and refuses them when too many wait. The servicer
converts messages into these calls and results back; every recommending rule lives in the SDK,
so a call here is the SDK call plus the serving concerns: which Recommender answers, batching,
admission, and a gate that keeps writes out while the bundle is swapped.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lmrec import Item, Recommendation, Recommendations, Recommender

from ._admission import ComputeGate
from ._batching import MicroBatcher


class NotReady(Exception):
    """No Recommender is loaded yet (or the server is stopping)."""


class DataPlane:
    """The current Recommender and the calls the service answers from it."""

    def __init__(self, max_batch: int = 32, max_wait_s: float = 0.002, max_queue: int = 4096,
                 on_batch: Any = None, batch_workers: int = 1, compute_slots: int = 1,
                 max_waiting: int = 32) -> None:
        self._rec: Recommender | None = None
        self._gate = threading.Condition()
        self._writers = 0
        self._swapping = False
        self.batcher = MicroBatcher(self._embed_batch, max_batch=max_batch, max_wait_s=max_wait_s,
                                    max_queue=max_queue, on_batch=on_batch, workers=batch_workers)
        self.compute = ComputeGate(compute_slots, max_waiting)

    # -- which Recommender answers ----------------------------------------------------------------
    @property
    def recommender(self) -> Recommender:
        """The current Recommender; NotReady (UNAVAILABLE) while none is loaded."""
        rec = self._rec
        if rec is None:
            raise NotReady("the server is loading its bundle (or stopping); retry shortly")
        return rec

    @property
    def current(self) -> Recommender | None:
        return self._rec

    def install(self, rec: Recommender | None) -> Recommender | None:
        """Make `rec` current (None: serve nothing); returns the previous one."""
        old, self._rec = self._rec, rec
        return old

    @contextlib.contextmanager
    def writing(self) -> Iterator[Recommender]:
        """The Recommender to write to, held against swaps until the write is durable."""
        with self._gate:
            while self._swapping:
                self._gate.wait()
            self._writers += 1
        try:
            yield self.recommender
        finally:
            with self._gate:
                self._writers -= 1
                self._gate.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """No writes while inside (running ones finish first): for swaps and the final snapshot.
        Reads go on, answered by the current Recommender."""
        with self._gate:
            while self._swapping:
                self._gate.wait()
            self._swapping = True
            while self._writers:
                self._gate.wait()
        try:
            yield
        finally:
            with self._gate:
                self._swapping = False
                self._gate.notify_all()

    def swap(self, bundle_dir: Path) -> Recommender:
        """Serve the bundle at `bundle_dir`, with the writes made so far carried onto it
        (`Recommender.reopen`). Writes wait meanwhile; reads are answered by the old bundle until
        the new one is in place. On failure the old one keeps serving and the error is raised."""
        with self.exclusive():
            new = self.recommender.reopen(bundle_dir)
            self.install(new)
            return new

    # -- calls ------------------------------------------------------------------------------------
    def _embed_batch(self, texts: list[str]) -> tuple[np.ndarray, Recommender]:
        rec = self.recommender
        return rec.embed_texts(texts, batch_size=max(len(texts), 1)), rec

    def embed(self, texts: Sequence[str], timeout: float | None) -> np.ndarray:
        _ = self.recommender  # UNAVAILABLE before the model is loaded, not a queued wait
        return self.batcher.embed(texts, timeout)[0]

    def recommend(self, timeout: float | None = None, **query: Any) -> Recommendations:
        rec = self.recommender
        with self.compute.slot(timeout):
            return rec.recommend(**query)

    def embed_user(self, history: list[str] | None, vectors: np.ndarray | None, strict: bool,
                   timeout: float | None = None) -> tuple[np.ndarray, list[str]]:
        """(user vector, history ids skipped as unknown)."""
        rec = self.recommender
        with self.compute.slot(timeout):
            vector = rec.embed_user(history, vectors, strict=strict)
        return vector, [i for i in history or () if i not in rec]

    def similar_items(self, item_id: str, k: int, filter: Mapping[str, Any] | None,
                      timeout: float | None = None) -> list[Recommendation]:
        rec = self.recommender
        with self.compute.slot(timeout):
            return rec.similar_items(item_id, k=k, filter=filter)

    def search(
        self, text: str, k: int, filter: Mapping[str, Any] | None, timeout: float | None
    ) -> list[Recommendation]:
        _ = self.recommender
        vectors, rec = self.batcher.embed([text], timeout)
        return rec.search(vectors[0], k=k, filter=filter)  # the index of the model that embedded the query

    def get_item(self, item_id: str) -> Item:
        return self.recommender.get_item(item_id)

    def get_items(self, ids: list[str]) -> tuple[list[Item], list[str]]:
        """(the items found, in order; the ids missing)."""
        rec = self.recommender
        items = rec.get_items(ids, missing_ok=True)
        found = {item.item_id for item in items}
        return items, [i for i in dict.fromkeys(ids) if i not in found]

    def upsert(self, ids: list[str], texts: list[str | None], vectors: list[np.ndarray | None],
               metadata: list[dict[str, Any]]) -> int:
        """Durable before it returns; the catalogue size after it."""
        with self.writing() as rec:
            rec.add_items(ids, texts=texts, vectors=vectors if any(v is not None for v in vectors) else None,
                          metadata=metadata)
            return len(rec)

    def delete(self, ids: list[str]) -> tuple[int, list[str], int]:
        """(deleted, missing ids, catalogue size); durable before it returns."""
        with self.writing() as rec:
            missing = rec.delete_items(ids, missing_ok=True)
            return len(set(ids)) - len(set(missing)), missing, len(rec)

    def close(self, timeout: float | None = None) -> None:
        self.batcher.close(timeout)


__all__ = ["DataPlane", "NotReady"]
