"""`lmrec export`: a zero-shot bundle (ONNX encoder + catalogue vectors + index) from a base model."""

from __future__ import annotations

import argparse

from .._errors import require
from ..data import DEFAULT_SPEC
from ._args import add_parity_flags, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a base model to a zero-shot bundle (needs the train extra)",
        description="Exports the encoder to ONNX with mean pooling and L2 normalisation in the graph "
                    "(fused fp32, int8 per-channel, fp16), checks parity against PyTorch on held-out item "
                    "texts, embeds every item of the catalogue and builds the HNSW index.")
    p.add_argument("--base-model", default=None,
                   help="Hugging Face model folder or Hub id (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument(
        "--data", default=DEFAULT_SPEC, help="data spec KIND:PATH whose catalogue is embedded (default: %(default)s)"
    )
    p.add_argument("--out", required=True, help="bundle directory to create (must not exist unless --overwrite)")
    p.add_argument("--dim", type=positive_int, default=None,
                   help="reduce vectors to N dimensions with a PCA fitted on the catalogue (default: full dimension)")
    p.add_argument(
        "--max-length",
        type=positive_int,
        default=128,
        help="tokens per text; longer texts are truncated (default: %(default)s)",
    )
    add_parity_flags(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out (atomically)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch, ONNX Runtime and the index build (default: their choice, every "
                        "core; 1 is faster on a machine busy with other work)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require("torch", "train", "lmrec export")
    from lmrec.trainer import set_torch_threads
    from lmrec.trainer.export import build_zero_shot_bundle

    if args.threads is not None:
        set_torch_threads(args.threads)
    path = build_zero_shot_bundle(args.data, args.out, base_model=args.base_model, dim=args.dim,
                                  overwrite=args.overwrite, force=args.force, max_length=args.max_length,
                                  strict_parity=args.strict_parity, threads=args.threads)
    print(path)
    return 0
