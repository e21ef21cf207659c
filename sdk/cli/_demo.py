"""`lmrec demo`: train, export and evaluate on the embedded synthetic data, then show recommendations."""

from __future__ import annotations

import argparse

from .._errors import require


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the main job on the embedded synthetic data: train, export, evaluate, show (needs the train extra)",
        description="Trains briefly on the synthetic default's warm split, exports the bundle to --out (replacing a "
        "previous demo bundle there), prints zero-shot vs trained test metrics (the trained bundle is "
        "scored through the SDK at int8) and a few users' histories next to their recommendations "
        "with explanations. A few minutes on a 2-core CPU.",
    )
    p.add_argument(
        "--out", default="out/demo", help="bundle directory (default: %(default)s); the report goes to OUT.eval.json"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    require("torch", "train", "lmrec demo")
    from lmrec.trainer import demo

    demo(args.out, progress=not args.quiet)
    return 0
