"""Checks every command runs on its arguments before any expensive work starts."""

from __future__ import annotations

import os
from pathlib import Path

from .._durable import check_creatable
from .._errors import LmrecError


def output_file(path: str | os.PathLike[str] | None, flag: str) -> None:
    """`path` can be written (a report file, replaced if it exists): not a directory, its folder
    exists or can be made and takes a new file."""
    if path is None:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise LmrecError(f"{flag} {target}: is a directory (expected a file to write)")
    check_creatable(target, flag)


def bundle_dir(path: str | os.PathLike[str] | None, flag: str = "--bundle") -> None:
    """`path` is a bundle directory (its manifest readable); the full checks run when it loads."""
    if path is None:
        return
    from .._bundle import read_manifest
    from .._errors import BundleError

    try:
        read_manifest(path)
    except BundleError as e:
        raise BundleError(f"{flag}: {e}") from None


__all__ = ["output_file", "bundle_dir"]
