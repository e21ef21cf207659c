"""`lmrec recommend`: recommendations for a history, printed with titles and scores."""

from __future__ import annotations

import argparse

from .._errors import LmrecError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="recommend items for a history of item ids",
                       description="Loads a bundle (and its state directory, if given) and prints the top k "
                                   "items for the history, best first. An empty history gives the most popular items.")
    p.add_argument("--bundle", required=True, help="bundle directory")
    p.add_argument("--history", required=True, help="comma-separated item ids, oldest first (may be empty: '')")
    p.add_argument("-k", type=int, default=10, help="number of recommendations (default: %(default)s)")
    p.add_argument("--explain", action="store_true", help="also print the history items each result is based on")
    p.add_argument("--state-dir", default=None, help="state directory with upserts/deletes made on this bundle")
    p.add_argument("--strict", action="store_true", help="fail on unknown history ids instead of skipping them")
    p.add_argument(
        "--device", default="cpu", choices=("auto", "cpu", "cuda"), help="where the encoder runs (default: cpu)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .. import Recommender

    history = [h.strip() for h in args.history.split(",") if h.strip()]
    rec = Recommender.load(args.bundle, device=args.device, state_dir=args.state_dir)
    try:
        try:
            results = rec.recommend(history, k=args.k, explain=args.explain, strict=args.strict)
        except ValueError as e:
            raise LmrecError(str(e)) from None
        if results.unknown_ids:
            print(f"# skipped {len(results.unknown_ids)} unknown history id(s)")
        if len(results.unknown_ids) == len(history):
            print("# no known history items: most popular items (score = interactions, scaled to [0, 1])")
        width = max((len(r.item_id) for r in results), default=0)
        for rank, r in enumerate(results, 1):
            line = f"{rank:3d}. {r.score:8.4f}  {r.item_id:<{width}}  {rec.title(r.item_id)}"
            print(line)
            if args.explain and r.because:
                print(f"{'':15}because you liked: " + "; ".join(f"{b} ({rec.title(b)})" for b in r.because))
    finally:
        rec.close()
    return 0
