"""`Recommender`: the public SDK object — a bundle's encoder, its index, and the changes made since.

Load a bundle, embed texts, recommend from a history, a user vector or positive/negative examples,
find similar items, search by text, and upsert or delete items. With a `state_dir`, every change
is in an fsync'd log before the call returns, and `snapshot()` folds the log into an index
snapshot; the bundle itself is never written.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ._bundle import ITEMS, Bundle, BundleWriter, sha256_file
from ._errors import BundleError, LmrecError
from ._errors import UnknownItemError
from ._index import SEARCH_MODES, VectorIndex, build_index, normalise
from ._state import Delete, StateDir, Upsert, open_state

log = logging.getLogger("lmrec")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "int8", "fp16")
USER_ENCODER = "user_encoder.onnx"
# Without a user model, a user is the mean of their last `recent` item vectors (manifest
# "recommend": {"recent": n}). With zero-shot MiniLM vectors the last item alone was best of
# n in {1, 2, 3, 5, 10, 20, 50} on validation NDCG@10 of both Amazon Office and MovieLens
# (bench/RESULTS.md); a fine-tuned bundle records its own n.
DEFAULT_RECENT = 1
EXPLAIN_TOP = 3

Filter = Mapping[str, Any] | Callable[[str, Mapping[str, Any]], bool]


class Recommendation(NamedTuple):
    """One result: unpacks as `item_id, score` (cosine similarity, or popularity for an empty history)."""

    item_id: str
    score: float


class ExplainedRecommendation(NamedTuple):
    """A result of `recommend(..., explain=True)`: unpacks as `item_id, score, because`, where
    `because` are the history items that contributed most to the score (best first)."""

    item_id: str
    score: float
    because: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    item_id: str
    text: str | None
    metadata: dict[str, Any]
    vector: np.ndarray


@dataclass(frozen=True)
class UserSegment:
    """A group of users from `user_segments`: who is in it and the items that typify it."""

    members: list[int]  # positions in the `histories` given
    items: list[str]  # members' history items closest to the group centre, most central first
    centroid: np.ndarray


def _check_k(k: Any, limit: int) -> int:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= limit:
        raise ValueError(f"k must be an integer from 1 to {limit} (the catalogue size), got {k!r}")
    return k


def _id_list(ids: Any, name: str) -> list[str]:
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ValueError(f"{name}: expected a list of item ids, got {type(ids).__name__}")
    ids = list(ids)
    for i in ids:
        if not isinstance(i, str):
            raise ValueError(f"{name}: item ids must be strings, got {i!r}")
    return ids


def _matches(value: Any, wanted: Any) -> bool:
    """equals, or `in` when `wanted` is a list; a list-valued field matches when any element does."""
    values = value if isinstance(value, list) else [value]
    options = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
    return any(v == w for v in values for w in options)


_MISSING = object()


def _predicate(filter: Filter | None, items: Mapping[str, tuple[str | None, dict[str, Any]]]) -> Callable[[str], bool] | None:
    """Turn a metadata condition dict or a callable(item_id, metadata) into a predicate on ids."""
    if filter is None:
        return None
    if callable(filter):
        return lambda item: bool(filter(item, items[item][1]))
    if not isinstance(filter, Mapping) or not filter:
        raise ValueError("filter: expected a non-empty dict of metadata conditions "
                         "({'field': value} or {'field': [v1, v2]}) or a callable(item_id, metadata)")
    scalar = (str, int, float, bool, type(None))
    for key, wanted in filter.items():
        if not isinstance(key, str):
            raise ValueError(f"filter: field names must be strings, got {key!r}")
        options = wanted if isinstance(wanted, (list, tuple, set, frozenset)) else [wanted]
        if not options or not all(isinstance(w, scalar) for w in options):
            raise ValueError(f"filter[{key!r}]: expected a value or a non-empty list of values "
                             f"(str, int, float, bool, None), got {wanted!r}")
    conditions = list(filter.items())
    return lambda item: all(
        (value := items[item][1].get(key, _MISSING)) is not _MISSING and _matches(value, wanted)
        for key, wanted in conditions)


class Recommender:
    """Recommendations from an lmrec bundle. Thread-safe: any number of concurrent reads
    (`recommend`, `embed_texts`, `search`, …) and upserts/deletes that wait for nothing but
    each other and in-flight reads. Create with `Recommender.load`."""

    def __init__(self, bundle: Bundle, encoder: Any, index: VectorIndex, items: dict[str, tuple[str | None, dict[str, Any]]],
                 device: str, precision: str, user_model: Any, state: StateDir | None, report: list[str]) -> None:
        self.bundle = bundle
        self.manifest = bundle.manifest
        self.dim = bundle.dim
        self.device, self.precision = device, precision
        self.state_report = report
        self._encoder = encoder
        self._index = index
        self._lock = index.lock
        self._items = items
        self._user_model = user_model
        self._state = state
        self._popularity: dict[str, float] = (
            {} if bundle.popularity is None else dict(zip(bundle.item_ids, bundle.popularity.astype(float).tolist())))
        self._recent = int((self.manifest.get("recommend") or {}).get("recent", DEFAULT_RECENT))
        self._max_history = int((self.manifest.get("user_model") or {}).get("max_history", 50))
        self._counter_lock = threading.Lock()
        self._closed = False
        self.skipped_history_ids = 0  # unknown ids dropped from histories since load

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, bundle_dir: str | Path, device: str = "auto", precision: str = "auto",
             threads: int | None = None, state_dir: str | Path | None = None,
             verify: bool = True) -> "Recommender":
        """Open the bundle at `bundle_dir` (every checksum verified unless `verify=False`).

        device: "cpu", "cuda" (raises when ONNX Runtime has no working CUDA provider — never a
        silent CPU fallback) or "auto" (CUDA when available). precision: "int8" on CPU and "fp16"
        on CUDA by default, "fp32" for the exact exported graph. `state_dir` holds upserts and
        deletes made through this object (created if missing; replayed when it exists).
        """
        from ._encoder import TextEncoder

        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        import onnxruntime as ort

        cuda = device == "cuda" or (device == "auto" and "CUDAExecutionProvider" in ort.get_available_providers())
        runs = {precision} if precision != "auto" else {"int8", "fp32"} | ({"fp16"} if cuda else set())
        bundle = Bundle.open(bundle_dir, verify=_verify_names(Path(bundle_dir), runs) if verify else False)
        tokenizer = bundle.file("tokenizer.json")
        encoder = None
        if cuda:
            try:
                chosen = precision if precision != "auto" else cls._auto_precision(bundle, "cuda")
                encoder = TextEncoder(bundle.encoder_path(chosen), tokenizer, bundle.max_length, "cuda", threads)
                device, precision = "cuda", chosen
            except LmrecError as e:
                if device == "cuda":
                    raise
                log.warning("device 'auto': CUDA unusable (%s); using the CPU", e)
        if encoder is None:
            chosen = precision if precision != "auto" else cls._auto_precision(bundle, "cpu")
            encoder = TextEncoder(bundle.encoder_path(chosen), tokenizer, bundle.max_length, "cpu", threads)
            device, precision = "cpu", chosen
        if encoder.dim != bundle.dim:
            raise BundleError(f"bundle {bundle.path}: the {precision} encoder outputs dim {encoder.dim}, manifest dim is {bundle.dim}")
        user_model = cls._load_user_model(bundle, device, threads)

        index, items = cls._bundle_catalogue(bundle, threads)
        state, report = None, []
        if state_dir is not None:
            state, recovery = open_state(state_dir, sha256_file(bundle.path / "manifest.json"))
            try:
                report = recovery.report
                if recovery.snapshot is not None:
                    index = VectorIndex.load(recovery.snapshot / "index", threads=threads)
                    items = _read_items(recovery.snapshot / ITEMS)
                    if index.ids() != list(items):
                        raise BundleError(f"{recovery.snapshot}: index and {ITEMS} list different items")
                for change in recovery.changes:
                    _apply(index, items, change)
            except BaseException:
                state.close()
                raise
            for line in report:
                log.warning("state_dir %s: %s", state.path, line)
        return cls(bundle, encoder, index, items, device, precision, user_model, state, report)

    @staticmethod
    def _auto_precision(bundle: Bundle, device: str) -> str:
        preferred = "fp16" if device == "cuda" else "int8"
        from ._bundle import ENCODER_FILES

        return preferred if bundle.has(ENCODER_FILES[preferred]) else "fp32"

    @staticmethod
    def _load_user_model(bundle: Bundle, device: str, threads: int | None) -> Any:
        if not bundle.has(USER_ENCODER):
            return None
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(bundle.file(USER_ENCODER)), options, providers=providers)
        names = {i.name for i in session.get_inputs()}
        if names != {"history", "mask"}:
            raise BundleError(f"bundle {bundle.path}: {USER_ENCODER} inputs are {sorted(names)}, expected history and mask")
        return session

    @staticmethod
    def _bundle_catalogue(bundle: Bundle, threads: int | None) -> tuple[VectorIndex, dict[str, tuple[str | None, dict[str, Any]]]]:
        if bundle.has("index"):
            index = VectorIndex.load(bundle.file("index"), verify=False, threads=threads)  # the bundle verified it
            if index.dim != bundle.dim or index.ids() != bundle.item_ids:
                raise BundleError(f"bundle {bundle.path}: index/ does not hold the items of {ITEMS} (dim {index.dim})")
        else:
            params = {k: v for k, v in (bundle.manifest.get("index") or {}).items() if k in ("space", "M", "ef_construction", "ef")}
            index = build_index(np.asarray(bundle.item_vectors), bundle.item_ids, params, threads=threads)
        items = {i: (t, m) for i, t, m in zip(bundle.item_ids, bundle.item_texts, bundle.item_meta)}
        return index, items

    # -- catalogue ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def item_ids(self) -> list[str]:
        """Catalogue ids in index order: the bundle's order, then added items (a new item may
        take the place of a deleted one). `score_all` columns follow this order."""
        return self._index.ids()

    def get_item(self, item_id: str) -> Item:
        with self._lock.read():
            if item_id not in self._items:
                raise UnknownItemError(f"item_id: unknown item id {item_id!r}")
            text, meta = self._items[item_id]
            return Item(item_id, text, dict(meta), self._index.vectors([item_id])[0])

    def title(self, item_id: str) -> str:
        """A display name: metadata title, else the item text, else the id."""
        text, meta = self._items.get(item_id, (None, {}))
        return str(meta.get("title") or text or item_id)

    # -- embedding ------------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 (n, dim), L2-normalised, in the order given. Over-long texts are truncated to
        the bundle's max length (counted in `truncated_texts`)."""
        if isinstance(texts, (str, bytes)):
            raise ValueError("texts: expected a list of strings, got a single string")
        texts = list(texts)
        if not texts:
            raise ValueError("texts: empty list (give at least one text)")
        return self._encoder.embed(texts, batch_size=batch_size)

    @property
    def truncated_texts(self) -> int:
        return int(self._encoder.truncated)

    # -- changes --------------------------------------------------------------------------------
    def add_items(self, ids: Sequence[str], texts: Sequence[str] | None = None, vectors: Any = None,
                  metadata: Sequence[Mapping[str, Any]] | None = None, batch_size: int = 64) -> None:
        """Insert or replace items (upsert), embedding `texts` unless `vectors` are given.

        An item is replaced whole: text, metadata and vector. With a state_dir the change is
        fsync'd to its log before this returns.
        """
        ids = _id_list(ids, "ids")
        if not ids:
            raise ValueError("ids: empty list")
        if any(not i for i in ids) or len(set(ids)) != len(ids):
            raise ValueError("ids: item ids must be non-empty and unique within one call")
        if texts is not None:
            if isinstance(texts, (str, bytes)) or len(texts) != len(ids):
                raise ValueError(f"texts: expected a list of {len(ids)} strings (one per id)")
            texts = list(texts)
        if metadata is None:
            metas: list[dict[str, Any]] = [{} for _ in ids]
        else:
            if isinstance(metadata, Mapping) or len(metadata) != len(ids):
                raise ValueError(f"metadata: expected a list of {len(ids)} dicts (one per id)")
            metas = []
            for n, m in enumerate(metadata):
                if not isinstance(m, Mapping) or not all(isinstance(k, str) for k in m):
                    raise ValueError(f"metadata[{n}]: expected a dict with string keys, got {type(m).__name__}")
                try:
                    metas.append(json.loads(json.dumps(dict(m), allow_nan=False)))
                except (TypeError, ValueError) as e:
                    raise ValueError(f"metadata[{n}]: not JSON-serialisable ({e})") from None
        if vectors is None:
            if texts is None:
                raise ValueError("add_items needs texts (to embed) or vectors")
            vecs = self.embed_texts(texts, batch_size=batch_size)
        else:
            vecs = normalise(vectors, self.dim, "vectors")
            if len(vecs) != len(ids):
                raise ValueError(f"vectors: {len(vecs)} rows for {len(ids)} ids")
        change = Upsert(ids, vecs, list(texts) if texts is not None else [None] * len(ids), metas)
        with self._lock.write():
            self._check_open()
            if self._state is not None:
                self._state.append(change)
            _apply(self._index, self._items, change)

    def delete_items(self, ids: Sequence[str]) -> None:
        """Remove items; an unknown id raises UnknownItemError and nothing is removed."""
        ids = _id_list(ids, "ids")
        if not ids:
            raise ValueError("ids: empty list")
        ids = list(dict.fromkeys(ids))
        with self._lock.write():
            self._check_open()
            unknown = [i for i in ids if i not in self._index]
            if unknown:
                raise UnknownItemError(f"ids: unknown item id {unknown[0]!r}" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
            if self._state is not None:
                self._state.append(Delete(ids))
            _apply(self._index, self._items, Delete(ids))

    def _check_open(self) -> None:
        if self._closed:
            raise LmrecError("this Recommender is closed: it no longer accepts changes (load it again)")

    @property
    def pending_changes(self) -> int:
        """Changes logged in the state_dir since its last snapshot (0 without a state_dir)."""
        return 0 if self._state is None else self._state.last_seq - self._state.snapshot_seq

    def snapshot(self) -> Path | None:
        """Write the current catalogue and index to the state_dir and compact its log.
        Returns the snapshot directory, or None when nothing changed since the last one."""
        with self._lock.read():  # readers go on; writers (which append to the log) wait
            if self._state is None:
                raise LmrecError("snapshot() needs a state_dir: Recommender.load(bundle, state_dir=...)"
                                 + (" (this one is closed)" if self._closed else ""))
            return self._state.snapshot(self._write_catalogue)

    def _write_catalogue(self, directory: Path) -> None:
        self._index.save(directory / "index")
        _write_items(directory / ITEMS, self._index.ids(), self._items)

    def save(self, bundle_dir: str | Path, overwrite: bool = False) -> Path:
        """Write a new bundle: this bundle's encoders with the current catalogue and index."""
        from ._bundle import MANIFEST, POPULARITY, VECTORS

        replaced = {MANIFEST, ITEMS, VECTORS, POPULARITY}
        with self._lock.read(), BundleWriter(bundle_dir, overwrite=overwrite) as writer:
            for name in self.manifest["files"]:
                if name not in replaced and not name.startswith("index/"):
                    writer.add_file(name, self.bundle.path / name)
            ids, vectors = self._index.matrix()
            writer.add_items(ids, [self._items[i][0] or "" for i in ids], [self._items[i][1] for i in ids])
            writer.add_array(VECTORS, vectors)
            if self._popularity:
                dtype = self.bundle.popularity.dtype if self.bundle.popularity is not None else np.float64
                writer.add_array(POPULARITY, np.array([self._popularity.get(i, 0) for i in ids], dtype=dtype))
            self._index.save(writer.path("index"))
            data = {**(self.manifest.get("data") or {}), "items": len(ids)}
            manifest = {k: v for k, v in self.manifest.items() if k not in ("files", "format_version")}
            manifest.update(data=data, index=self._index.params,
                            derived_from=sha256_file(self.bundle.path / MANIFEST))
            return writer.finish(manifest)

    # -- user vectors ---------------------------------------------------------------------------
    def _known(self, history: Any, strict: bool, name: str = "history") -> list[str]:
        history = _id_list(history, name)
        known = [i for i in history if i in self._index]
        if len(known) != len(history):
            unknown = [i for i in history if i not in self._index]
            if strict:
                raise UnknownItemError(f"{name}: unknown item id {unknown[0]!r}"
                                       + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
            with self._counter_lock:
                self.skipped_history_ids += len(unknown)
        return known

    def _user_vectors(self, histories: Sequence[list[str]]) -> np.ndarray:
        """(b, dim) user vectors for non-empty histories of known ids (caller holds the lock)."""
        if self._user_model is None:
            return np.stack([self._index.vectors(h[-self._recent:]).mean(0) for h in histories])
        length = self._max_history
        batch = np.zeros((len(histories), length, self.dim), dtype=np.float32)
        mask = np.zeros((len(histories), length), dtype=np.float32)
        for row, h in enumerate(histories):
            h = h[-length:]
            batch[row, length - len(h):] = self._index.vectors(h)
            mask[row, length - len(h):] = 1.0
        return np.asarray(self._user_model.run(None, {"history": batch, "mask": mask})[0], dtype=np.float32)

    def _example(self, examples: Sequence[Any], name: str) -> np.ndarray:
        if isinstance(examples, (str, bytes)) or not isinstance(examples, Iterable):
            raise ValueError(f"{name}: expected a list of item ids or vectors")
        rows = []
        for n, e in enumerate(examples):
            if isinstance(e, str):
                if e not in self._index:
                    raise UnknownItemError(f"{name}[{n}]: unknown item id {e!r}")
                rows.append(self._index.vectors([e])[0])
            else:
                rows.append(normalise(e, self.dim, f"{name}[{n}]")[0])
        return np.mean(rows, axis=0)

    # -- recommending ---------------------------------------------------------------------------
    def recommend(self, history: Sequence[str] | None = None, k: int = 10, exclude: Iterable[str] | None = None,
                  filter: Filter | None = None, explain: bool = False, user_vector: Any = None,
                  positive: Sequence[Any] | None = None, negative: Sequence[Any] | None = None,
                  strict: bool = False, mode: str = "auto") -> list[Any]:
        """Top-`k` items for a user, best first, as `Recommendation(item_id, score)` tuples.

        The user is given by exactly one of:
        - `history`: item ids, oldest first. The bundle's user model turns it into a vector when it
          has one, else the mean of the last few item vectors. Unknown ids are skipped and counted
          in `skipped_history_ids` (`strict=True` raises instead). An empty history (or one with no
          known item) falls back to the most popular items, scored by interaction count.
        - `user_vector`: a (dim,) vector.
        - `positive` (and optionally `negative`): item ids or vectors, combined as Qdrant's
          average_vector strategy: avg(positive) + (avg(positive) - avg(negative)).

        History items and examples are never returned; `exclude` adds more ids to skip. `filter`
        is a dict of metadata conditions ({"brand": "Acme"} equals, {"brand": ["Acme", "Zephyr"]}
        in; a list-valued field matches when any element does) or a callable(item_id, metadata).
        `explain=True` returns `ExplainedRecommendation(item_id, score, because)` with the history
        items that contributed most. `mode` is "auto", "exact" or "ann" (force the HNSW graph).
        """
        given = [n for n, v in (("history", history), ("user_vector", user_vector), ("positive", positive)) if v is not None]
        if negative is not None and positive is None:
            raise ValueError("negative: needs positive examples too (Qdrant's average_vector strategy)")
        if len(given) != 1:
            raise ValueError("recommend: give exactly one of history, user_vector or positive/negative"
                             + (f" (got {', '.join(given)})" if given else ""))
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        skip = set(_id_list(exclude, "exclude")) if exclude is not None else set()
        with self._lock.read():
            k = _check_k(k, len(self._index))
            predicate = _predicate(filter, self._items)
            basis: list[str] = []
            if history is not None:
                basis = self._known(history, strict)
                skip.update(basis)
                if not basis:
                    return self._popular(k, skip, predicate, explain)
                query = self._user_vectors([basis])[0]
            elif user_vector is not None:
                query = normalise(user_vector, self.dim, "user_vector")[0]
            else:
                if isinstance(positive, (str, bytes)) or not len(positive):  # type: ignore[arg-type]
                    raise ValueError("positive: expected a non-empty list of item ids or vectors")
                pos = self._example(positive, "positive")  # type: ignore[arg-type]
                query = pos if not negative else 2 * pos - self._example(negative, "negative")
                skip.update(e for e in list(positive) + list(negative or ()) if isinstance(e, str))  # type: ignore[arg-type]
                basis = [e for e in positive if isinstance(e, str)]  # type: ignore[union-attr]
            if not np.any(query):
                raise ValueError("recommend: the examples cancel out (the query vector is zero)")
            hits = self._index.search(query, k, filter=predicate, exclude=[skip], mode=mode)[0]
            if not explain:
                return [Recommendation(i, s) for i, s in hits]
            return self._explain(hits, basis)

    def _explain(self, hits: list[tuple[str, float]], basis: list[str]) -> list[ExplainedRecommendation]:
        if not hits or not basis:
            return [ExplainedRecommendation(i, s, ()) for i, s in hits]
        used = list(dict.fromkeys(basis[-max(self._recent, self._max_history if self._user_model else 0):]))
        contrib = self._index.vectors([i for i, _ in hits]) @ self._index.vectors(used).T  # (k, history)
        out = []
        for (item, score), row in zip(hits, contrib):
            order = np.argsort(-row, kind="stable")[:EXPLAIN_TOP]
            out.append(ExplainedRecommendation(item, score, tuple(used[j] for j in order if row[j] > 0)))
        return out

    def _popular(self, k: int, skip: set[str], predicate: Callable[[str], bool] | None,
                 explain: bool) -> list[Any]:
        if not self._popularity:
            raise ValueError("history: no known items, and the bundle has no popularity counts to fall back on")
        ids = [i for i in self._index.ids() if i not in skip and (predicate is None or predicate(i))]
        counts = np.array([self._popularity.get(i, 0.0) for i in ids], dtype=np.float64)
        order = np.argsort(-counts, kind="stable")[:k]
        make = (lambda i, s: ExplainedRecommendation(i, s, ())) if explain else Recommendation
        return [make(ids[j], float(counts[j])) for j in order.tolist()]

    def similar_items(self, item_id: str, k: int = 10, filter: Filter | None = None,
                      mode: str = "auto") -> list[Recommendation]:
        """The `k` items most similar to `item_id` (itself excluded)."""
        with self._lock.read():
            if not isinstance(item_id, str) or item_id not in self._index:
                raise UnknownItemError(f"item_id: unknown item id {item_id!r}")
            k = _check_k(k, len(self._index) - 1)
            hits = self._index.search(self._index.vectors([item_id]), k, filter=_predicate(filter, self._items),
                                      exclude=[{item_id}], mode=mode)[0]
        return [Recommendation(i, s) for i, s in hits]

    def search(self, text: str, k: int = 10, filter: Filter | None = None, mode: str = "auto") -> list[Recommendation]:
        """The `k` items closest to a free-text query."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a string, got {type(text).__name__}")
        query = self.embed_texts([text])
        with self._lock.read():
            k = _check_k(k, len(self._index))
            hits = self._index.search(query, k, filter=_predicate(filter, self._items), mode=mode)[0]
        return [Recommendation(i, s) for i, s in hits]

    def score_all(self, histories: Sequence[Sequence[str]], strict: bool = False) -> np.ndarray:
        """Exact float32 scores (len(histories), len(self)) over the catalogue in `item_ids()`
        order: what `recommend` ranks, before exclusion. An empty history scores by popularity."""
        if isinstance(histories, (str, bytes)):
            raise ValueError("histories: expected a list of histories (lists of item ids)")
        with self._lock.read():
            ids, matrix = self._index.matrix()
            known = [self._known(h, strict, f"histories[{n}]") for n, h in enumerate(histories)]
            out = np.empty((len(known), len(ids)), dtype=np.float32)
            rows = [n for n, h in enumerate(known) if h]
            if rows:
                out[rows] = self._user_vectors([known[n] for n in rows]) @ matrix.T
            empty = [n for n, h in enumerate(known) if not h]
            if empty:
                if not self._popularity:
                    raise ValueError(f"histories[{empty[0]}]: no known items, and the bundle has no popularity counts")
                out[empty] = np.array([self._popularity.get(i, 0.0) for i in ids], dtype=np.float32)
            return out

    def recommend_batch(self, histories: Sequence[Sequence[str]], k: int = 10, strict: bool = False,
                        mode: str = "auto") -> list[list[Recommendation]]:
        """`recommend(history, k=k)` for many histories at once, for offline jobs: one user-model
        run and one index search per call. The same exclusions (history items) and the same
        popularity fallback for an empty history; with the HNSW graph, the same approximation."""
        if isinstance(histories, (str, bytes)):
            raise ValueError("histories: expected a list of histories (lists of item ids)")
        if mode not in SEARCH_MODES:
            raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
        with self._lock.read():
            k = _check_k(k, len(self._index))
            known = [self._known(h, strict, f"histories[{n}]") for n, h in enumerate(histories)]
            out: list[list[Recommendation]] = [[] for _ in known]
            rows = [n for n, h in enumerate(known) if h]
            if rows:
                queries = self._user_vectors([known[n] for n in rows])
                hits = self._index.search(queries, k, exclude=[set(known[n]) for n in rows], mode=mode)
                for n, found in zip(rows, hits):
                    out[n] = [Recommendation(i, s) for i, s in found]
            for n, h in enumerate(known):
                if not h:
                    out[n] = self._popular(k, set(), None, False)
            return out

    def user_segments(self, histories: Sequence[Sequence[str]], n: int, top: int = 5, seed: int = 0,
                      iterations: int = 50) -> list[UserSegment]:
        """Cluster users (spherical k-means on their user vectors) into `n` groups, largest first,
        each described by the `top` items of its members' histories closest to its centre."""
        if isinstance(histories, (str, bytes)):
            raise ValueError("histories: expected a list of histories (lists of item ids)")
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(histories):
            raise ValueError(f"n must be an integer from 1 to {len(histories)} (the number of histories), got {n!r}")
        with self._lock.read():
            known = [self._known(h, False, f"histories[{i}]") for i, h in enumerate(histories)]
            for i, h in enumerate(known):
                if not h:
                    raise ValueError(f"histories[{i}]: no known items (a user needs at least one to be placed)")
            users = normalise(self._user_vectors(known), self.dim, "user vectors")
            labels, centres = _kmeans(users, n, np.random.default_rng(seed), iterations)
            segments = []
            for c in range(n):
                members = np.flatnonzero(labels == c).tolist()
                if not members:
                    continue
                pool = list(dict.fromkeys(i for m in members for i in known[m]))
                closeness = self._index.vectors(pool) @ centres[c]
                items = [pool[j] for j in np.argsort(-closeness, kind="stable")[:top]]
                segments.append(UserSegment(members, items, centres[c]))
        return sorted(segments, key=lambda s: -len(s.members))

    # -- lifecycle ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop accepting changes and release the state_dir (another process may open it).
        Reads keep working."""
        with self._lock.write():
            self._closed = True
            if self._state is not None:
                self._state.close()
                self._state = None

    def __enter__(self) -> "Recommender":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Recommender({str(self.bundle.path)!r}, items={len(self)}, dim={self.dim}, "
                f"device={self.device!r}, precision={self.precision!r})")


def _verify_names(path: Path, precisions: set[str]) -> set[str] | bool:
    """Every file of the bundle except encoder precisions this load cannot run: their hashes are
    most of the checking time. True (check everything) when the manifest cannot be read here, so
    Bundle.open reports what is wrong with it."""
    from ._bundle import ENCODER_FILES, MANIFEST

    try:
        files = json.loads((path / MANIFEST).read_text(encoding="utf-8"))["files"]
        skip = {ENCODER_FILES[p] for p in ENCODER_FILES if p not in precisions}
        return {name for name in files if name not in skip}
    except (OSError, ValueError, KeyError, TypeError):
        return True


def _apply(index: VectorIndex, items: dict[str, tuple[str | None, dict[str, Any]]], change: Upsert | Delete) -> None:
    if isinstance(change, Upsert):
        index.add(change.ids, change.vectors)
        for item, text, meta in zip(change.ids, change.texts, change.metas):
            items[item] = (text, meta)
    else:
        index.delete(change.ids)
        for item in change.ids:
            items.pop(item, None)


def _write_items(path: Path, ids: list[str], items: Mapping[str, tuple[str | None, dict[str, Any]]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for item in ids:
            text, meta = items[item]
            f.write(json.dumps({"id": item, "text": text, "meta": meta}, ensure_ascii=False) + "\n")


def _read_items(path: Path) -> dict[str, tuple[str | None, dict[str, Any]]]:
    items = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                items[row["id"]] = (row["text"], row["meta"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise BundleError(f"{path} line {n}: not an item row ({e})") from None
    return items


def _kmeans(x: np.ndarray, n: int, rng: np.random.Generator, iterations: int) -> tuple[np.ndarray, np.ndarray]:
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


__all__ = ["Recommender", "Recommendation", "ExplainedRecommendation", "Item", "UserSegment", "UnknownItemError"]
