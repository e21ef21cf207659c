"""The state directory: every change to a read-only bundle, durable before it is acknowledged.

Layout of a state directory::

    state.json                  which bundle it belongs to (changes only make sense on that bundle)
    LOCK                        flock'd by the one process that has it open
    wal-<first seq>.log         log segments: one record per append (a batch of upserts or deletes)
    snapshot-<seq>/             the whole catalogue after record <seq> (written atomically)

A record is `<u32 length><u32 crc32(payload)><u32 crc32(first 8 bytes)><payload>`; the payload
is `<u64 seq><u8 kind><u32 n>`, an n-byte JSON header (ids, texts, metadata) and the float32
vectors, then (header `"text": true`) the items' float32 text vectors, so replay needs no encoder.
`append` returns only after write + fsync. After a snapshot is durable a new segment starts and
the older segments and snapshots are deleted; a crash in between leaves files that replay skips.

Opening replays the newest snapshot plus every record after it. A record cut short at the end of
the last segment (a crash mid-write: it was never acknowledged) is truncated away and reported;
damage anywhere else is an error naming the file and offset, never silently skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._durable import atomic_dir, fsync_dir
from ._errors import StateError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

FORMAT = 1
STATE_FILE = "state.json"
LOCK_FILE = "LOCK"
SNAPSHOT_META = "snapshot.json"
_FRAME = struct.Struct("<III")  # payload length, crc32 of the payload, crc32 of those 8 bytes
_HEAD = struct.Struct("<QBI")  # seq, kind, header length
_UPSERT, _DELETE = 1, 2
_MAX_RECORD = 1 << 31
_SEGMENT = re.compile(r"^wal-(\d{20})\.log$")
_SNAPSHOT = re.compile(r"^snapshot-(\d{20})$")


@dataclass(frozen=True)
class Upsert:
    """Items inserted or replaced, with everything needed to rebuild them."""

    ids: list[str]
    vectors: np.ndarray  # float32 (n, dim)
    texts: list[str | None]
    metas: list[dict[str, Any]]
    text_vectors: np.ndarray | None = None  # float32 (n, dim): for a bundle that ranks by text too


@dataclass(frozen=True)
class Delete:
    ids: list[str]


Change = Upsert | Delete


@dataclass
class Recovery:
    """What `StateDir.open` found: the snapshot to start from and the changes to apply after it."""

    snapshot: Path | None
    snapshot_seq: int
    changes: list[Change]
    report: list[str] = field(default_factory=list)  # tails truncated, leftovers removed


def _encode(seq: int, change: Change) -> bytes:
    if isinstance(change, Upsert):
        vectors = np.ascontiguousarray(change.vectors, dtype="<f4")
        if vectors.ndim != 2 or len(vectors) != len(change.ids):
            raise ValueError(f"upsert: {vectors.shape} vectors for {len(change.ids)} ids")
        header = {"ids": change.ids, "texts": change.texts, "metas": change.metas, "dim": int(vectors.shape[1])}
        kind, body = _UPSERT, vectors.tobytes()
        if change.text_vectors is not None:
            text = np.ascontiguousarray(change.text_vectors, dtype="<f4")
            if text.shape != vectors.shape:
                raise ValueError(f"upsert: {text.shape} text vectors for {vectors.shape} vectors")
            header["text"] = True
            body += text.tobytes()
    else:
        header, kind, body = {"ids": change.ids}, _DELETE, b""
    head = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode()
    payload = _HEAD.pack(seq, kind, len(head)) + head + body
    if len(payload) >= _MAX_RECORD:
        raise ValueError(f"one change of {len(payload)} bytes is over the 2 GiB record limit; split the batch")
    head8 = struct.pack("<II", len(payload), zlib.crc32(payload))
    return head8 + struct.pack("<I", zlib.crc32(head8)) + payload


def _decode(payload: bytes) -> tuple[int, Change]:
    seq, kind, n = _HEAD.unpack_from(payload)
    header = json.loads(payload[_HEAD.size:_HEAD.size + n])
    if kind == _UPSERT:
        rows = np.frombuffer(payload, dtype="<f4", offset=_HEAD.size + n).reshape(-1, len(header["ids"]), header["dim"])
        if len(rows) != (2 if header.get("text") else 1):
            raise ValueError(f"upsert record holds {len(rows)} blocks of vectors")
        text = rows[1].astype(np.float32) if header.get("text") else None
        return seq, Upsert(header["ids"], rows[0].astype(np.float32), header["texts"], header["metas"], text)
    if kind == _DELETE:
        return seq, Delete(header["ids"])
    raise ValueError(f"unknown record kind {kind}")


def read_segment(path: Path, last: bool) -> tuple[list[tuple[int, Change]], int | None]:
    """Records of one segment, and the offset to truncate to when its tail is torn (else None).

    A kill mid-write leaves a prefix of the record; a power cut may leave zeros. So a tail is torn
    when its header is cut short or zero, when a valid header points past the end of the file, or
    when the final record fails its checksum. Only the last segment may have one; any other
    damage raises StateError.
    """
    data = path.read_bytes()
    records: list[tuple[int, Change]] = []
    pos = 0
    while pos < len(data):
        rest = data[pos:]
        if len(rest) < _FRAME.size or not rest.strip(b"\0"):
            problem = f"{len(rest)} bytes that are not a whole record"
        elif zlib.crc32(rest[:8]) != _FRAME.unpack_from(rest)[2]:
            raise StateError(f"{path}: record header at byte {pos} is damaged (the log is corrupted)")
        else:
            length, crc, _ = _FRAME.unpack_from(rest)
            end = _FRAME.size + length
            if end > len(rest):
                problem = f"a record of {length} bytes with {len(rest) - _FRAME.size} written"
            elif zlib.crc32(rest[_FRAME.size:end]) != crc:
                if rest[end:].strip(b"\0"):
                    raise StateError(f"{path}: record at byte {pos} fails its checksum and more records follow "
                                     "(the log is corrupted, not just cut short)")
                problem = "a final record that fails its checksum"
            else:
                try:
                    records.append(_decode(rest[_FRAME.size:end]))
                except (ValueError, KeyError, TypeError, struct.error) as e:
                    raise StateError(f"{path}: record at byte {pos} cannot be decoded ({e})") from None
                pos += end
                continue
        if not last:
            raise StateError(f"{path}: {problem} at byte {pos}, but later segments exist (the log is corrupted)")
        return records, pos
    return records, None


class StateDir:
    """An open state directory: recover once, then `append` changes and take `snapshot`s.

    One process at a time (an flock on LOCK; a SIGKILLed holder releases it). `identity` ties the
    directory to one bundle: opening it with another bundle raises StateError.
    """

    def __init__(self, path: str | os.PathLike[str], identity: str) -> None:
        self.path = Path(path).expanduser().absolute()
        self.identity = identity
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._create_or_check()
        self.last_seq = 0
        self.snapshot_seq = 0

    def _create_or_check(self) -> None:
        created = not self.path.exists()
        if created:
            self.path.mkdir(parents=True)
            fsync_dir(self.path.parent)
        elif not self.path.is_dir():
            raise StateError(f"state_dir {self.path}: exists and is not a directory")
        self._lock_fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise StateError(f"state_dir {self.path}: in use by another process (LOCK is held)") from None
        state_file = self.path / STATE_FILE
        if state_file.exists():
            try:
                state = json.loads(state_file.read_text())
            except (OSError, json.JSONDecodeError) as e:
                self.close()
                raise StateError(f"state_dir {self.path}: {STATE_FILE} cannot be read ({e})") from None
            if state.get("format") != FORMAT or state.get("bundle") != self.identity:
                self.close()
                raise StateError(f"state_dir {self.path}: belongs to another bundle (manifest sha256 "
                                 f"{state.get('bundle')!r}, this bundle is {self.identity!r}); "
                                 "use a new state directory for this bundle")
            return
        if any(p.name not in (LOCK_FILE, f".{STATE_FILE}.tmp") for p in self.path.iterdir()):
            self.close()
            raise StateError(f"state_dir {self.path}: not empty and has no {STATE_FILE} (not an lmrec state directory)")
        tmp = self.path / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps({"format": FORMAT, "bundle": self.identity}))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.rename(tmp, state_file)
        fsync_dir(self.path)

    def _segments(self) -> list[tuple[int, Path]]:
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := _SEGMENT.match(p.name))]
        return sorted(found)

    def _snapshots(self) -> list[tuple[int, Path]]:
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := _SNAPSHOT.match(p.name)) and p.is_dir()]
        return sorted(found)

    def recover(self) -> Recovery:
        """Find the newest snapshot and read every later change; repair a torn log tail."""
        with self._lock:
            report = []
            for leftover in self.path.glob(".snapshot-*"):  # an interrupted snapshot: never renamed
                shutil.rmtree(leftover, ignore_errors=True)
                report.append(f"removed unfinished snapshot {leftover.name}")
            snapshots = self._snapshots()
            snap_seq, snap_path = snapshots[-1] if snapshots else (0, None)
            segments = self._segments()
            changes: list[Change] = []
            newest = snap_seq
            for n, (first, seg) in enumerate(segments):
                records, cut = read_segment(seg, last=n == len(segments) - 1)
                if records and records[0][0] != first:
                    raise StateError(f"{seg}: first record has seq {records[0][0]}, the file name says {first}")
                for seq, change in records:
                    if seq > snap_seq:
                        if seq != newest + 1:
                            raise StateError(f"{seg}: record seq {seq} where {newest + 1} was expected "
                                             f"(newest snapshot is {snap_seq}; records are missing)")
                        changes.append(change)
                    newest = max(newest, seq)
                if cut is not None:
                    size = seg.stat().st_size
                    os.truncate(seg, cut)
                    with open(seg, "rb+") as f:
                        os.fsync(f.fileno())
                    report.append(f"{seg.name}: truncated a torn final record ({size - cut} bytes at byte {cut}; "
                                  "it was never acknowledged)")
            if segments:  # an empty newest segment still says where numbering continues
                newest = max(newest, segments[-1][0] - 1)
            self.snapshot_seq = snap_seq
            self.last_seq = newest
            self._open_segment(segments[-1][1] if segments else None)
            return Recovery(snap_path, snap_seq, changes, report)

    def _open_segment(self, existing: Path | None) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = existing or self.path / f"wal-{self.last_seq + 1:020d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if existing is None:
            os.fsync(self._fd)
            fsync_dir(self.path)
        self._segment = path

    def append(self, change: Change) -> int:
        """Write one change and fsync it; returns its sequence number. Durable when this returns."""
        with self._lock:
            if self._fd is None:
                raise StateError(f"state_dir {self.path}: not open (call recover() first, or it was closed)")
            seq = self.last_seq + 1
            record = _encode(seq, change)
            view = memoryview(record)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
            self.last_seq = seq
            return seq

    def snapshot(self, write: Callable[[Path], None]) -> Path | None:
        """Write the current state with `write(dir)` as snapshot-<last seq>, then compact the log.

        The caller must keep changes out while this runs (the Recommender holds its write lock).
        Returns the snapshot directory, or None when nothing changed since the last one.
        """
        with self._lock:
            seq = self.last_seq
            if seq == self.snapshot_seq:
                return None
            target = self.path / f"snapshot-{seq:020d}"
            with atomic_dir(target, overwrite=True) as tmp:
                write(tmp)
                (tmp / SNAPSHOT_META).write_text(json.dumps({"seq": seq, "bundle": self.identity}))
            # The snapshot is durable: start a new segment, then drop everything it covers.
            self._open_segment(None)
            for _, seg in self._segments():
                if seg != self._segment:
                    seg.unlink()
            for snap_seq, snap in self._snapshots():
                if snap_seq < seq:
                    shutil.rmtree(snap, ignore_errors=True)
            fsync_dir(self.path)
            self.snapshot_seq = seq
            return target

    def moved_to(self, path: Path) -> None:
        """The directory was renamed to `path` while open (open files follow it; names must too)."""
        with self._lock:
            self.path = Path(path)
            self._segment = self.path / self._segment.name

    def log_bytes(self) -> int:
        """Bytes of log written since the last snapshot (to decide when to take the next one)."""
        return sum(p.stat().st_size for _, p in self._segments())

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None


def open_state(path: str | os.PathLike[str], identity: str) -> tuple[StateDir, Recovery]:
    """Open (creating if needed) the state directory at `path` and recover it."""
    state = StateDir(path, identity)
    try:
        return state, state.recover()
    except BaseException:
        state.close()
        raise


__all__ = ["StateDir", "StateError", "Upsert", "Delete", "Change", "Recovery", "open_state", "read_segment"]

