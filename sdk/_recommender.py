"""`Recommender`: queries over a bundle's catalogue — recommend, similar items, search, scores.

Items, vectors, the index and durable changes belong to the `Catalogue`; this class turns users
(histories, vectors, examples) into queries against it, with the bundle's user model when it has
one. Thread-safe: each query reads one consistent catalogue, even while items change."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._catalogue import Catalogue
from ._checks import check_k, id_list, one_user
from ._checks import histories as check_histories
from ._errors import UnknownItemError
from ._explain import explain as explain_hits
from ._filters import Filter, predicate
from ._index import normalise
from ._models import open_models
from ._results import Item, Recommendation, Recommendations, UserSegment
from ._segments import segments
from ._user_encoder import UserEncoder
from ._users import Users


class Recommender:
    """Recommendations from an lmrec bundle. Create with `Recommender.load`."""

    # Trained items up to which a search query borrows residuals: the pass over them grows with
    # the table, 0.7 ms at 10 k and 13 ms at 100 k on a 2-core host, one thread, against 0.2-0.4 ms
    # for the HNSW search itself (bench/text_search.py --cost).
    place_limit: ClassVar[int] = 50_000

    def __init__(self, catalogue: Catalogue, user_encoder: UserEncoder | None, device: str,
                 options: dict[str, Any]) -> None:
        self.catalogue = catalogue
        self.bundle = catalogue.bundle
        self.manifest = self.bundle.manifest
        self.dim = catalogue.dim
        self.device = device
        self.precision = str(catalogue.encoder.precision)
        self.precision_reason = catalogue.encoder.precision_reason  # one line: why this precision
        self.state_report = catalogue.state_report  # what opening the state directory repaired
        self.users = Users(catalogue, user_encoder, self.manifest.recent)  # histories, vectors → queries
        self._options = options

    @property
    def skipped_history_ids(self) -> int:  # unknown ids dropped from histories since load
        return self.users.skipped

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike[str], device: str = "auto", precision: str = "auto",
             threads: int | None = None, state_dir: str | os.PathLike[str] | None = None,
             verify: bool = True) -> Recommender:
        """Open the bundle at `bundle_dir` (every checksum verified unless `verify=False`).

        device: "cpu", "cuda" (raises when ONNX Runtime has no working CUDA provider — never a
        silent CPU fallback) or "auto" (CUDA when available). precision: "auto" (int8 on CPU,
        fp16 on CUDA, unless the bundle lacks it or it failed its export gate), "fp32", "int8" or
        "fp16". `state_dir` holds the changes made through this object (created if missing;
        replayed when it exists)."""
        options: dict[str, Any] = {"device": device, "precision": precision, "threads": threads, "verify": verify}
        bundle, encoder, user, chosen = open_models(bundle_dir, **options)
        return cls(Catalogue.open(bundle, encoder, state_dir, threads), user, chosen, options)

    def reopen(self, bundle_dir: str | os.PathLike[str]) -> Recommender:
        """The bundle at `bundle_dir`, with the changes made through this Recommender carried over
        (and its state directory taken over); this one stops accepting changes. When the new
        bundle fails to load, this one is left as it was and the error is raised."""
        bundle, encoder, user, chosen = open_models(bundle_dir, **self._options)
        catalogue = self.catalogue.reopen(bundle, encoder, self._options["threads"])
        return Recommender(catalogue, user, chosen, self._options)

    # -- the catalogue --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.catalogue)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.catalogue

    def item_ids(self) -> list[str]:  # index order; `score_all` columns follow it
        return self.catalogue.ids()

    def get_item(self, item_id: str) -> Item:
        return self.catalogue.get(item_id)

    def get_items(self, ids: Sequence[str], missing_ok: bool = False) -> list[Item]:
        """The items of `ids` in that order, read together; UnknownItemError for an unknown id, or
        with `missing_ok` it is left out (a shard of a sharded catalogue holds only some)."""
        ids = id_list(ids, "ids")
        with self.catalogue.read():
            if not missing_ok and (unknown := [i for i in ids if i not in self.catalogue]):
                raise UnknownItemError.of("ids", unknown)
            return [self.catalogue.get(i) for i in ids if i in self.catalogue]

    def title(self, item_id: str) -> str:
        return self.catalogue.title(item_id)

    @property
    def pending_changes(self) -> int:
        return self.catalogue.pending_changes

    def add_items(self, ids: Sequence[str], texts: Sequence[str | None] | None = None, vectors: Any = None,
                  metadata: Sequence[Mapping[str, Any]] | None = None, batch_size: int = 64) -> None:
        """Insert or replace items (see `Catalogue.upsert`)."""
        self.catalogue.upsert(ids, texts, vectors, metadata, batch_size)

    def delete_items(self, ids: Sequence[str], missing_ok: bool = False) -> list[str]:
        """Remove items; returns the ids that were missing (see `Catalogue.delete`)."""
        return self.catalogue.delete(ids, missing_ok)

    def snapshot(self) -> Path | None:
        return self.catalogue.snapshot()

    def save(self, bundle_dir: str | Path, overwrite: bool = False) -> Path:
        return self.catalogue.save(bundle_dir, overwrite)

    def close(self) -> None:  # no more changes; the state directory is released; reads go on
        self.catalogue.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Recommender({str(self.bundle.path)!r}, items={len(self)}, {self.device}/{self.precision})"

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 (n, dim), L2-normalised, in the order given; over-long texts are truncated."""
        if isinstance(texts, (str, bytes)):
            raise ValueError("texts: expected a list of strings, got a single string")
        if not len(texts):
            raise ValueError("texts: empty list (give at least one text)")
        return self.catalogue.encoder.embed(list(texts), batch_size=batch_size)

    @property
    def truncated_texts(self) -> int:
        return int(self.catalogue.encoder.truncated)

    # -- queries --------------------------------------------------------------------------------
    def recommend(self, history: Sequence[str] | None = None, k: int = 10, exclude: Iterable[str] | None = None,
                  filter: Filter | None = None, explain: bool = False, user_vector: Any = None,
                  positive: Sequence[Any] | None = None, negative: Sequence[Any] | None = None,
                  strict: bool = False, mode: str = "auto") -> Recommendations:
        """Up to `k` items, best first, as `Recommendation(item_id, score)`; `.unknown_ids` lists
        the history ids skipped (counted in `skipped_history_ids`; `strict` raises instead).

        The user is exactly one of `history` (ids, oldest first; no known id: the most popular
        items), `user_vector` (ranked as the history it came from: give `embed_user`'s vector as
        it is, its length weighs the new-item bonus; one of length 1 or less gets none; a bundle
        whose user model ranks with a text term (`UserModelInfo.text_weight`) needs the history
        for it, so a user vector ranks without it), or
        `positive` (and `negative`) ids or vectors (Qdrant's average_vector). History and example
        items are never returned, nor `exclude`. `filter`: {"brand": "Acme"},
        {"brand": ["Acme", "Zephyr"]} or a callable(item_id, metadata).
        `explain` adds the history items behind each result; `mode`: "auto", "exact" or "ann"."""
        one_user(history, user_vector, positive, negative)
        k = check_k(k, mode=mode)
        skip = set(id_list(exclude, "exclude")) if exclude is not None else set()
        predicate(filter, self.catalogue.metadata)  # a malformed filter fails before any work
        basis: list[str] = []
        unknown: list[str] = []
        text = None
        with self.catalogue.read():
            if history is not None:
                basis, unknown = self.users.known(history, strict)
                skip.update(basis)
                if not basis:
                    return self._results(self.catalogue.popular(k, skip, filter), [], explain, unknown)
                query = self.users.vectors([basis])[0]
                text = self.users.text_queries([basis])
            elif user_vector is not None:
                query = _one_vector(user_vector, self.dim, "user_vector")
            else:
                if isinstance(positive, (str, bytes)) or not len(positive):  # type: ignore[arg-type]
                    raise ValueError("positive: expected a non-empty list of item ids or vectors")
                pos = self.users.example(positive, "positive")  # type: ignore[arg-type]
                query = pos if not negative else 2 * pos - self.users.example(negative, "negative")
                skip.update(e for e in [*positive, *(negative or ())] if isinstance(e, str))  # type: ignore[misc]
                basis = [e for e in positive if isinstance(e, str)]  # type: ignore[union-attr]
            if not np.any(query):
                raise ValueError("recommend: the examples cancel out (the query vector is zero)")
            users = positive is None  # the new-item bonus applies to user-model queries
            hits = self.catalogue.search(query, k, filter=filter, exclude=[skip], mode=mode, users=users, text=text)[0]
            return self._results(hits, basis, explain, unknown)

    def embed_user(self, history: Sequence[str] | None = None, vectors: Any = None,
                   strict: bool = False) -> np.ndarray:
        """The user vector `recommend(history)` ranks with, float32 (dim,): the bundle's user model
        over the history's item vectors, else their mean (the last `manifest.recent`). Not unit
        length: on a trained bundle the length is the model's learned temperature.

        Give the history as item ids, or as `vectors` ((n, dim), oldest first) where the items live
        elsewhere, e.g. on the other shards of a sharded catalogue (`get_item(id).vector` there):
        `recommend(user_vector=…, exclude=history)` on every shard then ranks as `recommend(history)`
        over the whole catalogue (docs/scaling.md), except for a bundle's text term, which needs
        the history itself (UserModelInfo.text_weight). Unknown ids are skipped (counted in
        `skipped_history_ids`) unless `strict`; UnknownItemError when none is known."""
        if (history is None) == (vectors is None):
            raise ValueError("embed_user: give exactly one of history or vectors")
        with self.catalogue.read():
            if history is not None:
                known, unknown = self.users.known(history, strict)
                if not unknown and not known:
                    raise ValueError("history: empty (give at least one item id)")
                if not known:
                    raise UnknownItemError(f"history: none of its {len(unknown)} ids is in the catalogue")
                return self.users.vectors([known])[0]
        rows = normalise(vectors, self.dim, "vectors")
        if not len(rows):
            raise ValueError("vectors: empty (give at least one item vector)")
        return self.users.from_item_vectors([rows])[0]

    def similar_items(self, item_id: str, k: int = 10, filter: Filter | None = None,
                      mode: str = "auto") -> list[Recommendation]:
        """Up to `k` items most similar to `item_id` (itself excluded); UnknownItemError if unknown."""
        k = check_k(k, mode=mode)
        with self.catalogue.read():
            if not isinstance(item_id, str) or item_id not in self.catalogue:
                raise UnknownItemError(f"item_id: unknown item id {item_id!r}")
            query = self.catalogue.vectors([item_id])
            hits = self.catalogue.search(query, k, filter=filter, exclude=[{item_id}], mode=mode)[0]
        return [Recommendation(i, s) for i, s in hits]

    def search(self, query: str | Any, k: int = 10, filter: Filter | None = None,
               mode: str = "auto") -> list[Recommendation]:
        """Up to `k` items closest to a free-text query (or to a query vector already embedded).
        On a trained bundle of up to `place_limit` trained items the query borrows residuals as a
        new item with that text would: item vectors hold what training learnt, and a bare text
        vector finds items by their own titles far less often among them. Borrowing is a pass over
        the trained items, so larger tables keep the bare query (bench/RESULTS.md, "Text search on
        a trained bundle")."""
        k = check_k(k, mode=mode)
        vector = self.embed_texts([query]) if isinstance(query, str) else normalise(query, self.dim, "query")
        table = self.catalogue.residuals
        if table is not None and len(table.ids) <= self.place_limit:
            vector = table.place(vector)
        return [Recommendation(i, s) for i, s in self.catalogue.search(vector, k, filter=filter, mode=mode)[0]]

    def score_all(self, histories: Sequence[Sequence[str]], strict: bool = False) -> np.ndarray:
        """Exact float32 scores (len(histories), len(self)) in `item_ids()` order: what `recommend`
        ranks, before exclusions — the user model's own scores, user vector · item vector plus the
        new-item bonus (and the text term, UserModelInfo.text_weight), which `recommend` returns
        divided by the user vector's length (cosines). An empty history scores by popularity
        (scaled to [0, 1])."""
        rows_in = check_histories(histories)
        with self.catalogue.read():
            ids, matrix = self.catalogue.matrix()
            known = self.users.known_all(rows_in, strict)
            out = np.empty((len(known), len(ids)), dtype=np.float32)
            rows = [n for n, h in enumerate(known) if h]
            if rows:
                hist = [known[n] for n in rows]
                users = self.users.vectors(hist)
                out[rows] = users @ matrix.T + self.catalogue.bonus_of(ids)
                text = self.users.text_queries(hist)
                if text is not None:
                    norms = np.linalg.norm(users, axis=1, keepdims=True)
                    if text.every is not None:
                        out[rows] += (norms * text.every) @ self.catalogue.text_matrix().T
                    if text.new is not None:
                        out[rows] += norms * self.catalogue.new_text_scores(ids, text.new)
            empty = [n for n, h in enumerate(known) if not h]
            if empty:
                if not self.catalogue.has_popularity:
                    raise ValueError(f"histories[{empty[0]}]: no known items, and the bundle has no popularity counts")
                out[empty] = self.catalogue.popularity(ids)
            return out

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int = 10, strict: bool = False,
                        mode: str = "auto") -> list[list[Recommendation]]:
        """`recommend(history, k=k)` for many histories: one user-model run and one index search."""
        rows_in = check_histories(histories)
        k = check_k(k, mode=mode)
        with self.catalogue.read():
            known = self.users.known_all(rows_in, strict)
            out: list[list[Recommendation]] = [[] for _ in known]
            rows = [n for n, h in enumerate(known) if h]
            if rows:
                hist = [known[n] for n in rows]
                hits = self.catalogue.search(self.users.vectors(hist), k, exclude=[set(h) for h in hist], mode=mode,
                                             users=True, text=self.users.text_queries(hist))
                for n, found in zip(rows, hits, strict=True):
                    out[n] = [Recommendation(i, s) for i, s in found]
            for n in (n for n, h in enumerate(known) if not h):
                out[n] = [Recommendation(i, s) for i, s in self.catalogue.popular(k, set())]
            return out

    def user_segments(self, histories: Sequence[Sequence[str]], n: int, top: int = 5, seed: int = 0,
                      iterations: int = 50) -> list[UserSegment]:
        """Cluster users (spherical k-means on their user vectors) into `n` groups, largest first,
        each described by the `top` items of its members' histories closest to its centre."""
        rows_in = check_histories(histories)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(rows_in):
            raise ValueError(f"n must be an integer from 1 to {len(rows_in)} (the number of histories), got {n!r}")
        with self.catalogue.read():
            known = self.users.known_all(rows_in, False)
            for i, h in enumerate(known):
                if not h:
                    raise ValueError(f"histories[{i}]: no known items (a user needs at least one to be placed)")
            users = normalise(self.users.vectors(known), self.dim, "user vectors")
            return segments(users, known, self.catalogue.vectors, n, top, seed, iterations)

    def _results(self, hits: list[tuple[str, float]], basis: list[str], explain: bool,
                 unknown: list[str]) -> Recommendations:
        if not explain:
            return Recommendations([Recommendation(i, s) for i, s in hits], tuple(unknown))
        used = list(dict.fromkeys(basis[-self.users.span:]))
        return Recommendations(explain_hits(hits, used, self.catalogue.vectors), tuple(unknown))


def _one_vector(value: Any, dim: int, name: str) -> np.ndarray:
    """A (dim,) float32 copy of one finite, non-zero vector, its length kept."""
    if len(normalise(value, dim, name)) != 1:
        raise ValueError(f"{name}: expected one vector of shape ({dim},), got {np.shape(value)}")
    return np.array(value, dtype=np.float32).reshape(dim)


__all__ = ["Recommender"]
