"""`lmrec bench …`: benchmarks against the peers lmrec is measured by (extra `bench`)."""

from __future__ import annotations

import argparse

from .._errors import require
from ..data import DEFAULT_SPEC
from ._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed benchmarks (needs the train and bench extras)")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    e = bsub.add_parser(
        "embed", help="embedding speed: lmrec int8 vs sentence-transformers and FastEmbed",
        description="Embeds the item texts of --data (truncated to the bundle's max length) at batch 64 and short "
                    "queries at batch 1 with sentence-transformers (torch fp32), FastEmbed (the fp32 ONNX export, "
                    "loaded from a local folder), and lmrec (int8 and fp32); reports medians over repeats.")
    e.add_argument(
        "--data", default=DEFAULT_SPEC, help="data spec KIND:PATH whose item texts are embedded (default: %(default)s)"
    )
    e.add_argument("--json", required=True, help="write the report here")
    e.add_argument("--bundle", default=None,
                   help="bundle to benchmark (default: export the packaged base model to a temporary bundle)")
    e.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="timed repeats per engine; medians are reported (default: %(default)s)",
    )
    e.add_argument(
        "--texts", type=positive_int, default=None, help="embed a fixed sample of this many item texts (default: all)"
    )
    e.add_argument(
        "--queries",
        type=positive_int,
        default=64,
        help="short queries timed one by one at batch 1 (default: %(default)s)",
    )
    e.add_argument("--threads", type=positive_int, default=None,
                   help="intra-op threads for every engine (default: each engine's own, all cores)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(run=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    require("torch", "train", "lmrec bench embed")
    from lmrec.trainer import bench_embed, format_bench_table, write_bench_report

    result = bench_embed(args.data, args.bundle, repeats=args.repeats, texts=args.texts, queries=args.queries,
                         threads=args.threads, progress=not args.quiet)
    write_bench_report(result, args.json)
    print(format_bench_table(result))
    return 0
