"""lmrec on Apache Spark: batch embedding and batch recommendation with `mapInPandas`.

Each Python worker process loads the bundle once (cached in this module) and runs the SDK on
every partition it is given: the same `TextEncoder` and `Recommender.recommend_batch` as one
host, so the vectors and recommendations are the ones `lmrec embed` and `lmrec recommend-all`
write. Needs the `spark` extra (pyspark, pandas, pyarrow) and Java 17 for Spark 4.

The bundle is a directory every executor can read (shared storage), or a packed bundle
(`lmrec bundle pack`) shipped with `spark-submit --files bundle.tar.zst` and named by its file
name: each executor host unpacks it once into its temporary directory.

    from lmrec.spark import embed
    vectors = embed(spark.read.parquet("items.parquet"), "bundle.tar.zst")  # id, vector
    vectors.write.parquet("vectors.parquet")
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import BundleError, LmrecError, require

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame

EMBED_SCHEMA = "id string, vector array<float>"
RECOMMEND_SCHEMA = "user_id string, item_id string, rank int, score float"

_CACHE: dict[tuple[Any, ...], Any] = {}
_CACHE_LOCK = threading.Lock()


def _require() -> None:
    for module in ("pyspark", "pandas", "pyarrow"):
        require(module, "spark", "lmrec.spark")


def local_bundle(bundle: str | os.PathLike[str]) -> Path:
    """A bundle directory on this host for `bundle`: a directory as is; a packed bundle (path, or
    a file name shipped with --files) unpacked once per host under the temporary directory."""
    path = Path(bundle)
    if path.is_dir():
        return path
    if not path.is_file():
        try:
            from pyspark import SparkFiles

            shipped = Path(SparkFiles.get(path.name))
        except Exception:  # noqa: BLE001 - no SparkContext/SparkFiles here: report the path below
            shipped = None
        if shipped is None or not shipped.exists():
            raise BundleError(f"bundle {bundle}: not a directory or file here, nor shipped with --files")
        return local_bundle(shipped)
    from ._pack import is_archive, unpack_bundle

    if not is_archive(path):
        raise BundleError(f"bundle {bundle}: a file, but not a packed bundle (.tar.zst)")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / "lmrec-bundles" / key
    if (target / "manifest.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with open(target.parent / f"{key}.lock", "w") as lock:  # one unpacker per host; the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "manifest.json").is_file():
            unpack_bundle(path, target)
    return target


def _cached(kind: str, bundle: str, *options: Any) -> Any:
    """One encoder / Recommender per (bundle, options) per Python worker process."""
    key = (kind, str(bundle), *options)
    with _CACHE_LOCK:
        if key not in _CACHE:
            path = local_bundle(bundle)
            if kind == "encoder":
                from ._bundle import Bundle
                from ._encoder import TextEncoder
                from ._tables import template_of

                precision, threads = options
                b = Bundle.open(path)
                _CACHE[key] = (TextEncoder.from_bundle(b, "cpu", precision, threads), template_of(b.manifest),
                               b.residuals)
            else:
                from ._recommender import Recommender

                (threads,) = options
                _CACHE[key] = Recommender.load(path, device="cpu", threads=threads)
        return _CACHE[key]


def embed_partitions(
    bundle: str,
    id_col: str = "id",
    text_col: str = "text",
    precision: str = "auto",
    batch_size: int = 64,
    threads: int = 1,
    item_vectors: bool = False,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function `mapInPandas` runs on each partition: rows (id, text — or the bundle
    template's fields) to (id, vector). For use with `df.mapInPandas(fn, EMBED_SCHEMA)`.
    `item_vectors`: a trained bundle's item vectors (each item with its residual, as
    `lmrec embed --item-vectors`) instead of text vectors."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        from ._tables import TextSource

        encoder, template, table = _cached("encoder", bundle, precision, threads)
        for pdf in batches:
            if id_col not in pdf.columns:
                raise LmrecError(f"id_col {id_col!r}: no such column (columns: {list(pdf.columns)})")
            frame = pdf.rename(columns={id_col: "id", text_col: "text"})
            source = TextSource(template)
            pairs = [source(row, f"row id={row.get('id')!r}") for row in frame.to_dict("records")]
            if not pairs:
                continue
            ids = [i for i, _ in pairs]
            vectors = encoder.embed([t for _, t in pairs], batch_size=batch_size)
            if item_vectors and table is not None:
                vectors = table.apply(ids, vectors)
            yield pd.DataFrame({"id": ids, "vector": list(vectors)})

    return run


def recommend_partitions(
    bundle: str,
    user_col: str = "user_id",
    history_col: str = "history",
    k: int = 50,
    mode: str = "auto",
    threads: int = 1,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function `mapInPandas` runs on each partition: (user, history of item ids, oldest
    first) to k rows (user_id, item_id, rank, score), as `Recommender.recommend_batch`."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import pandas as pd

        rec = _cached("recommender", bundle, threads)
        for pdf in batches:
            for col in (user_col, history_col):
                if col not in pdf.columns:
                    raise LmrecError(f"{col!r}: no such column (columns: {list(pdf.columns)})")
            histories = [[str(i) for i in (h if h is not None else [])] for h in pdf[history_col]]
            results = rec.recommend_batch(histories, k=k, mode=mode)
            users, items, ranks, scores = [], [], [], []
            for user, recs in zip(pdf[user_col].astype(str), results, strict=True):
                for rank, r in enumerate(recs, 1):
                    users.append(user)
                    items.append(r.item_id)
                    ranks.append(rank)
                    scores.append(r.score)
            yield pd.DataFrame({"user_id": users, "item_id": items,
                                "rank": pd.array(ranks, dtype="int32"), "score": pd.array(scores, dtype="float32")})

    return run


def embed(df: DataFrame, bundle: str, id_col: str = "id", text_col: str = "text", precision: str = "auto",
          batch_size: int = 64, threads: int = 1, item_vectors: bool = False) -> DataFrame:
    """(id, vector) for every row of `df`: `text_col`, or the bundle template's fields when `df`
    has no such column. `threads` is ONNX Runtime's per Python worker (Spark runs one per core).
    `item_vectors`: a trained bundle's item vectors instead of text vectors (see embed_partitions)."""
    _require()
    return df.mapInPandas(embed_partitions(str(bundle), id_col, text_col, precision, batch_size, threads,
                                           item_vectors), EMBED_SCHEMA)


def recommend(df: DataFrame, bundle: str, user_col: str = "user_id", history_col: str = "history", k: int = 50,
              mode: str = "auto", threads: int = 1) -> DataFrame:
    """Top-k (user_id, item_id, rank, score) per row of `df`, whose `history_col` is an array of
    item ids (oldest first): the same exclusions as `Recommender.recommend`."""
    _require()
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return df.mapInPandas(recommend_partitions(str(bundle), user_col, history_col, k, mode, threads), RECOMMEND_SCHEMA)


__all__ = ["embed", "recommend", "embed_partitions", "recommend_partitions", "local_bundle",
           "EMBED_SCHEMA", "RECOMMEND_SCHEMA"]
