"""The bundle: one read-only directory holding everything the SDK needs to recommend.

A bundle is only valid once its `manifest.json` exists, and the manifest is written last, after
every other file has been hashed and fsync'd, inside a temporary sibling directory that is then
renamed into place. So an interrupted export never leaves something that looks like a bundle, and
`verify_bundle` catches any byte changed afterwards. Nothing writes into an existing bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from ._durable import check_creatable, fsync_dir, fsync_tree, sha256_file
from ._errors import BundleError
from ._manifest import FileEntry, Manifest
from ._residuals import ResidualTable

M = Manifest  # file names: M.ITEMS, M.VECTORS, …


class SavableIndex(Protocol):
    """What a bundle needs of an index: its parameters and a way to save it into a directory."""

    @property
    def params(self) -> dict[str, Any]: ...

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> None: ...


def check_name(name: str) -> str:
    """A bundle-relative POSIX path that cannot escape the bundle or replace the manifest."""
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name or str(p) != name.rstrip("/"):
        raise ValueError(f"bundle file name {name!r}: must be a plain relative path inside the bundle")
    if str(p) == M.MANIFEST:
        raise ValueError(f"bundle file name {name!r}: the manifest is written by finish()")
    return str(p)


def read_manifest(path: str | os.PathLike[str]) -> tuple[Manifest, bytes]:
    """The manifest of the bundle directory `path` and its raw bytes; BundleError naming the problem."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path}: not a directory")
    mpath = path / M.MANIFEST
    if not mpath.is_file():
        raise BundleError(f"bundle {path}: {M.MANIFEST} is missing (not a bundle, or an unfinished export)")
    try:
        raw = mpath.read_bytes()
    except OSError as e:
        raise BundleError(f"bundle {path}: {M.MANIFEST} cannot be read ({e})") from None
    return Manifest.loads(raw, f"bundle {path}"), raw


def _in(name: str, selection: Collection[str]) -> bool:
    """Whether file `name` is one of `selection` or lies in a directory named there."""
    return name in selection or any(name.startswith(d.rstrip("/") + "/") for d in selection)


def _file_problems(path: Path, files: Mapping[str, FileEntry], check_hashes: bool | Collection[str]) -> list[str]:
    problems = []
    for name, entry in sorted(files.items()):
        try:
            check_name(name)
        except ValueError as e:
            problems.append(str(e))
            continue
        fpath = path / name
        if not fpath.is_file():
            problems.append(f"{name}: missing")
            continue
        size = fpath.stat().st_size
        if size != entry.bytes:
            problems.append(f"{name}: size {size} bytes, manifest says {entry.bytes}")
        elif (check_hashes is True or (check_hashes and _in(name, check_hashes))) \
                and sha256_file(fpath) != entry.sha256:
            problems.append(f"{name}: sha256 mismatch (file changed or corrupted)")
    listed = set(files) | {M.MANIFEST}
    for fpath in sorted(path.rglob("*")):
        rel = fpath.relative_to(path)
        if fpath.is_file() and rel.as_posix() not in listed and not any(part.startswith(".") for part in rel.parts):
            problems.append(f"{rel.as_posix()}: not listed in {M.MANIFEST} (bundles are read-only once written)")
    return problems


def verify_bundle(path: str | os.PathLike[str]) -> list[str]:
    """Every problem of the bundle at `path` as one line each; an empty list means it is intact."""
    path = Path(path)
    try:
        manifest, _ = read_manifest(path)
    except BundleError as e:
        return [str(e)]
    return _file_problems(path, manifest.files, check_hashes=True)


class Bundle:
    """A read-only view of a bundle directory; `Bundle.open` checks it before anything is used."""

    def __init__(self, path: Path, manifest: Manifest, sha256: str) -> None:
        self.path = path
        self.manifest = manifest
        self.sha256 = sha256  # of manifest.json: the bundle's identity (state directories are tied to it)
        self.dim = manifest.dim
        self.max_length = manifest.max_length
        self.item_ids, self.item_texts, self.item_meta = self._read_items()
        self.item_vectors = self._read_vectors()
        self.popularity: np.ndarray | None = None
        if self.has(M.POPULARITY):
            try:
                self.popularity = np.load(self.file(M.POPULARITY))
            except (ValueError, OSError) as e:
                raise BundleError(f"bundle {path}: {M.POPULARITY} cannot be read ({e})") from None
            if self.popularity.shape != (len(self.item_ids),):
                raise BundleError(f"bundle {path}: {M.POPULARITY} has shape {self.popularity.shape}, "
                                  f"expected ({len(self.item_ids)},) (one count per item)")
        self.residuals: ResidualTable | None = None
        if manifest.new_items is not None:
            if not self.has(M.RESIDUALS):
                raise BundleError(f"bundle {path}: manifest new_items is set but {M.RESIDUALS} is missing")
            self.residuals = ResidualTable.load(self.file(M.RESIDUALS), manifest.new_items, self.dim)
        elif manifest.centred_text_weight:
            raise BundleError(f"bundle {path}: user_model.centred_text_weight is set, but the manifest has no "
                              "new_items (the centred part scores the items without a residual)")

    @classmethod
    def open(cls, path: str | os.PathLike[str], verify: bool | Collection[str] = True,
             precisions: Collection[str] | None = None) -> Bundle:
        """Open the bundle at `path`, checking every listed file's presence and size.

        `verify=True` also checks every file's sha256 (under a second for a MiniLM bundle, most
        of it the encoder variants), except item encoders of precisions not in `precisions` when
        that is given (a loader skips those it will not run); a collection of names (files or
        directories such as "index") checks those plus the files this view reads itself; `False`
        checks no hashes."""
        path = Path(path)
        manifest, raw = read_manifest(path)
        if verify is True and precisions is not None:
            skip = {name for p, name in M.ENCODER_FILES.items() if p not in precisions}
            verify = {name for name in manifest.files if name not in skip}
        if verify is not True and verify is not False:
            verify = {*verify, M.ITEMS, M.VECTORS, M.TOKENIZER, M.POPULARITY, M.RESIDUALS}
        problems = _file_problems(path, manifest.files, check_hashes=verify)
        if problems:
            raise BundleError(f"bundle {path}: " + "; ".join(problems))
        for name in (M.ITEMS, M.VECTORS, M.TOKENIZER):
            if name not in manifest.files:
                raise BundleError(f"bundle {path}: {name} is not in the bundle (every bundle needs it)")
        return cls(path, manifest, hashlib.sha256(raw).hexdigest())

    def _read_items(self) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        ids, texts, metas = [], [], []
        with open(self.file(M.ITEMS), encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    ids.append(str(row["id"]))
                    texts.append(str(row["text"]))
                    metas.append(dict(row.get("meta") or {}))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise BundleError(f"bundle {self.path}: {M.ITEMS} line {line_no}: not an item row ({e})") from None
        if len(set(ids)) != len(ids):
            raise BundleError(f"bundle {self.path}: {M.ITEMS} has duplicate item ids")
        expected = self.manifest.data.items
        if expected is not None and expected != len(ids):
            raise BundleError(
                f"bundle {self.path}: {M.ITEMS} has {len(ids)} items, manifest data.items says {expected}"
            )
        return ids, texts, metas

    def _read_vectors(self) -> np.ndarray:
        try:
            vectors = np.load(self.file(M.VECTORS), mmap_mode="r")
        except (ValueError, OSError) as e:
            raise BundleError(f"bundle {self.path}: {M.VECTORS} cannot be read ({e})") from None
        if vectors.dtype != np.float32 or vectors.shape != (len(self.item_ids), self.dim):
            raise BundleError(f"bundle {self.path}: {M.VECTORS} is {vectors.dtype} {vectors.shape}, expected "
                              f"float32 ({len(self.item_ids)}, {self.dim}) (items x manifest dim)")
        return vectors

    def popularity_of(self, ids: Sequence[str]) -> np.ndarray | None:
        """The interaction counts of `ids` (0 for ids not in this bundle), or None without counts."""
        if self.popularity is None:
            return None
        counts = dict(zip(self.item_ids, self.popularity.tolist(), strict=True))
        return np.array([counts.get(i, 0) for i in ids], dtype=self.popularity.dtype)

    def has(self, name: str) -> bool:
        """Whether the bundle holds file `name`, or a directory `name` with files in it."""
        prefix = name.rstrip("/") + "/"
        return name in self.manifest.files or any(f.startswith(prefix) for f in self.manifest.files)

    def file(self, name: str) -> Path:
        """The path of file or directory `name` inside the bundle; BundleError when absent."""
        if not self.has(name):
            raise BundleError(f"bundle {self.path}: no {name} in this bundle")
        return self.path / name

    def precisions(self) -> list[str]:
        """The item encoder precisions this bundle holds."""
        return [p for p, name in M.ENCODER_FILES.items() if self.has(name)]

    def encoder_path(self, precision: str) -> Path:
        """The item encoder at `precision` ("fp32", "int8" or "fp16")."""
        if precision not in M.ENCODER_FILES:
            raise ValueError(f"precision {precision!r}: expected one of {', '.join(M.ENCODER_FILES)}")
        name = M.ENCODER_FILES[precision]
        if not self.has(name):
            raise BundleError(f"bundle {self.path}: no {precision} item encoder ({name}) in this bundle")
        return self.path / name

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, items={len(self.item_ids)}, dim={self.dim})"


class BundleWriter:
    """Builds a bundle in a hidden temporary sibling of `out_dir` and renames it into place on
    `finish`. Use it as a context manager: an exception removes the temporary directory."""

    def __init__(self, out_dir: str | os.PathLike[str], overwrite: bool = False) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self.overwrite = overwrite
        self._check_target()
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.out_dir.parent / f".{self.out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.tmp_dir.mkdir()
        self._finished = False

    def _check_target(self) -> None:
        self.check_target(self.out_dir, self.overwrite)

    @staticmethod
    def check_target(out_dir: str | os.PathLike[str], overwrite: bool = False, flag: str = "--out") -> None:
        """Whether a bundle may be written at `out_dir` (named `flag` in errors): callers check
        before any expensive work."""
        out = Path(out_dir).expanduser()
        if out.exists() and not overwrite:
            raise BundleError(f"{flag} {out}: already exists (pass --overwrite to replace it; a bundle is never "
                              "written into)")
        if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / M.MANIFEST).is_file())):
            raise BundleError(f"{flag} {out}: exists and is not a bundle; refusing to replace it")
        check_creatable(out, flag, BundleError)  # the bundle is written beside it, then renamed

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._finished:
            self.abort()

    def abort(self) -> None:
        """Remove everything written so far."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def path(self, name: str) -> Path:
        """Where to write file or directory `name` directly (its parent directory exists)."""
        target = self.tmp_dir / check_name(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def add_file(self, name: str, src_path: str | os.PathLike[str]) -> Path:
        return Path(shutil.copyfile(src_path, self.path(name)))

    def add_bytes(self, name: str, data: bytes) -> Path:
        target = self.path(name)
        target.write_bytes(data)
        return target

    def add_array(self, name: str, array: np.ndarray) -> Path:
        target = self.path(name)
        with open(target, "wb") as f:  # np.save on a path would append ".npy" to other names
            np.save(f, np.asarray(array), allow_pickle=False)
        return target

    def add_items(self, ids: Sequence[str], texts: Sequence[str], metas: Iterable[dict[str, Any]]) -> Path:
        """`items.jsonl`: one {"id", "text", "meta"} object per line, in catalogue order."""
        metas = list(metas)
        if not (len(ids) == len(texts) == len(metas)):
            raise ValueError(
                f"add_items: ids ({len(ids)}), texts ({len(texts)}) and metas ({len(metas)}) differ in length"
            )
        if len(set(ids)) != len(ids):
            raise ValueError("add_items: ids must be unique")
        target = self.path(M.ITEMS)
        write_items(target, ids, texts, metas)
        return target

    def add_catalogue(self, ids: Sequence[str], texts: Sequence[str | None], metas: Sequence[dict[str, Any]],
                      vectors: np.ndarray, index: SavableIndex, popularity: np.ndarray | None) -> None:
        """items.jsonl, item_vectors.npy, index/ and (when given) popularity.npy, in `ids` order."""
        self.add_items(ids, [t or "" for t in texts], metas)
        self.add_array(M.VECTORS, vectors)
        if popularity is not None:
            self.add_array(M.POPULARITY, popularity)
        index.save(self.path(M.INDEX))

    def copy_from(self, bundle: Bundle, skip: Collection[str] = ()) -> None:
        """Copy `bundle`'s files except those in `skip` (names or directories)."""
        for name in bundle.manifest.files:
            if not _in(name, skip):
                self.add_file(name, bundle.path / name)

    def finish(self, manifest: Manifest) -> Path:
        """Hash and fsync every file, write the manifest last, and rename the bundle into place."""
        if self._finished:
            raise BundleError(f"bundle {self.out_dir}: finish() was already called")
        files = {}
        for fpath in sorted(p for p in self.tmp_dir.rglob("*") if p.is_file()):
            rel = fpath.relative_to(self.tmp_dir).as_posix()
            if rel == M.MANIFEST:
                raise BundleError(f"bundle {self.out_dir}: {M.MANIFEST} must only be written by finish()")
            files[rel] = FileEntry(sha256_file(fpath), fpath.stat().st_size)
        final = manifest.replace(files=files, format_version=manifest.format_needed())
        (self.tmp_dir / M.MANIFEST).write_text(final.dumps(), encoding="utf-8")
        fsync_tree(self.tmp_dir)
        self._check_target()
        old = None
        if self.out_dir.exists():
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(self.out_dir, old)
        os.rename(self.tmp_dir, self.out_dir)
        fsync_dir(self.out_dir.parent)
        self._finished = True
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.out_dir


def write_items(
    path: Path, ids: Sequence[str], texts: Sequence[str | None], metas: Iterable[Mapping[str, Any]]
) -> None:
    """One {"id", "text", "meta"} JSON object per line (bundles and state snapshots alike)."""
    with open(path, "w", encoding="utf-8") as f:
        for item, text, meta in zip(ids, texts, metas, strict=True):
            f.write(json.dumps({"id": str(item), "text": text, "meta": meta}, ensure_ascii=False, default=str) + "\n")


def read_items(path: Path) -> dict[str, tuple[str | None, dict[str, Any]]]:
    """What `write_items` wrote: id -> (text, metadata), in file order."""
    items = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                items[row["id"]] = (row["text"], row["meta"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise BundleError(f"{path} line {n}: not an item row ({e})") from None
    return items


__all__ = ["Bundle", "BundleWriter", "verify_bundle", "read_manifest", "write_items", "read_items", "check_name"]
