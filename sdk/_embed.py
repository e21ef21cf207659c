"""`lmrec embed`: a whole catalogue through a bundle's encoder, streaming and resumable.

Rows are read in fixed chunks; each embedded chunk is written as one part file (atomically:
temporary name, fsync, rename) into a work directory beside the output. A run that is killed
leaves complete parts only; the next run with the same arguments skips those chunks and embeds
the rest, so no item is embedded twice and none is missed. When every chunk is done the parts are
merged into the output in input order and the work directory is removed. Memory holds a few
chunks at a time, whatever the catalogue size.

Both ways of using every core are here: one process whose ONNX Runtime uses several intra-op
threads (`workers=1`), or several worker processes with one thread each (chunks are handed out in
order, at most two per worker in flight). bench/bench_offline.py measures both; worker processes
were faster and are the default.

Thread budget: the cores are shared out once, not once per pool. Each worker process gets
`cores // workers` ONNX Runtime threads and tokenizes on its own thread (no rayon pool of one
thread per core in every worker, which would put workers x cores tokenizer threads on the
cores); numpy's BLAS does no work in a worker (normalising rows is not a matrix product).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._bundle import Bundle
from ._durable import check_creatable, fsync_dir
from ._errors import DataError, LmrecError
from ._manifest import Manifest
from ._progress import progress_bar
from ._runtime import choose_precision
from ._tables import (
    META_BUNDLE,
    META_ENCODER,
    META_KIND,
    META_PRECISION,
    TextSource,
    VectorWriter,
    count_rows,
    ids_path,
    item_format,
    read_items,
    template_of,
    vector_format,
)

DEFAULT_CHUNK = 2048
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"  # the tokenizers library reads it on every batch


def default_workers(device: str = "cpu") -> int:
    """One worker process per core on the CPU (each with one ONNX Runtime thread): on the 2-core
    host they beat one process with two intra-op threads, 70.2 vs 63.2 Office items/s
    (bench/RESULTS.md, "Offline pipelines"). One process feeds a GPU."""
    return 1 if device == "cuda" else max(1, os.cpu_count() or 1)
RUN_FILE = "run.json"


@dataclass
class EmbedReport:
    """What one `embed_file` call did."""

    out: str
    items: int  # rows in the output
    embedded: int  # embedded by this call (the rest were done by an interrupted earlier run)
    resumed: int
    seconds: float
    items_per_s: float  # embedded / seconds
    empty_texts: int  # rows whose text was empty: their id was embedded instead
    workers: int
    threads: int | None
    precision: str
    dim: int
    vectors: str = "text"  # "item": with the bundle's residuals (item_vectors=True)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def work_dir(out: str | os.PathLike[str]) -> Path:
    """Where an unfinished run keeps its parts: a hidden sibling of the output."""
    out = Path(out)
    return out.parent / f".{out.name}.lmrec-embed"


def _check_int(value: Any, name: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} {value!r}: must be an integer >= {low}")
    return value


def embed_file(bundle_dir: str | os.PathLike[str], items: str | os.PathLike[str], out: str | os.PathLike[str],
               precision: str = "auto", device: str = "cpu", workers: int | None = None,
               threads: int | None = None, chunk: int = DEFAULT_CHUNK, batch_size: int = 64,
               restart: bool = False, overwrite: bool = False, progress: bool = True,
               item_vectors: bool = False) -> EmbedReport:
    """Embed every row of `items` with the bundle's encoder and write `out` (.parquet or .npy).

    The vectors are the encoder's text vectors, what `index build` and `upsert` take.
    `item_vectors` writes what a trained bundle's catalogue holds instead (each item with its
    residual, own or borrowed), for a vector store queried with the user model's vectors; the
    Parquet metadata says which (`.npy` has none, so it takes text vectors only).
    An interrupted run resumes when called again with the same arguments (`restart` starts over).
    """
    items, out = Path(items), Path(out)
    workers = default_workers(device) if workers is None else workers
    _check_int(workers, "workers", 1)
    _check_int(chunk, "chunk", 1)
    _check_int(batch_size, "batch_size", 1)
    if threads is not None:
        _check_int(threads, "threads", 1)
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: expected cpu or cuda")
    if device == "cuda" and workers > 1:
        raise ValueError("workers: use 1 with device 'cuda' (one process feeds the GPU)")
    item_format(items)
    vector_format(out, "--out")
    check_creatable(out, "--out")
    if item_vectors and out.suffix.lower() != ".parquet":
        raise ValueError(f"--out {out}: item vectors need a .parquet file (its metadata marks them as such)")
    bundle = Bundle.open(bundle_dir)
    precision, _ = choose_precision(bundle, device, precision)
    encoder_file = bundle.encoder_path(precision)
    identity: dict[str, Any] = {
        "items": str(items.resolve()), "items_bytes": items.stat().st_size, "items_mtime_ns": items.stat().st_mtime_ns,
        "bundle": bundle.sha256, "encoder": bundle.manifest.files[Manifest.ENCODER_FILES[precision]].sha256,
        "precision": precision, "chunk": chunk, "out": out.suffix.lower(),
        "vectors": "item" if item_vectors else "text",
    }
    work = _open_work_dir(out, identity, restart, overwrite)
    done = {int(p.stem.split("-")[1]) for p in work.glob("part-*.npz")}

    threads_each = (
        threads if threads is not None else (None if workers == 1 else max(1, (os.cpu_count() or 1) // workers))
    )
    source = TextSource(template_of(bundle.manifest))
    total = count_rows(items)
    started = time.perf_counter()
    embedded = resumed = 0

    bar = progress_bar(total=total, unit="items", desc=f"embed {items.name}", enabled=progress,
               dynamic_ncols=True, mininterval=1.0)
    spec = (str(encoder_file), str(bundle.file(Manifest.TOKENIZER)), bundle.max_length, device, threads_each, False)
    n_chunks = 0

    def todo() -> Iterator[tuple[int, list[str], list[str]]]:
        """The chunks an earlier run did not finish (the others count as resumed)."""
        nonlocal n_chunks, resumed
        for idx, (ids, texts) in enumerate(read_items(items, source, chunk)):
            n_chunks = idx + 1
            if idx not in done:
                yield idx, ids, texts
                continue
            resumed += len(ids)
            bar.total = (bar.total or 0) - len(ids)
            bar.refresh()

    try:
        if workers == 1:
            _init_worker(*spec)
            for idx, ids, texts in todo():
                embedded += _embed_part(work, idx, ids, texts, batch_size)
                bar.update(len(ids))
        else:
            import multiprocessing

            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_init_worker, initargs=(*spec[:-1], True)) as pool:
                pending: set[Future[int]] = set()
                for idx, ids, texts in todo():
                    while len(pending) >= 2 * workers:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for f in finished:
                            bar.update(n := f.result())
                            embedded += n
                    pending.add(pool.submit(_embed_part, work, idx, ids, texts, batch_size))
                for f in pending:
                    bar.update(n := f.result())
                    embedded += n
    except LmrecError:
        raise
    except ValueError as e:  # the encoder rejected an input
        raise DataError(f"--items {items}: {e}") from None
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    if n_chunks == 0:
        shutil.rmtree(work)
        raise DataError(f"--items {items}: no rows")
    missing = [i for i in range(n_chunks) if not (work / _part_name(i)).is_file()]
    if missing:  # only possible if parts were removed by hand while running
        raise LmrecError(f"{work}: parts {missing[:5]} are missing; rerun the same command to embed them")
    meta = {META_BUNDLE: identity["bundle"].encode(), META_ENCODER: identity["encoder"].encode(),
            META_PRECISION: precision.encode(), META_KIND: identity["vectors"].encode()}
    table = bundle.residuals if item_vectors else None
    count = _merge(work, n_chunks, out, bundle.dim, meta, None if table is None else table.apply)
    shutil.rmtree(work)
    return EmbedReport(str(out), count, embedded, resumed, round(seconds, 3), round(embedded / max(seconds, 1e-9), 1),
                       source.empty, workers, threads_each, precision, bundle.dim, identity["vectors"])


def _open_work_dir(out: Path, identity: dict[str, Any], restart: bool, overwrite: bool) -> Path:
    work = work_dir(out)
    if restart and work.exists():
        shutil.rmtree(work)
    if work.exists():
        try:
            previous = json.loads((work / RUN_FILE).read_text())
        except (OSError, ValueError):
            previous = None
        if previous != identity:
            changed = sorted(k for k in identity if previous is None or previous.get(k) != identity[k])
            raise LmrecError(f"--out {out}: {work} holds an interrupted run with other inputs (differs in: "
                             f"{', '.join(changed)}); rerun with the same arguments to resume, or pass --restart")
        return work
    if (out.exists() or (out.suffix.lower() == ".npy" and ids_path(out).exists())) and not overwrite:
        raise LmrecError(f"--out {out}: already exists (pass --overwrite to replace it)")
    work.mkdir(parents=True)
    (work / RUN_FILE).write_text(json.dumps(identity, indent=2))
    fsync_dir(work)
    return work


_ENCODER: Any = None


def _init_worker(onnx: str, tokenizer: str, max_length: int, device: str, threads: int | None,
                 worker_process: bool) -> None:
    """Load the encoder once per process (the main one, or each worker). A worker process, whose
    environment is its own, tokenizes on its calling thread (see the thread budget above)."""
    global _ENCODER
    from ._encoder import TextEncoder

    if worker_process:
        os.environ.setdefault(TOKENIZERS_PARALLELISM, "false")

    _ENCODER = TextEncoder(onnx, tokenizer, max_length, device, threads)


def _part_name(idx: int) -> str:
    return f"part-{idx:08d}.npz"


def _embed_part(work: Path, idx: int, ids: list[str], texts: list[str], batch_size: int) -> int:
    vectors = _ENCODER.embed(texts, batch_size=batch_size)
    final = work / _part_name(idx)
    tmp = final.with_suffix(f".tmp-{os.getpid()}")  # an orphaned worker of a killed run may still write
    with open(tmp, "wb") as f:
        np.savez(f, ids=np.array(ids, dtype=str), vectors=vectors)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return len(ids)


def _id_hashes(ids: list[str]) -> np.ndarray:
    return np.fromiter((int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(), "little") for i in ids),
                       dtype=np.uint64, count=len(ids))


def _merge(work: Path, n_chunks: int, out: Path, dim: int, meta: dict[bytes, bytes],
           transform: Callable[[list[str], np.ndarray], np.ndarray] | None = None) -> int:
    """Check ids are unique across all parts, then write them to `out` in input order (each
    part's vectors through `transform`, when given)."""
    hashes = []
    for idx in range(n_chunks):
        with np.load(work / _part_name(idx), allow_pickle=False) as part:
            hashes.append(_id_hashes(part["ids"].tolist()))
    flat = np.sort(np.concatenate(hashes))
    dup = flat[1:][flat[1:] == flat[:-1]]
    if len(dup):
        seen: set[str] = set()
        for idx in range(n_chunks):
            with np.load(work / _part_name(idx), allow_pickle=False) as part:
                ids = part["ids"].tolist()
            for item, h in zip(ids, _id_hashes(ids), strict=True):
                if h in dup:
                    if item in seen:
                        raise DataError(f"--items: item id {item!r} appears more than once (ids must be unique); "
                                        "fix the file and rerun with --restart")
                    seen.add(item)
    writer = VectorWriter(out, dim, meta)
    try:
        for idx in range(n_chunks):
            with np.load(work / _part_name(idx), allow_pickle=False) as part:
                ids, vectors = part["ids"].tolist(), part["vectors"]
            writer.write(ids, vectors if transform is None else transform(ids, vectors))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    fsync_dir(out.parent)
    return writer.count


__all__ = ["embed_file", "EmbedReport", "work_dir", "default_workers", "DEFAULT_CHUNK"]
