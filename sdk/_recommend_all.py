"""`lmrec recommend-all`: top-k for every user of a dataset, streamed to Parquet.

Users are scored in batches through `Recommender.recommend_batch` (the same exclusions and
fallback as `recommend`), and each batch becomes one Parquet row group, so memory holds one batch
of results whatever the number of users. The file is written under a temporary name and renamed
into place when complete.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ._bundle import read_manifest
from ._durable import check_creatable
from ._errors import LmrecError
from ._progress import progress_bar
from ._tables import require_parquet

DEFAULT_BATCH = 1024


def recommend_all(bundle_dir: str | os.PathLike[str], data_spec: str, out: str | os.PathLike[str], k: int = 50,
                  batch: int = DEFAULT_BATCH, state_dir: str | os.PathLike[str] | None = None, device: str = "cpu",
                  threads: int | None = None, mode: str = "auto", overwrite: bool = False,
                  progress: bool = True) -> dict[str, Any]:
    """Write `user_id, item_id, rank, score` (rank 1 = best) for every user of `data_spec` to `out`."""
    require_parquet("lmrec recommend-all (Parquet output)")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import Recommender
    from .data import load_dataset

    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise LmrecError(f"--out {out}: must end in .parquet")
    if out.exists() and not overwrite:
        raise LmrecError(f"--out {out}: already exists (pass --overwrite to replace it)")
    check_creatable(out, "--out")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise LmrecError(f"-k {k}: must be an integer >= 1")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch {batch!r}: must be an integer >= 1")
    read_manifest(bundle_dir)  # a wrong bundle fails before the data is read
    data = load_dataset(data_spec)
    rec = Recommender.load(bundle_dir, device=device, threads=threads, state_dir=state_dir)
    try:
        schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("rank", pa.int32()),
                            ("score", pa.float32())])
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        started = time.perf_counter()
        rows = fallback = 0
        item_ids = data.item_ids
        try:
            with pq.ParquetWriter(tmp, schema) as writer, \
                    progress_bar(total=data.n_users, unit="users", desc="recommend-all", enabled=progress,
                         mininterval=1.0) as bar:
                for start in range(0, data.n_users, batch):
                    users = data.user_ids[start:start + batch]
                    histories = [[item_ids[i] for i in seq] for seq in data.sequences[start:start + batch]]
                    results = rec.recommend_batch(histories, k=k, mode=mode)
                    fallback += sum(1 for h in histories if not any(i in rec for i in h))
                    user_col, item_col, rank_col, score_col = [], [], [], []
                    for user, recs in zip(users, results, strict=True):
                        for rank, r in enumerate(recs, 1):
                            user_col.append(user)
                            item_col.append(r.item_id)
                            rank_col.append(rank)
                            score_col.append(r.score)
                    writer.write_table(pa.table([user_col, item_col, rank_col, score_col], schema=schema))
                    rows += len(user_col)
                    bar.update(len(users))
            os.replace(tmp, out)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        seconds = time.perf_counter() - started
        return {"out": str(out), "users": data.n_users, "rows": rows, "k": k, "seconds": round(seconds, 3),
                "users_per_s": round(data.n_users / max(seconds, 1e-9), 1),
                "skipped_history_ids": rec.skipped_history_ids, "popular_fallback_users": fallback}
    finally:
        rec.close()


__all__ = ["recommend_all"]
