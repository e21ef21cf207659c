"""`lmrec recommend-all`: top-k for every user of a dataset to Parquet."""

from __future__ import annotations

import argparse
import json

from .._errors import LmrecError
from .._recommend_all import DEFAULT_BATCH
from ._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend-all", help="top-k recommendations for every user of a dataset, to Parquet",
        description="Writes user_id, item_id, rank (1 = best), score for every user of --data, with the same "
                    "exclusions as `lmrec recommend` (history items are never recommended; a user with no known "
                    "history gets the most popular items). Streams: one batch of users in memory at a time.")
    p.add_argument("--bundle", required=True, help="bundle directory")
    p.add_argument("--data", required=True, help="data spec KIND:PATH whose users (and their histories) are used")
    p.add_argument("--out", required=True, help="output file (.parquet)")
    p.add_argument("-k", type=positive_int, default=50, help="recommendations per user (default: %(default)s)")
    p.add_argument(
        "--batch", type=positive_int, default=DEFAULT_BATCH, help="users per batch / row group (default: %(default)s)"
    )
    p.add_argument("--state-dir", default=None, help="state directory with upserts/deletes made on this bundle")
    p.add_argument("--mode", default="auto", choices=("auto", "exact", "ann"),
                   help="exact scores or the HNSW graph (default: auto, exact below 20k items)")
    p.add_argument(
        "--device", default="cpu", choices=("auto", "cpu", "cuda"), help="where the user model runs (default: cpu)"
    )
    p.add_argument("--threads", type=positive_int, default=None, help="index search threads (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--json", default=None, help="also write the run's report to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._recommend_all import recommend_all

    try:
        report = recommend_all(args.bundle, args.data, args.out, k=args.k, batch=args.batch, state_dir=args.state_dir,
                               device=args.device, threads=args.threads, mode=args.mode, overwrite=args.overwrite,
                               progress=not args.quiet)
    except ValueError as e:
        raise LmrecError(str(e)) from None
    print(f"{report['out']}: {report['rows']} rows for {report['users']} users (k {report['k']}) in "
          f"{report['seconds']:.1f} s = {report['users_per_s']:.0f} users/s")
    if report["skipped_history_ids"]:
        print(f"# skipped {report['skipped_history_ids']} history id(s) not in the bundle")
    if report["popular_fallback_users"]:
        print(f"# {report['popular_fallback_users']} user(s) with no known history got the most popular items")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
