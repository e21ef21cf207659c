"""`lmrec serve`: the gRPC server (extra `server`) over a bundle and a state directory."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from .._errors import LmrecError, require
from ._checks import bundle_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="serve a bundle over gRPC (lmrec.v1.Recommender, health, reflection)",
        description="Serve a bundle over gRPC. The bundle stays read-only; upserts and deletes go "
                    "to --state-dir (fsync'd before they are acknowledged). SIGTERM/SIGINT stop "
                    "gracefully; SIGHUP reloads the bundle and the token file.",
    )
    p.add_argument("--bundle", required=True, type=Path, help="bundle directory (from lmrec export)")
    p.add_argument(
        "--state-dir", required=True, type=Path, help="where writes are logged and snapshotted (created if missing)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=50051, help="port (default: %(default)s; 0 picks a free one)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", default=None,
                      help="one read-write bearer token (visible in ps: prefer --token-file or $LMREC_TOKEN)")
    auth.add_argument("--token-file", type=Path, default=None,
                      help="file of 'read TOKEN' / 'write TOKEN' lines (reread on SIGHUP)")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key (with --tls-cert)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=32,
        help="most texts per model run when batching Embed/Search (default: %(default)s)",
    )
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="longest wait for a batch to fill, in milliseconds (default: %(default)s)")
    p.add_argument(
        "--max-queue",
        type=int,
        default=4096,
        help="texts allowed to wait for the model; beyond, calls get RESOURCE_EXHAUSTED (default: %(default)s)",
    )
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port (same host)")
    p.add_argument(
        "--snapshot-interval",
        type=float,
        default=300.0,
        help="seconds between snapshots of the state directory when there were writes (default: %(default)s)",
    )
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight calls get on shutdown (default: %(default)s)"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the encoder runs")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "int8", "fp16"], help="encoder weights")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime intra-op threads per model run (default: 1 on the CPU, with one run per "
                        "core side by side; see lmrec.server's thread budget)")
    p.add_argument("--workers", type=int, default=64, help="gRPC worker threads (default: %(default)s)")
    p.add_argument("--compute-slots", type=int, default=None,
                   help="Recommend/SimilarItems calls computing at once (default: one per core)")
    p.add_argument("--max-waiting-calls", type=int, default=32,
                   help="Recommend/SimilarItems calls waiting for a slot; beyond, RESOURCE_EXHAUSTED "
                        "(default: %(default)s)")
    p.add_argument("--max-concurrent-rpcs", type=int, default=256,
                   help="calls of any kind in progress; beyond, grpc answers RESOURCE_EXHAUSTED "
                        "(default: %(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for module in ("grpc", "grpc_health", "grpc_reflection"):
        require(module, "server", "lmrec serve")
    if args.metrics_port is not None:
        require("prometheus_client", "server", "lmrec serve --metrics-port")
    from lmrec.server import ServerConfig, TokenAuth, serve

    token = args.token or os.environ.get("LMREC_TOKEN")
    auth = TokenAuth.from_file(args.token_file) if args.token_file else TokenAuth.single(token) if token else None
    bundle_dir(args.bundle)
    if args.state_dir.exists() and not args.state_dir.is_dir():
        raise LmrecError(f"--state-dir {args.state_dir}: exists and is not a directory")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s lmrec serve: %(message)s")
    config = ServerConfig(
        bundle=args.bundle, state_dir=args.state_dir, host=args.host, port=args.port, auth=auth,
        tls_cert=args.tls_cert, tls_key=args.tls_key, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, metrics_port=args.metrics_port, snapshot_interval_s=args.snapshot_interval,
        grace_s=args.grace, device=args.device, precision=args.precision, threads=args.threads,
        workers=args.workers, compute_slots=args.compute_slots, max_waiting_calls=args.max_waiting_calls,
        max_concurrent_rpcs=args.max_concurrent_rpcs,
    )
    return serve(config)
