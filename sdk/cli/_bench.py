"""`lmrec bench …`: benchmarks against the peers lmrec is measured by (extra `bench`)."""

from __future__ import annotations

import argparse

from .._errors import require
from ..data import DEFAULT_SPEC
from ._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="speed benchmarks (embed: the train and bench extras; server: the server extra)")
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

    s = bsub.add_parser(
        "server", help="the gRPC server from outside: Embed, Recommend, Search, UpsertItems (needs the server extra)",
        description="Starts its own `lmrec serve` on 127.0.0.1 (a free port, a temporary state directory) and drives "
                    "it from this process with bounded load: Embed (one text per call) at 1, 8, 32 and 128 clients "
                    "against in-process embed_texts in batches of 32; Recommend (history 20, k 10) open loop at "
                    "50-800 requests/s; Search and UpsertItems (batches of 100). Every step lasts --seconds; the "
                    "whole run stops by itself (--budget).")
    s.add_argument("--bundle", required=True, help="bundle directory to serve")
    s.add_argument("--json", required=True, help="write the report here")
    s.add_argument("--seconds", type=float, default=10.0,
                   help="length of each measured step (default: %(default)s; about 12 steps)")
    s.add_argument("--budget", type=float, default=270.0,
                   help="time limit in seconds up to stopping the server; steps that would not fit are skipped "
                        "(default: %(default)s, so that the whole run ends within 5 minutes)")
    s.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="an extra `lmrec serve` argument, e.g. --serve-arg=--threads=2 (repeatable)")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(run=run_server)


def run_embed(args: argparse.Namespace) -> int:
    require("torch", "train", "lmrec bench embed")
    from lmrec.trainer import bench_embed, format_bench_table, write_bench_report

    result = bench_embed(args.data, args.bundle, repeats=args.repeats, texts=args.texts, queries=args.queries,
                         threads=args.threads, progress=not args.quiet)
    write_bench_report(result, args.json)
    print(format_bench_table(result))
    return 0


def run_server(args: argparse.Namespace) -> int:
    for module in ("grpc", "grpc_health", "grpc_reflection"):
        require(module, "server", "lmrec bench server")
    from lmrec.server import bench_server, format_server_bench

    result = bench_server(args.bundle, args.json, seconds=args.seconds, budget_s=args.budget,
                          serve_args=args.serve_arg, progress=not args.quiet)
    print(format_server_bench(result))
    return 0
