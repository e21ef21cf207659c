"""Carry a state directory's changes onto a new bundle: what a model update does to a live server.

A state directory belongs to one bundle (lmrec._state): its upserts hold vectors of that bundle's
encoder. When a new bundle replaces it (a new model, or the same model with a rebuilt catalogue;
item ids are the stable key), the changes made since are replayed onto the new bundle in a fresh
state directory beside the old one: deletes as deletes, upserts with their text re-embedded by the
new encoder (or with their vectors as they are when the encoder is unchanged). An upsert that only
had a vector cannot be re-embedded by another model; it is dropped and reported.

Nothing touches the old state directory until `commit()`, which exchanges the two directories in
one atomic rename (Linux renameat2 RENAME_EXCHANGE; elsewhere two renames) and keeps the old one
beside it until `discard_backup()`, so `rollback()` can swap back if the new bundle fails to serve.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import logging
import os
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._bundle import ENCODER_FILES, MANIFEST
from ._durable import fsync_dir, sha256_file
from ._state import STATE_FILE

log = logging.getLogger("lmrec")
_BATCH = 256


def state_bundle(state_dir: str | os.PathLike[str]) -> str | None:
    """The manifest sha256 of the bundle a state directory belongs to (None: new or unreadable)."""
    try:
        return json.loads((Path(state_dir) / STATE_FILE).read_text()).get("bundle")
    except (OSError, ValueError, AttributeError):
        return None


def needs_rebase(state_dir: str | os.PathLike[str], bundle_dir: str | os.PathLike[str]) -> bool:
    """Whether the state directory holds changes made on a bundle other than `bundle_dir`."""
    owner = state_bundle(state_dir)
    return owner is not None and owner != sha256_file(Path(bundle_dir) / MANIFEST)


def _encoder_ids(manifest: dict[str, Any]) -> set[str]:
    return {manifest["files"][f]["sha256"] for f in ENCODER_FILES.values() if f in manifest["files"]}


@dataclass
class StateRebase:
    """A new state directory for `new_bundle` holding the changes of `state_dir`, ready to commit."""

    state_dir: Path
    staged: Path
    upserts: int = 0
    reembedded: int = 0
    deletes: int = 0
    dropped: list[str] = field(default_factory=list)  # vector-only upserts a new encoder cannot redo
    committed: bool = False

    @classmethod
    def prepare(cls, old: Any, new_bundle: str | os.PathLike[str], device: str = "cpu", precision: str = "auto",
                threads: int | None = None) -> "StateRebase":
        """Stage the changes `old` (a Recommender with a state_dir; no writes meanwhile) made on
        its bundle as changes on `new_bundle`. Loading the new bundle here proves it serves."""
        from ._recommender import Recommender

        state_dir = Path(old._state.path)
        staged = state_dir.parent / f".{state_dir.name}.rebase-{uuid.uuid4().hex[:8]}"
        self = cls(state_dir, staged)
        bundle = old.bundle
        position = {item: n for n, item in enumerate(bundle.item_ids)}
        with old._lock.read():
            ids, matrix = old._index.matrix()
            matrix = np.array(matrix)
            items = dict(old._items)
        known = np.array([position.get(i, -1) for i in ids], dtype=np.int64)
        same_vector = np.zeros(len(ids), dtype=bool)
        hit = known >= 0
        if hit.any():
            diff = np.abs(matrix[hit] - np.asarray(bundle.item_vectors)[known[hit]]).max(axis=1)
            same_vector[hit] = diff < 1e-6
        changed = [n for n, item in enumerate(ids)
                   if not same_vector[n] or items[item][0] != bundle.item_texts[known[n]]
                   or items[item][1] != bundle.item_meta[known[n]]]
        live = set(ids)
        deleted = [i for i in bundle.item_ids if i not in live]
        try:
            new = Recommender.load(new_bundle, device=device, precision=precision, threads=threads, state_dir=staged)
            try:
                keep_vectors = bool(_encoder_ids(new.manifest) & _encoder_ids(old.manifest))
                for start in range(0, len(changed), _BATCH):
                    rows = changed[start:start + _BATCH]
                    if keep_vectors:
                        new.add_items([ids[n] for n in rows], texts=[items[ids[n]][0] for n in rows],
                                      vectors=matrix[rows], metadata=[items[ids[n]][1] for n in rows])
                        self.upserts += len(rows)
                        continue
                    with_text = [n for n in rows if items[ids[n]][0]]
                    self.dropped += [ids[n] for n in rows if not items[ids[n]][0]]
                    if with_text:
                        new.add_items([ids[n] for n in with_text], texts=[items[ids[n]][0] for n in with_text],
                                      metadata=[items[ids[n]][1] for n in with_text])
                        self.upserts += len(with_text)
                        self.reembedded += len(with_text)
                gone = [i for i in deleted if i in new]
                if gone:
                    new.delete_items(gone)
                self.deletes = len(gone)
            finally:
                new.close()
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        if self.dropped:
            log.warning("state_dir %s: %d upsert(s) without text cannot be re-embedded by the new encoder and are "
                        "dropped (first: %s)", state_dir, len(self.dropped), ", ".join(self.dropped[:5]))
        return self

    def commit(self) -> None:
        """Put the staged state at `state_dir` (the old one moves to the staged path)."""
        _exchange(self.staged, self.state_dir)
        self.committed = True

    def rollback(self) -> None:
        """Undo `commit` (or drop an uncommitted stage)."""
        if self.committed:
            _exchange(self.staged, self.state_dir)
            self.committed = False
        shutil.rmtree(self.staged, ignore_errors=True)

    def discard_backup(self) -> None:
        """After a successful swap: remove the old state directory."""
        if self.committed:
            shutil.rmtree(self.staged, ignore_errors=True)

    def summary(self) -> str:
        return (f"{self.upserts} upsert(s) carried ({self.reembedded} re-embedded), {self.deletes} delete(s), "
                f"{len(self.dropped)} vector-only upsert(s) dropped")


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories: atomically with renameat2(RENAME_EXCHANGE) on Linux."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is not None:
            at_fdcwd, rename_exchange = -100, 2
            if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
                fsync_dir(a.parent)
                return
            err = ctypes.get_errno()
            if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back to two renames
                raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")
    middle = a.parent / f".{a.name}.swap-{uuid.uuid4().hex[:8]}"
    os.rename(a, middle)
    os.rename(b, a)
    os.rename(middle, b)
    fsync_dir(a.parent)


__all__ = ["StateRebase", "needs_rebase", "state_bundle"]
