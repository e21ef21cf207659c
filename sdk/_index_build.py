"""`lmrec index build`: a new bundle whose catalogue and HNSW index are the given vectors.

The nightly path after a model update: `lmrec embed` the catalogue with the new bundle, then build
the index over those vectors. Item ids come from the vector file, so they stay what the catalogue
says they are. The bundle's encoders and tokenizer are copied unchanged; texts and metadata come
from `--items` when given, else from the bundle for ids it already has. The index is built with
the SDK's `VectorIndex` (in chunks, for progress) and checked against exact search on sampled
queries before the bundle is written.

The vectors are the encoder's text vectors (what `lmrec embed` writes). A trained bundle's
catalogue holds item-tower vectors, so each item gets its residual here as `upsert` gives it: a
trained item its own, any other the one it borrows (sdk/_residuals.py); vectors marked as item
vectors (`lmrec embed --item-vectors`) already have theirs. Indexed as they come, a
trained Office bundle lost 27 % of its test NDCG@10 (bench/RESULTS.md, "Offline pipelines").
A bundle that ranks with a text term keeps the text vectors beside them in the index (item vectors
stand in for their own text vectors: they are all there is).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._bundle import Bundle, BundleWriter
from ._errors import DataError, LmrecError
from ._index import DEFAULT_PARAMS, VectorIndex, normalise
from ._manifest import Manifest
from ._progress import progress_bar
from ._tables import META_ENCODER, META_KIND, TextSource, read_catalogue, read_vectors, template_of

DEFAULT_QUERIES = 1000
_ADD_CHUNK = 50_000


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1 << 20 if sys.platform == "darwin" else 1 << 10), 1)


def sampled_recall(index: VectorIndex, ids: list[str], vectors: np.ndarray, queries: int, seed: int,
                   k: int = 10) -> float:
    """Mean |graph top-k ∩ exact top-k| / k over `queries` sampled items (each excluding itself)."""
    if len(ids) <= k or queries == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(ids), size=min(queries, len(ids)), replace=False)
    hits = total = 0
    for start in range(0, len(picks), 32):  # 32 queries x n items of exact scores at a time
        rows = picks[start:start + 32]
        q = np.asarray(vectors[rows])
        exclude = [{ids[r]} for r in rows]
        graph = index.search(q, k, exclude=exclude, mode="ann")
        exact = index.search(q, k, exclude=exclude, mode="exact")
        for g, e in zip(graph, exact, strict=True):
            hits += len({i for i, _ in g} & {i for i, _ in e})
            total += len(e)
    return round(hits / max(total, 1), 4)


def build_bundle_index(bundle_dir: str | os.PathLike[str], vectors_path: str | os.PathLike[str],
                       out: str | os.PathLike[str], params: dict[str, Any] | None = None,
                       items: str | os.PathLike[str] | None = None, queries: int = DEFAULT_QUERIES, seed: int = 0,
                       threads: int | None = None, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write a new bundle at `out`: `bundle_dir`'s encoders with the vectors of `vectors_path` as
    its catalogue and an HNSW index over them. Returns the build report."""

    if not isinstance(queries, int) or isinstance(queries, bool) or queries < 0:
        raise ValueError(f"queries {queries!r}: must be an integer >= 0")
    BundleWriter.check_target(out, overwrite)  # before the build, which takes minutes on a large catalogue
    bundle = Bundle.open(bundle_dir)
    vecs = read_vectors(Path(vectors_path))
    n, dim = vecs.array.shape
    if dim != bundle.dim:
        raise LmrecError(f"--vectors {vectors_path}: vectors have dim {dim}, the bundle's encoder outputs {bundle.dim}")
    made_by = vecs.metadata.get(META_ENCODER, b"").decode()
    if made_by and made_by not in bundle.manifest.encoder_sha256():
        raise LmrecError(f"--vectors {vectors_path}: embedded by another encoder (sha256 {made_by[:12]}…) than the "
                         f"bundle's; embed the catalogue with this bundle (lmrec embed --bundle {bundle_dir})")
    if n < 2:
        raise LmrecError(f"--vectors {vectors_path}: {n} vector(s); a bundle needs at least 2 items")

    texts, metas, missing_text = _catalogue_of(bundle, vecs.ids, Path(items) if items is not None else None)
    params = {**{k: DEFAULT_PARAMS[k] for k in ("M", "ef_construction", "ef")}, **(params or {})}
    # text vectors get the residuals here; item vectors (lmrec embed --item-vectors) have them
    kind = vecs.metadata.get(META_KIND, b"text").decode()
    table = bundle.residuals if kind != "item" else None
    started = time.perf_counter()
    with_text = bundle.manifest.ranks_with_text
    index = VectorIndex(dim, params, capacity=n, threads=threads, with_text=with_text)
    try:
        with progress_bar(total=n, unit="items", desc="index build", enabled=progress,
                  dynamic_ncols=True, mininterval=1.0) as bar:
            for start in range(0, n, _ADD_CHUNK):
                chunk_ids, chunk = vecs.ids[start:start + _ADD_CHUNK], vecs.array[start:start + _ADD_CHUNK]
                text = normalise(chunk, dim)
                index.add(chunk_ids, text if table is None else table.apply(chunk_ids, text),
                          text if with_text else None)
                bar.update(len(chunk_ids))
    except ValueError as e:  # duplicate ids, NaN or zero vectors: named by VectorIndex
        raise DataError(f"--vectors {vectors_path}: {e}") from None
    build_seconds = time.perf_counter() - started
    ids, matrix = index.matrix()
    recall = sampled_recall(index, ids, matrix, queries, seed)

    with BundleWriter(out, overwrite=overwrite) as writer:
        writer.copy_from(bundle, skip=(Manifest.ITEMS, Manifest.VECTORS, Manifest.POPULARITY, Manifest.INDEX))
        writer.add_catalogue(ids, texts, metas, matrix, index, bundle.popularity_of(ids))
        index_bytes = sum(f.stat().st_size for f in writer.path(Manifest.INDEX).iterdir())
        vectors_bytes = writer.path(Manifest.VECTORS).stat().st_size
        report = {
            "out": str(Path(out)), "items": n, "dim": dim, "params": index.params, "threads": index.threads,
            "build_seconds": round(build_seconds, 2), "items_per_s": round(n / max(build_seconds, 1e-9), 1),
            "recall@10": recall, "recall_queries": min(queries, n), "peak_rss_mb": peak_rss_mb(),
            "index_bytes": index_bytes, "vectors_bytes": vectors_bytes, "items_without_text": missing_text,
            "vectors": kind, "text_vectors": with_text,
            "residuals": None if table is None else {"own": (own := sum(i in table.row for i in ids)),
                                                     "borrowed": n - own},
        }
        writer.finish(bundle.manifest.derived(bundle.sha256, n, index.params, index_build={
            k: report[k] for k in ("build_seconds", "recall@10", "recall_queries")}))
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def _catalogue_of(bundle: Bundle, ids: list[str], items: Path | None) -> tuple[list[str], list[dict[str, Any]], int]:
    """Texts and metadata for `ids`: from the items file when given, else the bundle's own."""
    known: dict[str, tuple[str, dict[str, Any]]] = {}
    if items is not None:
        wanted = set(ids)
        for item, text, meta in read_catalogue(items, TextSource(template_of(bundle.manifest))):
            if item in wanted:
                known[item] = (text, meta)
    else:
        known = {i: (t, m) for i, t, m in zip(bundle.item_ids, bundle.item_texts, bundle.item_meta, strict=True)}
    texts, metas, missing = [], [], 0
    for item in ids:
        text, meta = known.get(item, ("", {}))
        missing += item not in known
        texts.append(text)
        metas.append(meta)
    return texts, metas, missing


__all__ = ["build_bundle_index", "sampled_recall", "peak_rss_mb", "DEFAULT_QUERIES"]
