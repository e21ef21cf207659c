"""Checks every command runs on its arguments before any expensive work starts."""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import LmrecError


def output_file(path: str | os.PathLike[str] | None, flag: str, overwrite: bool = True) -> None:
    """`path` can be written: not a directory, its folder exists or can be made and is writable."""
    if path is None:
        return
    target = Path(path).expanduser()
    if target.is_dir():
        raise LmrecError(f"{flag} {target}: is a directory (expected a file to write)")
    if target.exists() and not overwrite:
        raise LmrecError(f"{flag} {target}: already exists (pass --overwrite to replace it)")
    folder = target.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        raise LmrecError(f"{flag} {target}: cannot create it ({existing} is not a writable directory)")


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
