"""`lmrec train`: self-supervised training on a split's training part, written as a bundle."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lmrec.trainer import DEFAULT_BUDGET, TEST_LIKE_SHARE, TEXT_SHARE, TRAIN_SHARE

from .._errors import LmrecError, require
from ..data import DEFAULT_SPEC
from ._args import add_parity_flags, non_negative_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="fine-tune on interaction logs and write a trained bundle (needs the train extra)",
        description="Fine-tunes the text encoder on item co-occurrence (kept if it wins on validation), then "
                    "trains the item tower (text embedding + adapter + per-item residuals, borrowed by items "
                    "without interactions) and a causal transformer user model on the training part of the "
                    "split, everything chosen on validation NDCG@10 (the test cases are never used): without "
                    "--config, a few settings are searched within --budget. Exports encoder, item vectors, "
                    "index and user_encoder.onnx as a bundle. The manifest records the data hash, split, seed, "
                    "the chosen settings and how the encoder was fine-tuned, so `lmrec eval --bundle` refuses "
                    "any other split or seed.")
    p.add_argument("--data", default=DEFAULT_SPEC, help="data spec KIND:PATH (default: %(default)s)")
    p.add_argument("--out", required=True, help="bundle directory to create (refused if it exists, unless --overwrite)")
    p.add_argument("--split", default="warm", choices=("warm", "cold", "mixed"),
                   help="which split's training part to train on; evaluate with the same --split (cold and mixed "
                        "train alike, and either evaluates the other's bundle; default: warm)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the split and of training; evaluate with the same --seed (default: 0)")
    p.add_argument(
        "--cold-share", type=float, default=0.2, help="share of items the cold split holds out (default: 0.2)"
    )
    p.add_argument(
        "--config", default=None, help="JSON file of training settings (fields of lmrec.trainer.TrainConfig); "
                                       "fixes them all: no search"
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix one setting, e.g. --set hidden=128 (repeatable; after --config; the search leaves it)")
    p.add_argument("--no-search", action="store_true",
                   help="train with the split's defaults (no cl/cooc where items are held out, unless --objectives "
                        "sets them) instead of searching a few settings on validation")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET, metavar="MINUTES",
                   help=f"time bound of training, counted from the start: encoder fine-tuning stops at "
                        f"{TEXT_SHARE * 100:.0f}%% of it, the search and user model at {TRAIN_SHARE * 100:.0f}%%, each "
                        "keeping its best so far (the user model trains at least one epoch), the test-like "
                        f"validation ends by {TEST_LIKE_SHARE * 100:.0f}%% or is skipped; export follows. A stage "
                        "the clock stops may differ run to run: the manifest's training.budget.cut names it "
                        "(default: %(default)g, a whole run on MovieLens-size data on a 2-core CPU; 0: no bound)")
    p.add_argument(
        "--base-model", default=None, help="Hugging Face model folder or Hub id (default: packaged all-MiniLM-L6-v2)"
    )
    p.add_argument("--objectives", default=None,
                   help="comma-separated self-supervised objectives: text, cl, cooc, next, mlm, or none "
                        "(default: the config's; see README)")
    p.add_argument(
        "--epochs",
        type=non_negative_int,
        default=None,
        help="maximum epochs of the user model (early stopping may end sooner)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"), help="torch device (default: cpu)")
    p.add_argument(
        "--resume", action="store_true", help="continue the interrupted run whose checkpoint is in OUT.ckpt/"
    )
    p.add_argument("--keep-checkpoints", action="store_true", help="keep OUT.ckpt/ after the bundle is written")
    p.add_argument("--plot", default=None, help="draw the validation NDCG@10 curve into this PNG")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing bundle at --out (atomically, at the end)"
    )
    add_parity_flags(p)
    p.add_argument("--threads", type=non_negative_int, default=None,
                   help="CPU threads for torch and the export's ONNX Runtime and index build (default: their "
                        "choice; 1 is faster on a machine busy with other work)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def overrides(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise LmrecError(f"--set {item!r}: expected KEY=VALUE")
        out[key.strip()] = _value(value)
    return out


def run(args: argparse.Namespace) -> int:
    require("torch", "train", "lmrec train")
    from lmrec.trainer import load_config, parse_objectives, train

    extra = overrides(args.set)
    if args.objectives is not None:
        extra["objectives"] = parse_objectives(args.objectives)
    if args.base_model is not None:
        extra["base_model"] = args.base_model
    if args.epochs is not None:
        extra["epochs"] = args.epochs
    config = load_config(args.config, **extra)
    if not 0.0 < args.cold_share < 1.0:
        raise LmrecError(f"--cold-share {args.cold_share}: must be between 0 and 1")
    if not args.budget >= 0:
        raise LmrecError(f"--budget {args.budget}: must be a number of minutes >= 0 (0: no bound)")
    result = train(args.data, args.out, split=args.split, seed=args.seed, config=config, device=args.device,
                   resume=args.resume, overwrite=args.overwrite, plot=args.plot, progress=not args.quiet,
                   cold_share=args.cold_share, keep_checkpoints=args.keep_checkpoints,
                   threads=args.threads or None, force=args.force, strict_parity=args.strict_parity,
                   search=args.config is None and not args.no_search,
                   fixed=None if args.config is not None else set(extra),
                   budget=args.budget or None)
    print(result.bundle)
    return 0
