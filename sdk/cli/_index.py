"""`lmrec index build`: a new bundle with an HNSW index over a vector file."""

from __future__ import annotations

import argparse
import json

from .._index import DEFAULT_PARAMS
from .._index_build import DEFAULT_QUERIES
from ._args import positive_int


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be 0 or more")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="build indexes")
    isub = p.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")
    b = isub.add_parser(
        "build", help="a new bundle with an HNSW index over a vector file (from lmrec embed)",
        description="Copies the bundle's encoders, takes the catalogue (ids, vectors) from --vectors, builds the "
                    "HNSW index, measures recall@10 against exact search on sampled items, and writes a new "
                    "bundle to --out. Texts and metadata come from --items, else from the bundle for the ids it has.")
    b.add_argument("--bundle", required=True, help="bundle whose encoders the new bundle uses")
    b.add_argument("--vectors", required=True, help="vector file: .parquet (id, vector) or .npy with .ids.txt")
    b.add_argument("--out", required=True, help="new bundle directory")
    b.add_argument("--items", default=None, help="items file (.jsonl/.csv/.parquet) with the texts and metadata")
    b.add_argument(
        "--M", type=positive_int, default=DEFAULT_PARAMS["M"], help="HNSW links per node (default: %(default)s)"
    )
    b.add_argument("--ef-construction", type=positive_int, default=DEFAULT_PARAMS["ef_construction"],
                   help="HNSW build breadth (default: %(default)s)")
    b.add_argument(
        "--ef",
        type=positive_int,
        default=DEFAULT_PARAMS["ef"],
        help="HNSW search breadth stored with the index (default: %(default)s)",
    )
    b.add_argument("--queries", type=_count, default=DEFAULT_QUERIES,
                   help="sampled items whose top 10 is compared with exact search (default: %(default)s; 0 skips)")
    b.add_argument("--threads", type=positive_int, default=None, help="build threads (default: all cores)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    b.add_argument("--json", default=None, help="also write the build report to this file")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(run=run_build)


def run_build(args: argparse.Namespace) -> int:
    from .._errors import LmrecError
    from .._index_build import build_bundle_index

    params = {"M": args.M, "ef_construction": args.ef_construction, "ef": args.ef}
    try:
        report = build_bundle_index(args.bundle, args.vectors, args.out, params, items=args.items, queries=args.queries,
                                    threads=args.threads, overwrite=args.overwrite, progress=not args.quiet)
    except ValueError as e:
        raise LmrecError(str(e)) from None
    print(f"{report['out']}: {report['items']} items, dim {report['dim']}, M {report['params']['M']}, "
          f"ef_construction {report['params']['ef_construction']}, ef {report['params']['ef']}")
    print(
        f"  build {report['build_seconds']:.1f} s ({report['items_per_s']:.0f} items/s "
        f"on {report['threads']} threads), "
        f"peak RSS {report['peak_rss_mb']:.0f} MiB"
    )
    print(f"  recall@10 vs exact {report['recall@10']:.4f} on {report['recall_queries']} sampled items")
    print(f"  index {report['index_bytes'] / 2**20:.1f} MiB, vectors {report['vectors_bytes'] / 2**20:.1f} MiB")
    if report["vectors"] == "item":
        print("  item vectors (lmrec embed --item-vectors): indexed as they are")
    if report["residuals"]:
        print(f"  residuals: {report['residuals']['own']} trained items their own, "
              f"{report['residuals']['borrowed']} borrowed (the bundle's item tower)")
    if report["items_without_text"]:
        print(f"# {report['items_without_text']} item(s) have no text (not in --items or the bundle)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0
