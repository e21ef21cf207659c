"""Item tables in, vector tables out: the files offline pipelines read and write.

Items come from JSONL, CSV or Parquet, one item per row: an `id` and either a `text` or the
fields of the bundle's text template. They are read in chunks, never whole, so a catalogue of any
size streams in flat memory. Vectors go to Parquet (`id` string, `vector` list<float32>) or to
`.npy` plus a `.ids.txt` sidecar (one id per line), chosen by the file's suffix.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import DataError, LmrecError, require
from ._manifest import Manifest
from .data import TextTemplate

ITEM_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
VECTOR_SUFFIXES = (".parquet", ".npy")
# Parquet key/value metadata written with vectors: which bundle and encoder produced them.
META_BUNDLE, META_ENCODER, META_PRECISION = b"lmrec.bundle_manifest_sha256", b"lmrec.encoder_sha256", b"lmrec.precision"
META_KIND = b"lmrec.vectors"  # b"text": the encoder's output; b"item": with the residuals of a trained bundle


def require_parquet(what: str) -> None:
    require("pyarrow", "parquet", what)


def item_format(path: Path, flag: str = "--items") -> str:
    fmt = ITEM_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise LmrecError(f"{flag} {path}: unknown suffix {path.suffix!r}; expected one of {', '.join(ITEM_SUFFIXES)}")
    if not path.is_file():
        raise LmrecError(f"{flag} {path}: no such file")
    if fmt == "parquet":
        require_parquet(f"{flag} {path.name} (Parquet input)")
    return fmt


def ids_path(npy: Path) -> Path:
    """The id sidecar of a `.npy` vector file: vectors.npy -> vectors.ids.txt."""
    return npy.with_suffix(".ids.txt")


@dataclass
class TextSource:
    """How a row becomes (id, text): its `text` field, else the bundle's template over its fields."""

    template: TextTemplate | None
    empty: int = 0  # rows whose text was empty: their id is embedded instead
    first_empty: str = ""
    _checked: bool = field(default=False, repr=False)

    def __call__(self, row: Mapping[str, Any], where: str) -> tuple[str, str]:
        item = row.get("id")
        if item is None or (isinstance(item, str) and not item.strip()) or isinstance(item, (dict, list)):
            raise DataError(f"{where}: field 'id' is missing or empty (every item needs an id)")
        item = str(item)
        if "\n" in item or "\r" in item:
            raise DataError(f"{where}: field 'id' {item!r} contains a line break")
        if "text" in row:
            text = row["text"]
            if text is not None and not isinstance(text, str):
                raise DataError(f"{where}: field 'text' must be a string, got {type(text).__name__}")
            text = (text or "").strip()
        elif self.template is not None:
            if not self._checked and not any(f in row for f in self.template.fields):
                raise DataError(f"{where}: no 'text' field and none of the template fields "
                                f"({', '.join(self.template.fields)}) of the bundle")
            text = self.template.render(row)
        else:
            raise DataError(f"{where}: no 'text' field (and the bundle has no text template to build one "
                            "from other fields)")
        self._checked = True
        if not text:
            self.empty += 1
            self.first_empty = self.first_empty or where
            text = item
        return item, text


def template_of(manifest: Manifest) -> TextTemplate | None:
    """The bundle's item text template, or None when it has none that can be parsed."""
    spec = manifest.template
    if not isinstance(spec, str):
        return None
    try:
        return TextTemplate.parse(spec)
    except ValueError:
        return None


def count_rows(path: Path) -> int:
    """Rows in an item file (for progress and ETA); a fast byte scan for text formats."""
    fmt = item_format(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with open(path, "rb") as f:
        lines = sum(1 for line in f if line.strip())
    return lines - 1 if fmt == "csv" else lines


def read_items(path: Path, source: TextSource, chunk: int) -> Iterator[tuple[list[str], list[str]]]:
    """(ids, texts) in chunks of `chunk` rows, in file order."""
    fmt = item_format(path)
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[fmt](path, source)
    ids: list[str] = []
    texts: list[str] = []
    for row, where in rows:
        item, text = source(row, where)
        ids.append(item)
        texts.append(text)
        if len(ids) == chunk:
            yield ids, texts
            ids, texts = [], []
    if ids:
        yield ids, texts


def read_catalogue(path: Path, source: TextSource) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(id, text, metadata) per row, in file order; metadata is every field but `id` and `text`."""
    fmt = item_format(path)
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[fmt](path, source, all_columns=True)
    for row, where in rows:
        item, text = source(row, where)
        yield item, text, {k: v for k, v in row.items() if k not in ("id", "text")}


def _jsonl_rows(path: Path, source: TextSource, all_columns: bool = False) -> Iterator[tuple[dict[str, Any], str]]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {line_no}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path} line {line_no}: expected a JSON object, got {type(row).__name__}")
            yield row, f"{path} line {line_no}"


def _csv_rows(path: Path, source: TextSource, all_columns: bool = False) -> Iterator[tuple[dict[str, Any], str]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # long descriptions
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise DataError(f"{path}: the header has no 'id' column (columns: {reader.fieldnames})")
        for row in reader:
            if None in row:
                raise DataError(f"{path} line {reader.line_num}: more values than header columns")
            yield row, f"{path} line {reader.line_num}"


def _parquet_rows(path: Path, source: TextSource, all_columns: bool = False) -> Iterator[tuple[dict[str, Any], str]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if "id" not in names:
        raise DataError(f"{path}: no 'id' column (columns: {names})")
    wanted = names if all_columns else ["id"] + (
        ["text"] if "text" in names else [f for f in (source.template.fields if source.template else ()) if f in names])
    n = 0
    for batch in pf.iter_batches(batch_size=4096, columns=wanted):
        for row in batch.to_pylist():
            n += 1
            yield row, f"{path} row {n}"


# -- vectors ------------------------------------------------------------------------------------
def vector_format(path: Path, flag: str) -> str:
    suffix = path.suffix.lower()
    if suffix not in VECTOR_SUFFIXES:
        raise LmrecError(f"{flag} {path}: unknown suffix {path.suffix!r}; expected .parquet (id, vector) "
                         "or .npy (with a .ids.txt sidecar)")
    if suffix == ".parquet":
        require_parquet(f"{flag} {path.name} (Parquet vectors)")
    return suffix[1:]


class VectorWriter:
    """Appends (ids, vectors) batches to a Parquet or .npy(+ids) file, written under temporary
    names and renamed into place by `close()`; `abort()` leaves nothing behind."""

    def __init__(self, path: Path, dim: int, metadata: Mapping[bytes, bytes] | None = None) -> None:
        self.path, self.dim, self.count = path, dim, 0
        self.format = vector_format(path, "--out")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32()))], metadata=dict(metadata or {}))
            self._writer = pq.ParquetWriter(self._tmp, schema)
        else:
            self._ids_tmp = ids_path(path).with_name(f".{ids_path(path).name}.tmp-{os.getpid()}")
            self._npy = open(self._tmp, "wb")
            self._npy.write(b"\0" * _NPY_HEADER)
            self._ids = open(self._ids_tmp, "w", encoding="utf-8")

    def write(self, ids: list[str], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors: shape {vectors.shape}, expected ({len(ids)}, {self.dim})")
        if self.format == "parquet":
            import pyarrow as pa

            offsets = pa.array(np.arange(0, (len(ids) + 1) * self.dim, self.dim, dtype=np.int32))
            column = pa.ListArray.from_arrays(offsets, pa.array(vectors.reshape(-1)))
            self._writer.write_table(pa.table({"id": pa.array(ids, pa.string()), "vector": column},
                                              schema=self._writer.schema))
        else:
            self._npy.write(vectors.tobytes())
            self._ids.write("".join(f"{i}\n" for i in ids))
        self.count += len(ids)

    def close(self) -> Path:
        if self.format == "parquet":
            self._writer.close()
        else:
            self._npy.seek(0)
            self._npy.write(_npy_header((self.count, self.dim)))
            for f in (self._npy, self._ids):
                f.flush()
                os.fsync(f.fileno())
                f.close()
            os.replace(self._ids_tmp, ids_path(self.path))
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self.format == "parquet":
            self._writer.close()
        else:
            self._npy.close()
            self._ids.close()
            self._ids_tmp.unlink(missing_ok=True)
        self._tmp.unlink(missing_ok=True)


_NPY_HEADER = 128  # bytes reserved for the .npy header, rewritten with the final shape on close


def _npy_header(shape: tuple[int, int]) -> bytes:
    """A version 1.0 .npy header for little-endian float32 C-order `shape`, padded to _NPY_HEADER."""
    text = repr({"descr": "<f4", "fortran_order": False, "shape": shape})
    prefix = b"\x93NUMPY\x01\x00"
    body = text.encode("latin1")
    pad = _NPY_HEADER - len(prefix) - 2 - len(body) - 1
    return prefix + (_NPY_HEADER - len(prefix) - 2).to_bytes(2, "little") + body + b" " * pad + b"\n"


@dataclass
class Vectors:
    """Vectors read from a file: ids, a (n, dim) float32 array, and the Parquet metadata if any."""

    ids: list[str]
    array: np.ndarray
    metadata: dict[bytes, bytes]


def read_vectors(path: str | os.PathLike[str], flag: str = "--vectors") -> Vectors:
    """Read a vector file written by `lmrec embed` (or any Parquet with `id` and `vector` columns)."""
    path = Path(path)
    fmt = vector_format(path, flag)
    if not path.is_file():
        raise LmrecError(f"{flag} {path}: no such file")
    if fmt == "npy":
        sidecar = ids_path(path)
        if not sidecar.is_file():
            raise LmrecError(f"{flag} {path}: its id file {sidecar.name} is missing (one id per line)")
        try:
            loaded = np.load(path, mmap_mode="r")
        except ValueError as e:
            raise LmrecError(f"{flag} {path}: not a .npy array ({e})") from None
        with open(sidecar, encoding="utf-8") as f:
            ids = [line.rstrip("\n") for line in f]
        if loaded.ndim != 2 or len(ids) != len(loaded):
            raise LmrecError(f"{flag} {path}: shape {loaded.shape} does not match {len(ids)} ids in {sidecar.name}")
        return Vectors(ids, loaded, {})
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    for column in ("id", "vector"):
        if column not in names:
            raise LmrecError(f"{flag} {path}: no {column!r} column (columns: {names})")
    n = int(pf.metadata.num_rows)
    ids = []
    array: np.ndarray | None = None
    at = 0
    for batch in pf.iter_batches(batch_size=8192, columns=["id", "vector"]):
        vec = batch.column(1)
        if (
            not pa.types.is_list(vec.type)
            and not pa.types.is_fixed_size_list(vec.type)
            and not pa.types.is_large_list(vec.type)
        ):
            raise LmrecError(f"{flag} {path}: column 'vector' is {vec.type}, expected a list of floats")
        if vec.null_count:
            raise LmrecError(
                f"{flag} {path}: column 'vector' has nulls (row {at + vec.is_null().index(True).as_py() + 1})"
            )
        rows = len(batch)
        lengths = pc.list_value_length(vec).to_numpy(zero_copy_only=False)
        dim = int(lengths[0]) if rows else 0
        if array is None:
            array = np.empty((n, dim), dtype=np.float32)
        bad = np.flatnonzero(lengths != array.shape[1])
        if len(bad):
            raise LmrecError(f"{flag} {path}: row {at + int(bad[0]) + 1} has a vector of length "
                             f"{int(lengths[bad[0]])}, row 1 has {array.shape[1]} (all vectors need one length)")
        flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
        array[at:at + rows] = flat.reshape(rows, dim)
        if batch.column(0).null_count:
            raise LmrecError(
                f"{flag} {path}: column 'id' has nulls (row {at + batch.column(0).is_null().index(True).as_py() + 1})"
            )
        ids.extend(str(i) for i in batch.column(0).to_pylist())
        at += rows
    if array is None:
        raise LmrecError(f"{flag} {path}: no rows")
    return Vectors(ids, array, dict(pf.schema_arrow.metadata or {}))


__all__ = [
    "TextSource",
    "read_items",
    "read_catalogue",
    "count_rows",
    "template_of",
    "VectorWriter",
    "read_vectors",
    "Vectors",
    "ids_path",
    "item_format",
    "vector_format",
]
