"""`Catalogue`: the items a Recommender ranks — ids, texts, metadata, vectors, the index — and
every change made to them since the bundle.

The bundle is never written. With a `state_dir`, each upsert or delete is fsync'd to an
append-only log before it applies (lmrec._state), `snapshot()` folds the log into a snapshot, and
opening replays the newest snapshot plus the log. `reopen()` moves the catalogue onto a new bundle
(a model update): deletes stay deleted and upserts are re-embedded by the new encoder, in a fresh
state directory that replaces the old one in one atomic exchange, so a failure leaves this
catalogue exactly as it was. Thread-safe: reads share one lock, writes take it alone.

A bundle whose user model ranks with a text term (`UserModelInfo.text_weight`, or its centred part
`centred_text_weight`) keeps each item's
text vector beside its vector, in the index: an item embedded here its encoder output, one
upserted as a vector alone that vector (it has no other), and the log records both.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._bundle import Bundle, BundleWriter, read_items, write_items
from ._checks import id_list, metadata_list
from ._durable import exchange_dirs
from ._errors import BundleError, LmrecError, UnknownItemError
from ._filters import Filter, predicate
from ._index import Boost, VectorIndex, build_index, normalise
from ._manifest import Manifest
from ._results import Item
from ._rwlock import RWLock
from ._state import Change, Delete, StateDir, Upsert, open_state

if TYPE_CHECKING:
    from ._encoder import TextEncoder

log = logging.getLogger("lmrec")

Items = dict[str, tuple[str | None, dict[str, Any]]]  # id -> (text, metadata)
Hits = list[list[tuple[str, float]]]
Carried = tuple[str, str | None, dict[str, Any], np.ndarray, np.ndarray | None]  # id, text, meta, vector, text vector
_REEMBED_BATCH = 256
_UNIT = 1.001  # user vectors up to this long are unit or mean item vectors, not a user model's


class TextQuery(NamedTuple):
    """The text term of user-model queries (Users.text_queries) in the index's units, cosines of
    the user vector: `every` (b, dim) · each item's text vector t, on every item (β r̂); `new`
    (b, dim) · (t − t̄) on items without a residual (the centred part, C r̂). Either may be None."""

    every: np.ndarray | None
    new: np.ndarray | None


class Catalogue:
    """The items, their vectors and index, and the state directory that makes changes durable."""

    def __init__(self, bundle: Bundle, encoder: TextEncoder, index: VectorIndex, items: Items,
                 state: StateDir | None, report: list[str], lock: RWLock) -> None:
        self.bundle = bundle
        self.encoder = encoder  # defines the vector space: texts upserted here are embedded by it
        self.dim = bundle.dim
        self.state_report = report  # what opening the state directory repaired
        self._index = index
        self._items = items
        self._state = state
        self._lock = lock  # shared with the index: a query takes it once
        self._closed = False
        self.residuals = bundle.residuals  # trained items' residuals: what texts embedded here add or borrow
        self._new_mask: np.ndarray | None = None  # slots of items without a residual (cached between writes)
        counts = bundle.popularity
        self._popularity: dict[str, float] = {} if counts is None else dict(
            zip(bundle.item_ids, (counts / max(float(counts.max(initial=0)), 1.0)).tolist(), strict=True))

    @classmethod
    def open(cls, bundle: Bundle, encoder: TextEncoder, state_dir: str | os.PathLike[str] | None = None,
             threads: int | None = None) -> Catalogue:
        """The bundle's items, plus the changes in `state_dir` (created if missing)."""
        lock = RWLock()
        with_text = bundle.manifest.ranks_with_text
        if bundle.has(Manifest.INDEX):  # the bundle verified its checksums
            index = VectorIndex.load(bundle.file(Manifest.INDEX), verify=False, threads=threads, lock=lock)
            if index.dim != bundle.dim or index.ids() != bundle.item_ids:
                raise BundleError(
                    f"bundle {bundle.path}: index/ does not hold the items of {Manifest.ITEMS} (dim {index.dim})"
                )
            _check_text(index, with_text, f"bundle {bundle.path}: index/")
        elif with_text:
            raise BundleError(f"bundle {bundle.path}: its user model ranks with a text term (user_model.text_weight, "
                              "centred_text_weight), "
                              "but it has no index/ holding the items' text vectors")
        else:
            params = {k: v for k, v in bundle.manifest.index.items() if k in ("M", "ef_construction", "ef")}
            index = build_index(np.asarray(bundle.item_vectors), bundle.item_ids, params, threads=threads, lock=lock)
        items: Items = {i: (t, m) for i, t, m in zip(bundle.item_ids, bundle.item_texts, bundle.item_meta, strict=True)}
        if state_dir is None:
            return cls(bundle, encoder, index, items, None, [], lock)
        state, recovery = open_state(state_dir, bundle.sha256)
        try:
            if recovery.snapshot is not None:
                index = VectorIndex.load(recovery.snapshot / Manifest.INDEX, threads=threads, lock=lock)
                _check_text(index, with_text, f"{recovery.snapshot}: {Manifest.INDEX}/")
                items = read_items(recovery.snapshot / Manifest.ITEMS)
                if index.ids() != list(items):
                    raise BundleError(f"{recovery.snapshot}: index and {Manifest.ITEMS} list different items")
            for change in recovery.changes:
                _apply(index, items, change)
        except BaseException:
            state.close()
            raise
        for line in recovery.report:
            log.warning("state_dir %s: %s", state.path, line)
        return cls(bundle, encoder, index, items, state, recovery.report, lock)

    # -- reads ----------------------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold off writers: several reads inside see one consistent catalogue."""
        with self._lock.read():
            yield

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def ids(self) -> list[str]:
        """Ids in index order: the bundle's order, then added items (which may reuse deleted slots)."""
        return self._index.ids()

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """(n, dim) stored vectors; UnknownItemError for an id not in the catalogue."""
        return self._index.vectors(ids)

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """(ids, vectors) of the whole catalogue in `ids()` order (hold `read()` while using it)."""
        return self._index.matrix()

    def text_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """(n, dim) text vectors of `ids` (a bundle with a text term only)."""
        return self._index.text_vectors(ids)

    def text_matrix(self) -> np.ndarray:
        """The items' text vectors in `ids()` order (a bundle with a text term only; hold `read()`)."""
        return self._index.matrix(text=True)[1]

    def metadata(self, item_id: str) -> Mapping[str, Any]:
        return self._items[item_id][1]

    def get(self, item_id: str) -> Item:
        with self._lock.read():
            if not isinstance(item_id, str) or item_id not in self._items:
                raise UnknownItemError(f"item_id: unknown item id {item_id!r}")
            text, meta = self._items[item_id]
            return Item(item_id, text, dict(meta), self._index.vectors([item_id])[0])

    def title(self, item_id: str) -> str:
        """A display name: metadata title, else the item text, else the id."""
        text, meta = self._items.get(item_id, (None, {}))
        return str(meta.get("title") or text or item_id)

    def search(self, queries: Any, k: int, filter: Filter | None = None,
               exclude: Sequence[set[str]] | None = None, mode: str = "auto", users: bool = False,
               text: TextQuery | None = None) -> Hits:
        """Top-`k` (id, score) per query row; fewer when fewer items pass (see VectorIndex.search).
        Scores are cosines, plus the bundle's new-item bonus when the queries are `users` (vectors
        of the user model, whose scores the bonus was calibrated on), plus the text term when
        given (Users.text_queries)."""
        with self._lock.read():
            boost = self._boost(queries, None if text is None else text.new) if users else None
            return self._index.search(queries, k, filter=predicate(filter, self.metadata), exclude=exclude, mode=mode,
                                      boost=boost, text=None if text is None else text.every)

    @property
    def new_item_bonus(self) -> float:
        return 0.0 if self.residuals is None else float(self.residuals.info.bonus)

    def bonus_of(self, ids: Sequence[str]) -> np.ndarray | float:
        """The bonus each of `ids` gets under the user model (0.0 when the bundle has none)."""
        if not self.new_item_bonus:
            return 0.0
        trained = self.residuals.row  # type: ignore[union-attr]
        return np.array([0.0 if i in trained else self.new_item_bonus for i in ids], dtype=np.float32)

    def _boost(self, users: Any, new_text: np.ndarray | None = None) -> Boost | None:
        """(value per user row, new-item slot mask, `new_text`): what items without a residual get
        beyond the others. The bonus was chosen on the user model's own scores, u·v + bonus; the
        index ranks cosines, so a user vector of length |u| gets bonus / |u|. That length is the
        model's learned softmax temperature (a median of 26-41 on the shared data): a vector of
        length 1 or less is no user model's (a unit or mean item vector) and gets none, as a
        normalised copy of one would otherwise drown warm items in new ones. The text term's
        centred part (`new_text`, C r̂) adds C r̂·t to each and takes C r̂·t̄ off the value."""
        if not self.new_item_bonus and new_text is None:
            return None
        mask = self._new_mask
        if mask is None:
            trained = self.residuals.row  # type: ignore[union-attr]
            mask = self._new_mask = self._index.slot_mask(lambda i: i not in trained)
        norms = np.linalg.norm(np.array(users, dtype=np.float32, ndmin=2), axis=1)
        values = np.where(norms > _UNIT, self.new_item_bonus / np.maximum(norms, 1e-12), 0.0)
        if new_text is not None:
            values = values - new_text @ self.residuals.text_mean  # type: ignore[union-attr]
        return values, mask, new_text

    def new_text_scores(self, ids: Sequence[str], new_text: np.ndarray) -> np.ndarray:
        """(b, len(ids)) the text term's centred part, C r̂·(t − t̄) on items without a residual
        and 0 on the others, for rows `new_text` (C r̂; hold `read()`)."""
        table = self.residuals
        out = np.zeros((len(new_text), len(ids)), dtype=np.float32)
        cols = [n for n, i in enumerate(ids) if i not in table]  # type: ignore[operator]
        if cols:
            text = self._index.text_vectors([ids[n] for n in cols])
            out[:, cols] = new_text @ (text - table.text_mean).T  # type: ignore[union-attr]
        return out

    @property
    def has_popularity(self) -> bool:
        """Whether the bundle came with interaction counts (the empty-history fallback needs them)."""
        return bool(self._popularity)

    def popularity(self, ids: Sequence[str]) -> np.ndarray:
        """Interaction counts scaled to [0, 1] (items added since the bundle: 0)."""
        return np.array([self._popularity.get(i, 0.0) for i in ids], dtype=np.float32)

    def popular(self, k: int, skip: set[str], filter: Filter | None = None) -> list[tuple[str, float]]:
        """The `k` most popular items not in `skip` that pass `filter`: the empty-history answer."""
        if not self.has_popularity:
            raise ValueError("history: no known items, and the bundle has no popularity counts to fall back on")
        with self._lock.read():
            keep = predicate(filter, self.metadata)
            ids = [i for i in self._index.ids() if i not in skip and (keep is None or keep(i))]
            scores = self.popularity(ids)
            order = np.argsort(-scores, kind="stable")[:k]
            return [(ids[j], float(scores[j])) for j in order.tolist()]

    # -- changes --------------------------------------------------------------------------------
    def upsert(self, ids: Sequence[str], texts: Sequence[str | None] | None = None, vectors: Any = None,
               metadata: Sequence[Mapping[str, Any]] | None = None, batch_size: int = 64) -> None:
        """Insert or replace items whole (text, metadata, vector). A row without a vector (all of
        them when `vectors` is None, or a None entry in a list of vectors) is embedded from its
        text. Durable (logged and fsync'd) before it returns when there is a state directory."""
        ids = id_list(ids, "ids")
        if not ids:
            raise ValueError("ids: empty list")
        if any(not i for i in ids) or len(set(ids)) != len(ids):
            raise ValueError("ids: item ids must be non-empty and unique within one call")
        if texts is not None and (isinstance(texts, (str, bytes)) or len(texts) != len(ids)):
            raise ValueError(f"texts: expected a list of {len(ids)} strings (one per id)")
        text_list: list[str | None] = list(texts) if texts is not None else [None] * len(ids)
        for n, text in enumerate(text_list):
            if text is not None and not isinstance(text, str):
                raise ValueError(f"texts[{n}]: expected a string, got {type(text).__name__}")
        metas = metadata_list(metadata, len(ids))
        rows: list[Any] = [None] * len(ids)
        if isinstance(vectors, (list, tuple)) and any(v is None for v in vectors):  # some rows to embed
            if len(vectors) != len(ids):
                raise ValueError(f"vectors: {len(vectors)} rows for {len(ids)} ids")
            rows = [None if v is None else normalise(v, self.dim, f"vectors[{n}]")[0] for n, v in enumerate(vectors)]
        elif vectors is not None:
            rows = list(normalise(vectors, self.dim, "vectors"))
            if len(rows) != len(ids):
                raise ValueError(f"vectors: {len(rows)} rows for {len(ids)} ids")
        todo = [n for n, v in enumerate(rows) if v is None]
        if todo and texts is None:
            raise ValueError("add_items needs texts (to embed) or vectors")
        for n in todo:
            if text_list[n] is None:
                raise ValueError(f"texts[{n}]: item {ids[n]!r} has neither a text nor a vector")
        text_rows = list(rows)  # a vector upserted alone is its own text vector: there is no other
        if todo:
            embedded = self.encoder.embed([text_list[n] for n in todo], batch_size=batch_size)  # type: ignore[misc]
            for n, t in zip(todo, embedded, strict=True):
                text_rows[n] = t
            if self.residuals is not None:
                embedded = self.residuals.apply([ids[n] for n in todo], embedded)
            for n, v in zip(todo, embedded, strict=True):
                rows[n] = v
        text_vectors = np.stack(text_rows).astype(np.float32) if self._index.has_text else None
        self._write(Upsert(ids, np.stack(rows).astype(np.float32), text_list, metas, text_vectors))

    def delete(self, ids: Sequence[str], missing_ok: bool = False) -> list[str]:
        """Remove items; returns the ids that were not in the catalogue. Unless `missing_ok`, an
        unknown id raises UnknownItemError and nothing is removed."""
        ids = list(dict.fromkeys(id_list(ids, "ids")))
        if not ids:
            raise ValueError("ids: empty list")
        with self._lock.write():
            missing = [i for i in ids if i not in self._index]
            if missing and not missing_ok:
                raise UnknownItemError(f"ids: unknown item id {missing[0]!r}"
                                       + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
            present = [i for i in ids if i in self._index]
            if present:
                self._write(Delete(present))
            return missing

    def _write(self, change: Change) -> None:
        with self._lock.write():
            if self._closed:
                raise LmrecError("this catalogue is closed: it no longer accepts changes (load the bundle again)")
            if self._state is not None:
                self._state.append(change)
            _apply(self._index, self._items, change)
            self._new_mask = None

    @property
    def pending_changes(self) -> int:
        """Changes logged since the last snapshot (0 without a state directory)."""
        return 0 if self._state is None else self._state.last_seq - self._state.snapshot_seq

    def snapshot(self) -> Path | None:
        """Write the catalogue to the state directory and compact its log; None when unchanged."""
        with self._lock.read():  # readers go on; writers (which append to the log) wait
            if self._state is None:
                raise LmrecError("snapshot() needs a state_dir: Recommender.load(bundle, state_dir=...)"
                                 + (" (this one is closed)" if self._closed else ""))
            return self._state.snapshot(self._write_snapshot)

    def _write_snapshot(self, directory: Path) -> None:
        ids = self._index.ids()
        self._index.save(directory / Manifest.INDEX)
        write_items(directory / Manifest.ITEMS, ids, [self._items[i][0] for i in ids], [self._items[i][1] for i in ids])

    def save(self, bundle_dir: str | Path, overwrite: bool = False) -> Path:
        """A new bundle: this bundle's encoders with the current items and index."""
        catalogue_files = (Manifest.ITEMS, Manifest.VECTORS, Manifest.POPULARITY, Manifest.INDEX)
        with self._lock.read(), BundleWriter(bundle_dir, overwrite=overwrite) as writer:
            writer.copy_from(self.bundle, skip=catalogue_files)
            ids, vectors = self._index.matrix()
            writer.add_catalogue(ids, [self._items[i][0] for i in ids], [self._items[i][1] for i in ids],
                                 vectors, self._index, self.bundle.popularity_of(ids))
            return writer.finish(self.bundle.manifest.derived(self.bundle.sha256, len(ids), self._index.params))

    def close(self) -> None:
        """Stop accepting changes and release the state directory (another process may open it)."""
        with self._lock.write():
            self._closed = True
            if self._state is not None:
                self._state.close()
                self._state = None

    # -- a new bundle -----------------------------------------------------------------------------
    def reopen(self, bundle: Bundle, encoder: TextEncoder, threads: int | None = None) -> Catalogue:
        """`bundle`'s catalogue with this one's changes carried over (item ids are the key); this one
        closes and the new one takes over its state directory. Upserts keep their vectors when the
        encoder and the residual table are the same, else their text is embedded again by
        `encoder` (and given the new table's residual); an upsert that had only a vector keeps it
        under the same encoder and is dropped (logged) under another. If anything fails,
        this catalogue is left as it was, open, and the error is raised."""
        with self._lock.write():
            if self._closed:
                raise LmrecError("this catalogue is closed: it cannot be reopened on another bundle")
            upserts, deletes = self._changes()
            same_encoder = bool(self.bundle.manifest.encoder_sha256() & bundle.manifest.encoder_sha256())
            # a text's item vector also holds the residual it got from the bundle's table and rule;
            # a bundle with a text term needs the text vectors too, which only such a bundle kept
            keep_vectors = (same_encoder and _residual_rule(self.bundle) == _residual_rule(bundle)
                            and (self._index.has_text or not bundle.manifest.ranks_with_text))
            staged = None
            if self._state is not None:
                self._state.snapshot(self._write_snapshot)
                staged = self._state.path.parent / f".{self._state.path.name}.rebase-{uuid.uuid4().hex[:8]}"
            try:
                new = Catalogue.open(bundle, encoder, staged, threads)
                try:
                    dropped = new._carry(upserts, deletes, keep_vectors, same_encoder)
                    if staged is not None and self._state is not None:
                        exchange_dirs(staged, self._state.path)  # the commit: one atomic rename
                        new._state.moved_to(self._state.path)  # type: ignore[union-attr]
                except BaseException:
                    new.close()
                    raise
            finally:
                if staged is not None:
                    shutil.rmtree(staged, ignore_errors=True)  # after the commit: the old state
            if self._state is not None:
                self._state.close()
                self._state = None
            self._closed = True
        log.info("catalogue moved to %s: %d upsert(s) carried (%s), %d delete(s), %d vector-only upsert(s) dropped",
                 bundle.path, len(upserts) - len(dropped), "vectors kept" if keep_vectors else "texts re-embedded",
                 len(deletes), len(dropped))
        if dropped:
            log.warning("%d upsert(s) without text cannot be re-embedded by the new encoder and were dropped "
                        "(first: %s)", len(dropped), ", ".join(dropped[:5]))
        return new

    def _changes(self) -> tuple[list[Carried], list[str]]:
        """(upserts as (id, text, metadata, vector, text vector or None), deleted ids) relative to
        this catalogue's bundle."""
        bundle = self.bundle
        position = {item: n for n, item in enumerate(bundle.item_ids)}
        ids, matrix = self._index.matrix()
        text_matrix = self._index.matrix(text=True)[1] if self._index.has_text else None
        known = np.array([position.get(i, -1) for i in ids], dtype=np.int64)
        same = np.zeros(len(ids), dtype=bool)
        hit = known >= 0
        if hit.any():  # vectorised: a model update's catalogue can have millions of items
            same[hit] = np.abs(matrix[hit] - np.asarray(bundle.item_vectors)[known[hit]]).max(axis=1) < 1e-6
        upserts = []
        for n, item in enumerate(ids):
            text, meta = self._items[item]
            p = int(known[n])
            if not same[n] or text != bundle.item_texts[p] or meta != bundle.item_meta[p]:
                upserts.append((item, text, meta, np.array(matrix[n]),
                                None if text_matrix is None else np.array(text_matrix[n])))
        live = set(ids)
        return upserts, [i for i in bundle.item_ids if i not in live]

    def _carry(self, upserts: list[Carried], deletes: list[str], keep_vectors: bool, same_encoder: bool) -> list[str]:
        """Upserts keep their vectors (and text vectors: `keep_vectors`) or their texts are
        embedded again; one without a text keeps the vector it was given when the encoder is the
        same, else it is dropped (returned)."""
        dropped = [u[0] for u in upserts if not (keep_vectors or u[1] or same_encoder)]
        skip = set(dropped)
        for start in range(0, len(upserts), _REEMBED_BATCH):
            batch = [u for u in upserts[start:start + _REEMBED_BATCH] if u[0] not in skip]
            kept = [u for u in batch if keep_vectors or not u[1]]
            if kept:  # written as they are: a vector-only upsert's text vector is its vector
                text = [u[3] if u[4] is None else u[4] for u in kept] if self._index.has_text else None
                self._write(Upsert([u[0] for u in kept], np.stack([u[3] for u in kept]), [u[1] for u in kept],
                                   [u[2] for u in kept], None if text is None else np.stack(text)))
            again = [u for u in batch if not (keep_vectors or not u[1])]
            if again:
                self.upsert([u[0] for u in again], texts=[u[1] for u in again], metadata=[u[2] for u in again])
        gone = [i for i in deletes if i in self._index]
        if gone:
            self.delete(gone)
        return dropped


def _residual_rule(bundle: Bundle) -> tuple[Any, ...] | None:
    """What decides the residual a text gets: the table's checksum and the borrowing rule."""
    entry, info = bundle.manifest.files.get(Manifest.RESIDUALS), bundle.manifest.new_items
    if entry is None or info is None:
        return None
    return entry.sha256, info.k, info.temperature, info.shrink


def _check_text(index: VectorIndex, needed: bool, where: str) -> None:
    if needed and not index.has_text:
        raise BundleError(f"{where} holds no text vectors, and the bundle's user model ranks with a text term "
                          "(user_model.text_weight, centred_text_weight)")


def _apply(index: VectorIndex, items: Items, change: Change) -> None:
    if isinstance(change, Upsert):
        own = change.text_vectors if change.text_vectors is not None else change.vectors
        index.add(change.ids, change.vectors, own if index.has_text else None)
        for item, text, meta in zip(change.ids, change.texts, change.metas, strict=True):
            items[item] = (text, meta)
    else:
        index.delete(change.ids)
        for item in change.ids:
            items.pop(item, None)


__all__ = ["Catalogue"]
