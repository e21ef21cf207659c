"""Crash-safe file helpers: fsync files and directories, publish a directory by rename.

A rename is atomic, but only durable once the parent directory is fsync'd; and the files inside
must be fsync'd before the rename, or a crash can leave a valid-looking name over empty files.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import LmrecError


def fsync_file(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make creations, renames and deletions inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root` (children before parents)."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fsync_file(os.path.join(dirpath, name))
        fsync_dir(dirpath)


def check_creatable(target: str | os.PathLike[str], flag: str, error: type[Exception] = LmrecError) -> None:
    """Raise `error` naming `flag` unless `target` (a file or directory) can be created: its nearest
    existing folder must take a new file. Tried with a file there, then removed: permission bits
    say nothing for root, nor about read-only or virtual file systems."""
    folder = Path(target).expanduser().absolute().parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise error(f"{flag} {target}: cannot create it ({existing} is not a directory)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lmrec-write-check-", dir=existing)
    except OSError as e:
        raise error(f"{flag} {target}: cannot create it ({existing} is not writable: {e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def atomic_dir(target: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target` to fill; on success fsync it and rename it to `target`.

    On error the temporary directory is removed and `target` is untouched. With `overwrite`, an
    existing `target` is moved aside first and removed after the new one is in place.
    """
    target = Path(target)
    parent = target.parent
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        old = None
        if target.exists():
            old = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
        os.rename(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def exchange_dirs(a: Path, b: Path) -> None:
    """Swap two directories: atomically with renameat2(RENAME_EXCHANGE) on Linux, else by three renames."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is not None:
            at_fdcwd, rename_exchange = -100, 2
            if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
                fsync_dir(a.parent)
                return
            err = ctypes.get_errno()
            if err not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back to renames
                raise OSError(err, f"cannot exchange {a} and {b}: {os.strerror(err)}")
    middle = a.parent / f".{a.name}.swap-{uuid.uuid4().hex[:8]}"
    os.rename(a, middle)
    os.rename(b, a)
    os.rename(middle, b)
    fsync_dir(a.parent)
