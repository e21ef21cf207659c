"""Nearest-neighbour index over item vectors: hnswlib with string ids, exact search when small.

Scores are cosine similarities: vectors are L2-normalised on the way in and hnswlib's inner
product space is used. Every item owns a *slot*, which is also its hnswlib label. A deleted item's
slot is marked deleted in hnswlib and reused by the next new item (hnswlib updates a deleted label
in place when it is added again), so churn does not grow the index. The dense `(slots, dim)`
matrix kept next to the graph serves exact search, `vectors()` and scoring the whole catalogue.

Below `exact_threshold` live items (or when k is large relative to the catalogue) search is exact
numpy: as fast as the graph at that size, and never misses a neighbour.

An index made `with_text` also keeps each item's text vector (the encoder's output, before
training's residual) in its slot, for bundles that rank users by the user model plus the text
similarity to their last items (lmrec.UserModelInfo.text_weight): search then takes a second query
per row for those text vectors, and the graph proposes candidates that are re-ranked by the sum.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import hnswlib
import numpy as np

from ._checks import SEARCH_MODES
from ._durable import atomic_dir, sha256_file
from ._errors import BundleError, UnknownItemError
from ._rwlock import RWLock

FORMAT = 1
GRAPH_FILE = "hnsw.bin"
PARAMS_FILE = "index.json"
TEXT_FILE = "text.npy"
# With a text query the graph proposes this many times the results asked for (at least
# _TEXT_MIN_FETCH), re-ranked exactly by the full score: the text term is a fraction of the user
# model's score, so the sum's top items stand high in the user vector's own ranking.
_TEXT_FETCH = 4
_TEXT_MIN_FETCH = 100
# `search`'s boost: (value per query row, slot mask, a text row per query or None)
Boost = tuple[Any, np.ndarray, Any]
_Boosted = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]  # a boost checked against the queries

# Chosen on real item vectors (zero-shot all-MiniLM-L6-v2 on Amazon Office and MovieLens) so that
# recall@10 against exact search is >= 0.99 for item and user (mean-vector) queries alike; ef 64
# fell to 0.985 on MovieLens users. Exact numpy search costs ~0.05 ms per 1k items per query, so
# above ~5k items the graph (~0.2-0.6 ms up to 100k) is faster. See bench/RESULTS.md.
DEFAULT_PARAMS: dict[str, Any] = {"space": "ip", "M": 16, "ef_construction": 200, "ef": 128}
DEFAULT_EXACT_THRESHOLD = 5_000


def _check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(params) - set(DEFAULT_PARAMS) - {"exact_threshold", "seed"}
    if unknown:
        raise ValueError(f"index params: unknown key(s) {sorted(unknown)}; known: "
                         f"{sorted(DEFAULT_PARAMS) + ['exact_threshold', 'seed']}")
    out = {**DEFAULT_PARAMS, "exact_threshold": DEFAULT_EXACT_THRESHOLD, "seed": 100, **params}
    if out["space"] != "ip":
        raise ValueError(f"index params: space {out['space']!r} is not supported (only 'ip' on normalised vectors)")
    for key, low, high in (("M", 2, 256), ("ef_construction", 1, 100_000), ("ef", 1, 100_000)):
        if not isinstance(out[key], int) or not low <= out[key] <= high:
            raise ValueError(f"index params: {key} must be an integer in [{low}, {high}], got {out[key]!r}")
    if not isinstance(out["exact_threshold"], int) or out["exact_threshold"] < 0:
        raise ValueError(f"index params: exact_threshold must be an integer >= 0, got {out['exact_threshold']!r}")
    return out


def normalise(vectors: Any, dim: int, name: str = "vectors") -> np.ndarray:
    """Validate a (n, dim) or (dim,) array of finite, non-zero rows and L2-normalise it (float32 copy)."""
    arr = np.array(vectors, dtype=np.float32, ndmin=2, copy=True)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name}: expected shape (n, {dim}), got {np.shape(vectors)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name}: row {int(np.flatnonzero(norms[:, 0] == 0)[0])} is all zeros")
    arr /= norms
    return arr


def _check_ids(ids: Sequence[str], name: str = "ids") -> list[str]:
    if isinstance(ids, (str, bytes)):
        raise ValueError(f"{name}: expected a sequence of item ids, got a single string")
    ids = list(ids)
    for item in ids:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{name}: item ids must be non-empty strings, got {item!r}")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"{name}: item id {dup!r} appears more than once")
    return ids


class VectorIndex:
    """Cosine nearest neighbours over string item ids: upsert, delete, search, save, load.

    Thread-safe: searches run concurrently; `add` and `delete` wait for them and each other.
    """

    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULT_PARAMS  # what a bundle's index is built with

    def __init__(self, dim: int, params: Mapping[str, Any] | None = None, capacity: int = 1024,
                 threads: int | None = None, lock: RWLock | None = None, with_text: bool = False) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        p = _check_params(params or {})
        self.dim = dim
        self.M, self.ef_construction, self.ef = p["M"], p["ef_construction"], p["ef"]
        self.exact_threshold, self.seed = p["exact_threshold"], p["seed"]
        self.threads = threads or (os.cpu_count() or 1)
        self._lock = lock or RWLock()  # an owner's lock (the catalogue's): its reads are then re-entrant
        capacity = max(int(capacity), 16)
        self._graph = hnswlib.Index(space="ip", dim=dim)
        self._graph.init_index(max_elements=capacity, M=self.M, ef_construction=self.ef_construction,
                               random_seed=self.seed)
        self._graph.set_ef(self.ef)
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._text = np.zeros((capacity, dim), dtype=np.float32) if with_text else None
        self._live = np.zeros(capacity, dtype=bool)
        self._slot_ids: list[str | None] = []  # slot -> id (None: deleted, free for reuse)
        self._slots: dict[str, int] = {}  # id -> slot
        self._free: list[int] = []

    # -- introspection ------------------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        """What goes in a bundle manifest: space, M, ef_construction, ef."""
        return {"space": "ip", "M": self.M, "ef_construction": self.ef_construction, "ef": self.ef}

    @property
    def has_text(self) -> bool:
        """Whether each item's text vector is kept beside its vector (`with_text`)."""
        return self._text is not None

    @property
    def slots(self) -> int:
        """Items the graph holds, deleted ones included: their slots are reused, so churn does not grow it."""
        return len(self._slot_ids)

    @property
    def graph_ef(self) -> int:
        """The search breadth hnswlib itself runs with (its load resets it; ours sets it back)."""
        return int(self._graph.ef)

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._slots

    def ids(self) -> list[str]:
        """Live item ids in slot order (insertion order until deleted slots are reused)."""
        with self._lock.read():
            return [i for i in self._slot_ids if i is not None]

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored (normalised) vectors of `ids`, (n, dim); unknown ids raise UnknownItemError."""
        with self._lock.read():
            return self._vectors[self._slots_of(ids)]

    def text_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """The stored text vectors of `ids`, (n, dim) (an index `with_text` only)."""
        if self._text is None:
            raise ValueError("this index keeps no text vectors (made without with_text)")
        with self._lock.read():
            return self._text[self._slots_of(ids)]

    def matrix(self, text: bool = False) -> tuple[list[str], np.ndarray]:
        """(live ids, their vectors, or with `text` their text vectors) in slot order: a read-only
        view when no slot is free, else a copy. A view sees later upserts: the caller keeps
        writers out while using it."""
        source = self._vectors
        if text:
            if self._text is None:
                raise ValueError("this index keeps no text vectors (made without with_text)")
            source = self._text
        with self._lock.read():
            n = len(self._slot_ids)
            if not self._free:
                view = source[:n].view()
                view.flags.writeable = False
                return list(self._slot_ids), view  # type: ignore[arg-type]
            return [i for i in self._slot_ids if i is not None], source[:n][self._live[:n]]

    def set_ef(self, ef: int) -> None:
        """Search breadth of the graph (recall vs speed); saved with the index."""
        if not isinstance(ef, int) or ef < 1:
            raise ValueError(f"ef must be a positive integer, got {ef!r}")
        with self._lock.write():
            self.ef = ef
            self._graph.set_ef(ef)

    def _slots_of(self, ids: Sequence[str], name: str = "ids") -> np.ndarray:
        try:
            return np.fromiter((self._slots[i] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as e:
            raise UnknownItemError(f"{name}: unknown item id {e.args[0]!r}") from None

    # -- writes -------------------------------------------------------------------------------
    def add(self, ids: Sequence[str], vectors: Any, text: Any = None) -> None:
        """Insert or replace (upsert) `ids` with `vectors` (n, dim); vectors are L2-normalised.
        An index `with_text` also takes each item's `text` vector (n, dim), and no other does."""
        ids = _check_ids(ids)
        vecs = normalise(vectors, self.dim)
        if len(vecs) != len(ids):
            raise ValueError(f"vectors: {len(vecs)} rows for {len(ids)} ids")
        if (text is None) != (self._text is None):
            raise ValueError("text: an index with_text takes each item's text vector, and no other index does")
        texts = None if text is None else normalise(text, self.dim, "text")
        if texts is not None and len(texts) != len(ids):
            raise ValueError(f"text: {len(texts)} rows for {len(ids)} ids")
        if not ids:
            return
        with self._lock.write():
            slots = np.empty(len(ids), dtype=np.int64)
            fresh = 0
            for n, item in enumerate(ids):
                slot = self._slots.get(item)
                if slot is None:
                    if self._free:
                        slot = self._free.pop()
                    else:
                        slot = len(self._slot_ids) + fresh
                        fresh += 1
                slots[n] = slot
            self._reserve(len(self._slot_ids) + fresh)
            self._graph.add_items(vecs, slots, num_threads=self.threads)
            self._vectors[slots] = vecs
            if texts is not None:
                self._text[slots] = texts  # type: ignore[index]
            self._live[slots] = True
            self._slot_ids.extend([None] * fresh)
            for item, slot in zip(ids, slots.tolist(), strict=True):
                self._slot_ids[slot] = item
                self._slots[item] = slot

    def _reserve(self, needed: int) -> None:
        capacity = self._graph.get_max_elements()
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity)
        self._graph.resize_index(capacity)
        self._vectors = _grown(self._vectors, capacity, len(self._slot_ids))
        if self._text is not None:
            self._text = _grown(self._text, capacity, len(self._slot_ids))
        self._live = np.concatenate([self._live, np.zeros(capacity - len(self._live), dtype=bool)])

    def delete(self, ids: Sequence[str]) -> None:
        """Remove `ids`; an unknown id raises UnknownItemError and nothing is deleted."""
        ids = _check_ids(ids)
        with self._lock.write():
            slots = self._slots_of(ids).tolist()
            for item, slot in zip(ids, slots, strict=True):
                self._graph.mark_deleted(slot)
                self._vectors[slot] = 0.0
                if self._text is not None:
                    self._text[slot] = 0.0
                self._live[slot] = False
                self._slot_ids[slot] = None
                del self._slots[item]
                self._free.append(slot)

    # -- search -------------------------------------------------------------------------------
    def slot_mask(self, keep: Callable[[str], bool]) -> np.ndarray:
        """(slots,) bool: the live slots whose id `keep` accepts (a `boost` mask for `search`)."""
        with self._lock.read():
            return np.fromiter((i is not None and keep(i) for i in self._slot_ids), dtype=bool,
                               count=len(self._slot_ids))

    def search(self, queries: Any, k: int, filter: Callable[[str], bool] | None = None,
               exclude: Sequence[Collection[str]] | None = None, mode: str = "auto",
               boost: Boost | None = None, text: Any = None) -> list[list[tuple[str, float]]]:
        """Top-`k` (id, cosine) per query row, best first.

        `filter(id)` keeps an item when true; `exclude[i]` are ids never returned for query i.
        A query gets fewer than k results only when fewer items pass. `mode` forces "exact" or
        "ann"; "auto" is exact below `exact_threshold` items or when k is large for the size.
        `boost` (values, slot mask from `slot_mask`, text or None) adds each query's value (one per
        query row) to those slots' scores, and the boost's text row · each of their text vectors
        (an index `with_text`); the graph path then also scores the boosted slots exactly and
        merges (they are the few new items). `text` (one row per query, not normalised: its
        length weighs it) adds its inner product with each item's text vector (an index
        `with_text`); the graph path then re-ranks `_TEXT_FETCH` times k of the graph's hits by
        the full score.
        """
        q = normalise(queries, self.dim, "queries")
        tq = self._text_queries(text, len(q))
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        if exclude is not None and len(exclude) != len(q):
            raise ValueError(f"exclude: {len(exclude)} entries for {len(q)} queries")
        with self._lock.read():
            live = len(self._slots)
            if live == 0:
                return [[] for _ in range(len(q))]
            widest = k + max((len(e) for e in exclude), default=0) if exclude else k
            exact = mode == "exact" or (mode == "auto" and (live < self.exact_threshold or widest * 10 > live))
            boosted = None
            if boost is not None and boost[1][:len(self._slot_ids)].any():
                values = np.broadcast_to(np.asarray(boost[0], dtype=np.float32), (len(q),))
                btext = self._text_queries(boost[2], len(q))
                if np.any(values) or btext is not None:
                    boosted = (values, boost[1][:len(self._slot_ids)], btext)
            if not exact:
                wanted = k if tq is None else min(max(k * _TEXT_FETCH, k + _TEXT_MIN_FETCH), live)
                found = self._search_graph(q, wanted, min(widest + wanted - k, live), filter, exclude)
                if found is not None:
                    if boosted is None and tq is None:
                        return found
                    return self._rerank(q, k, found, boosted, tq, filter, exclude)
            return self._search_exact(q, k, filter, exclude, boosted, tq)

    def _text_queries(self, text: Any, rows: int) -> np.ndarray | None:
        """`search`'s text queries as float32 (rows, dim), or None when there are none (or all zero)."""
        if text is None:
            return None
        if self._text is None:
            raise ValueError("text: this index keeps no text vectors (made without with_text)")
        tq = np.array(text, dtype=np.float32, ndmin=2)
        if tq.shape != (rows, self.dim):
            raise ValueError(f"text: expected shape ({rows}, {self.dim}), one row per query, got {np.shape(text)}")
        if not np.isfinite(tq).all():
            raise ValueError("text: contains NaN or infinite values")
        return tq if tq.any() else None

    def _search_graph(self, q: np.ndarray, k: int, fetch: int, filter: Callable[[str], bool] | None,
                      exclude: Sequence[Collection[str]] | None) -> list[list[tuple[str, float]]] | None:
        slot_ids = self._slot_ids
        # a deleted slot (None) is never a label hnswlib returns or offers to the filter
        label_filter = None if filter is None else (lambda label: filter(slot_ids[label] or ""))
        threads = 1 if filter is not None or len(q) == 1 else self.threads
        try:
            labels, dist = self._graph.knn_query(q, k=fetch, num_threads=threads, filter=label_filter)
        except RuntimeError:  # fewer than `fetch` reachable items passed the filter
            return None
        out = []
        for row, (lab, d) in enumerate(zip(labels.tolist(), dist.tolist(), strict=True)):
            skip = exclude[row] if exclude else ()
            hits = [(slot_ids[s], 1.0 - x) for s, x in zip(lab, d, strict=True) if slot_ids[s] not in skip][:k]
            if len(hits) < k and fetch < len(self._slots):
                return None  # the graph did not find enough; exact search will
            out.append(hits)
        return out

    def _rerank(self, q: np.ndarray, k: int, found: list[list[tuple[str, float]]],
                boosted: _Boosted | None, text: np.ndarray | None, filter: Callable[[str], bool] | None,
                exclude: Sequence[Collection[str]] | None) -> list[list[tuple[str, float]]]:
        """The graph's unboosted hits by the full score (`text` terms added), merged with the
        boosted slots' exact top k: a boosted item outside that top k ranks below k of them. Without
        `text`, any item outside both ranks below k of them, so the merge is the boosted ranking;
        with it, an item the graph did not propose could still belong (the graph was asked for
        `_TEXT_FETCH` times more hits for that)."""
        extra: list[dict[str, float]] = [{} for _ in q]
        if boosted is not None:
            mask = boosted[1]
            slots = np.flatnonzero(mask & self._live[:len(mask)])
            if filter is not None:
                slots = slots[[bool(filter(self._slot_ids[s] or "")) for s in slots.tolist()]]
            extra = self._search_exact_slots(q, k, slots, exclude, boosted, text)
            found = [[(i, s) for i, s in hits if not mask[self._slots[i]]] for hits in found]
        out = []
        for row, hits in enumerate(found):
            merged = dict(hits)
            if text is not None and hits:
                ids = [i for i, _ in hits]
                slots = self._slots_of(ids)
                score = self._vectors[slots] @ q[row] + self._text[slots] @ text[row]  # type: ignore[index]
                merged = dict(zip(ids, score.tolist(), strict=True))
            merged.update(extra[row])
            out.append(sorted(merged.items(), key=lambda x: (-x[1], self._slots[x[0]]))[:k])
        return out

    def _search_exact_slots(self, q: np.ndarray, k: int, slots: np.ndarray,
                            exclude: Sequence[Collection[str]] | None, boosted: _Boosted,
                            text: np.ndarray | None = None) -> list[dict[str, float]]:
        """Each query's top k of the boosted `slots` by the full score."""
        if not len(slots):
            return [{} for _ in q]
        value, _, btext = boosted
        scores = _scores(q, self._vectors[slots]) + value[:, None]
        text = btext if text is None else text if btext is None else text + btext
        if text is not None:
            scores += _scores(text, self._text[slots])  # type: ignore[index]
        out = []
        for row, s in enumerate(scores):
            order = np.argsort(-s, kind="stable")
            skip = exclude[row] if exclude else ()
            hits: dict[str, float] = {}
            for j in order.tolist():
                item = self._slot_ids[int(slots[j])]
                if item is not None and item not in skip:
                    hits[item] = float(s[j])
                    if len(hits) == k:
                        break
            out.append(hits)
        return out

    def _search_exact(self, q: np.ndarray, k: int, filter: Callable[[str], bool] | None,
                      exclude: Sequence[Collection[str]] | None,
                      boosted: _Boosted | None = None,
                      text: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
        n = len(self._slot_ids)
        allowed = self._live[:n].copy()
        if filter is not None:
            allowed &= np.fromiter((i is not None and bool(filter(i)) for i in self._slot_ids), dtype=bool, count=n)
        blocked = None if allowed.all() else ~allowed
        out = []
        for start in range(0, len(q), 256):
            scores = _scores(q[start:start + 256], self._vectors[:n])
            if text is not None:
                scores += _scores(text[start:start + 256], self._text[:n])  # type: ignore[index]
            if boosted is not None:
                value, mask, btext = boosted
                scores[:, mask[:n]] += value[start:start + 256, None]
                if btext is not None:
                    scores[:, mask[:n]] += _scores(btext[start:start + 256], self._text[:n][mask[:n]])  # type: ignore[index]
            if blocked is not None:
                scores[:, blocked] = -np.inf
            for row, s in enumerate(scores, start):
                if exclude:
                    gone = [self._slots[i] for i in exclude[row] if i in self._slots]
                    s[gone] = -np.inf
                top = min(k, n)
                idx = np.argpartition(-s, top - 1)[:top] if top < n else np.arange(n)
                idx = idx[np.lexsort((idx, -s[idx]))]  # ties: lower slot first
                out.append([(self._slot_ids[i], float(s[i])) for i in idx.tolist() if s[i] != -np.inf])
        return out

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the index to directory `path` atomically (temp dir, fsync, rename)."""
        with self._lock.read(), atomic_dir(path, overwrite=overwrite) as tmp:
            self._graph.save_index(str(tmp / GRAPH_FILE))
            files = [GRAPH_FILE]
            if self._text is not None:
                np.save(tmp / TEXT_FILE, self._text[:len(self._slot_ids)])
                files.append(TEXT_FILE)
            meta = {
                "format": FORMAT, "dim": self.dim, **self.params,
                "exact_threshold": self.exact_threshold, "seed": self.seed,
                "capacity": int(self._graph.get_max_elements()), "count": len(self._slots),
                "slots": self._slot_ids, "text": self._text is not None,
                "sha256": {name: sha256_file(tmp / name) for name in files},
            }
            (tmp / PARAMS_FILE).write_text(json.dumps(meta))

    @classmethod
    def load(cls, path: str | os.PathLike[str], verify: bool = True, threads: int | None = None,
             lock: RWLock | None = None) -> VectorIndex:
        """Read an index written by `save`; `verify` checks the graph file's sha256 first."""
        path = Path(path)
        try:
            meta = json.loads((path / PARAMS_FILE).read_text())
        except FileNotFoundError:
            raise BundleError(f"{path / PARAMS_FILE}: missing (not an lmrec index directory)") from None
        except json.JSONDecodeError as e:
            raise BundleError(f"{path / PARAMS_FILE}: not valid JSON ({e})") from None
        if meta.get("format") != FORMAT:
            raise BundleError(f"{path / PARAMS_FILE}: format {meta.get('format')!r}, this lmrec reads {FORMAT}")
        graph_file = path / GRAPH_FILE
        with_text = bool(meta.get("text"))
        for name in (GRAPH_FILE, TEXT_FILE) if with_text else (GRAPH_FILE,):
            if not (path / name).is_file():
                raise BundleError(f"{path / name}: missing")
            if verify and sha256_file(path / name) != meta["sha256"][name]:
                raise BundleError(f"{path / name}: sha256 mismatch (corrupted or modified)")
        slot_ids: list[str | None] = meta["slots"]
        live = [s for s, i in enumerate(slot_ids) if i is not None]
        if len(live) != meta["count"]:
            raise BundleError(f"{path / PARAMS_FILE}: count {meta['count']} but {len(live)} live slots")
        params = {k: meta[k] for k in ("space", "M", "ef_construction", "ef", "exact_threshold", "seed")}
        self = cls(meta["dim"], params, capacity=16, threads=threads, lock=lock, with_text=with_text)
        self._graph = hnswlib.Index(space="ip", dim=self.dim)
        try:
            self._graph.load_index(str(graph_file), max_elements=meta["capacity"])
        except RuntimeError as e:
            raise BundleError(f"{graph_file}: cannot load ({e})") from None
        if self._graph.element_count != len(slot_ids):
            raise BundleError(
                f"{graph_file}: {self._graph.element_count} elements, {PARAMS_FILE} lists {len(slot_ids)} slots"
            )
        self._graph.set_ef(self.ef)  # hnswlib resets ef to 10 on load
        self._vectors = np.zeros((meta["capacity"], self.dim), dtype=np.float32)
        if with_text:
            self._text = _grown(_read_text(path / TEXT_FILE, (len(slot_ids), self.dim)), meta["capacity"],
                                len(slot_ids))
        self._live = np.zeros(meta["capacity"], dtype=bool)
        self._slot_ids = slot_ids
        if live:
            self._load_vectors(graph_file, np.asarray(live))
            self._live[live] = True
        self._slots = {i: s for s, i in enumerate(slot_ids) if i is not None}
        if len(self._slots) != len(live):
            raise BundleError(f"{path / PARAMS_FILE}: duplicate item ids in slots")
        self._free = [s for s, i in enumerate(slot_ids) if i is None][::-1]
        return self

    def _load_vectors(self, graph_file: Path, live: np.ndarray) -> None:
        """Fill the dense matrix for the `live` slots. hnswlib's get_items builds Python floats
        (~12 s for 100k x 384), so read the index file directly and check a sample against it."""
        found = _read_graph_vectors(graph_file, self.dim)
        if found is not None:
            labels, vectors = found
            live_rows = np.flatnonzero(np.isin(labels, live))  # get_items refuses deleted labels
            sample = live_rows[np.linspace(0, len(live_rows) - 1, min(8, len(live_rows))).astype(int)]
            if (
                len(labels) == len(self._slot_ids)
                and len(live_rows) == len(live)
                and labels.max() < len(labels)
                and np.array_equal(vectors[sample], self._graph.get_items(labels[sample].tolist(), return_type="numpy"))
            ):
                self._vectors[labels] = vectors
                dead = np.ones(len(labels), dtype=bool)
                dead[live] = False
                self._vectors[: len(labels)][dead] = 0.0
                return
        self._vectors[live] = self._graph.get_items(live.tolist(), return_type="numpy")


def _grown(matrix: np.ndarray, capacity: int, used: int) -> np.ndarray:
    """A zero (capacity, dim) float32 matrix holding `matrix`'s first `used` rows."""
    out = np.zeros((capacity, matrix.shape[1]), dtype=np.float32)
    out[:used] = matrix[:used]
    return out


def _read_text(path: Path, shape: tuple[int, int]) -> np.ndarray:
    try:
        text = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError(f"{path}: not a text vector matrix ({e})") from None
    if text.shape != shape or text.dtype != np.float32:
        raise BundleError(f"{path}: {text.dtype} {text.shape}, expected float32 {shape} (one row per slot)")
    return text


# Up to this many query rows are scored one dot product per item rather than by BLAS (below).
_ROWWISE_QUERIES = 4


def _scores(queries: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(queries, items) inner products. For a few queries (recommend, similar items, search: one
    each) without BLAS: its matrix product splits one query over all its threads, which wake (and
    then spin) per call; under concurrent single queries, as in a server, those pools oversubscribe
    the cores (a server held 6x fewer Recommend calls/s than with one BLAS thread). Row by row
    costs about what one BLAS thread does and stays on the calling thread; batches of queries keep
    BLAS and whatever threads the process gave it."""
    if len(queries) > _ROWWISE_QUERIES:
        return queries @ matrix.T
    if _vecdot is None:  # numpy < 2
        return np.stack([np.einsum("ij,j->i", matrix, row) for row in queries])
    return np.stack([_vecdot(matrix, row) for row in queries])


_vecdot = getattr(np, "vecdot", None)


# hnswlib's saveIndex layout (hnswalg.h, unchanged since 0.5): this header, then one fixed-size
# record per element holding its level-0 links, its vector at offset_data and its label.
_GRAPH_HEADER = np.dtype([
    ("offset_level0", "<u8"), ("max_elements", "<u8"), ("count", "<u8"), ("size_per_element", "<u8"),
    ("label_offset", "<u8"), ("offset_data", "<u8"), ("max_level", "<i4"), ("enterpoint", "<u4"),
    ("max_m", "<u8"), ("max_m0", "<u8"), ("m", "<u8"), ("mult", "<f8"), ("ef_construction", "<u8")])


def _read_graph_vectors(graph_file: Path, dim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(labels, vectors) straight from an hnswlib index file, or None if it is not laid out as expected."""
    head = np.fromfile(graph_file, dtype=_GRAPH_HEADER, count=1)
    if len(head) != 1:
        return None
    count, size = int(head["count"][0]), int(head["size_per_element"][0])
    label_at, data_at = int(head["label_offset"][0]), int(head["offset_data"][0])
    if (data_at + 4 * dim > size or label_at + 8 > size
            or graph_file.stat().st_size < _GRAPH_HEADER.itemsize + count * size):
        return None
    records = np.memmap(graph_file, dtype=np.uint8, mode="r", offset=_GRAPH_HEADER.itemsize, shape=(count, size))
    vectors = np.ascontiguousarray(records[:, data_at:data_at + 4 * dim]).view("<f4").astype(np.float32, copy=False)
    labels = np.ascontiguousarray(records[:, label_at:label_at + 8]).view("<u8")[:, 0].astype(np.int64)
    return labels, vectors


def build_index(vectors: Any, ids: Sequence[str], params: Mapping[str, Any] | None = None,
                threads: int | None = None, lock: RWLock | None = None, text: Any = None) -> VectorIndex:
    """A new index holding `ids` → `vectors` in that slot order (what the exporter writes);
    with `text`, each item's text vector too (`with_text`)."""
    vecs = np.asarray(vectors)
    if vecs.ndim != 2:
        raise ValueError(f"vectors: expected shape (n, dim), got {vecs.shape}")
    index = VectorIndex(int(vecs.shape[1]), params, capacity=len(ids), threads=threads, lock=lock,
                        with_text=text is not None)
    index.add(ids, vecs, text)
    return index
