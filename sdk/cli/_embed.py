"""`lmrec embed`: vectors for a whole catalogue file, streaming and resumable."""

from __future__ import annotations

import argparse
import json

from .._embed import DEFAULT_CHUNK
from ._args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed", help="embed every item of a JSONL/CSV/Parquet file with a bundle's encoder",
        description="Reads items (an 'id' plus a 'text', or the fields of the bundle's text template) from "
                    "FILE.jsonl, FILE.csv or FILE.parquet and writes their vectors to OUT.parquet (id, vector) or "
                    "OUT.npy plus OUT.ids.txt. Streams in flat memory. An interrupted run resumes when the same "
                    "command is run again: finished chunks are kept, none is embedded twice.")
    p.add_argument("--bundle", required=True, help="bundle directory")
    p.add_argument("--items", required=True, help="items file: .jsonl, .csv or .parquet")
    p.add_argument("--out", required=True, help="vector file: .parquet or .npy (+ .ids.txt)")
    p.add_argument("--precision", default="auto", choices=("auto", "int8", "fp16", "fp32"),
                   help="encoder weights (default: int8 on CPU, fp16 on CUDA)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the encoder runs (default: cpu)")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="worker processes, one ONNX Runtime thread each (default: one per core, measured faster than "
                        "one process with a thread per core; 1 with --device cuda)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="ONNX Runtime intra-op threads per process (default: all cores / workers)")
    p.add_argument("--chunk", type=positive_int, default=DEFAULT_CHUNK,
                   help="items per part file, the unit of resumption (default: %(default)s)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="texts per model run (default: %(default)s)")
    p.add_argument("--item-vectors", action="store_true",
                   help="write a trained bundle's item vectors (each item with its residual, own or borrowed: what "
                        "the user model's vectors are scored against) instead of text vectors; .parquet only")
    p.add_argument("--restart", action="store_true", help="discard an interrupted run instead of resuming it")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--json", default=None, help="also write the run's report (items, items/s, …) to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._embed import embed_file

    report = embed_file(args.bundle, args.items, args.out, precision=args.precision, device=args.device,
                        workers=args.workers, threads=args.threads, chunk=args.chunk, batch_size=args.batch_size,
                        restart=args.restart, overwrite=args.overwrite, progress=not args.quiet,
                        item_vectors=args.item_vectors)
    resumed = f", {report.resumed} resumed from an earlier run" if report.resumed else ""
    kind = ", item vectors" if report.vectors == "item" else ""
    print(f"{report.out}: {report.items} items (dim {report.dim}, {report.precision}{kind}){resumed}; embedded "
          f"{report.embedded} in {report.seconds:.1f} s = {report.items_per_s:.0f} items/s")
    if report.empty_texts:
        print(f"# {report.empty_texts} item(s) had empty text: their id was embedded instead")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
    return 0
