"""Where borrowed residuals cost warm targets: in the histories the user model reads, or in the ranking.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/borrow_sides.py \\
        --data movielens:../shared/data/movielens-latest-small \\
        --bundle 0:out/q49/movielens-latest-small-cold-s0-wt53 --bundle 1:... \\
        --json bench/results/borrow-sides/movielens-latest-small.json

A new item enters a score twice: its vector in a user's history feeds the user model, and its
vector in the catalogue is ranked. Each `--bundle SEED:PATH` (a cold or mixed bundle) is scored on
the mixed split four ways, fp32, without the bonus and the text term: new items borrowing their
residual on both sides, on the history side only, on the ranking side only, or on neither (what
`lmrec eval` scores as `lmrec-plain`). Lines are NDCG@10 on all, warm and new targets, per seed
and pooled over the seeds' users, with each side's share of `neither`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from lmrec.data import load_dataset
from lmrec.evaluation import BundleScorer, FitContext, evaluate, make_split

SIDES = {"both": (True, True), "history": (True, False), "ranking": (False, True), "neither": (False, False)}


def _side_scores(users_of: BundleScorer, matrix: np.ndarray, item_ids: list[str]) -> Callable:
    """Scores of `users_of`'s user vectors (the history side) against `matrix` (the ranking side)."""
    return lambda histories: users_of.rec.users.vectors([[item_ids[i] for i in h] for h in histories]) @ matrix.T


def parse_bundles(description: str, extra: Callable[[argparse.ArgumentParser], object] | None = None,
                  ) -> tuple[argparse.Namespace, list[tuple[int, str]]]:
    """The command line of this script and bench/text_term_items.py: --data, --bundle SEED:PATH
    per seed, --parts, --threads, --json, and what `extra` adds. Returns (the arguments, the
    (seed, path) pairs)."""
    p = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(p)
    p.add_argument("--data", required=True)
    p.add_argument("--bundle", action="append", required=True, metavar="SEED:PATH", help="repeat per seed")
    p.add_argument("--parts", default="valid,test")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: every core)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    bundles = []
    for spec in args.bundle:
        seed, _, path = spec.partition(":")
        if not seed.isdigit() or not (Path(path) / "manifest.json").is_file():
            p.error(f"--bundle {spec}: expected SEED:PATH with PATH a bundle (holding manifest.json)")
        bundles.append((int(seed), path))
    return args, bundles


def write_report(path: Path | None, report: dict) -> None:
    """`--json`'s file, folders made as needed (nothing without --json)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def main() -> None:
    args, bundles = parse_bundles(__doc__.split("\n\n")[0])
    data = load_dataset(args.data)
    parts = args.parts.split(",")
    values: dict[str, dict[str, list[np.ndarray]]] = {part: {side: [] for side in SIDES} for part in parts}
    masks: dict[str, list[np.ndarray]] = {part: [] for part in parts}
    report: dict = {"data": data.name, "split": "mixed", "bundles": [list(b) for b in bundles]}
    for seed, path in bundles:
        split = make_split(data, "mixed", seed)
        ctx = FitContext(data, split, seed=seed, progress=False)
        scorers = {True: BundleScorer(path, "fp32", threads=args.threads),
                   False: BundleScorer(path, "fp32", "lmrec-plain", new_items=False, threads=args.threads)}
        for scorer in scorers.values():
            scorer.fit(ctx)
        matrices = {k: s.rec.catalogue.matrix()[1][s.to_bundle] for k, s in scorers.items()}  # data's item order
        for part in parts:
            cases = getattr(split, part)
            masks[part].append(split.new_targets(cases))
            for side, (history, ranking) in SIDES.items():
                score = _side_scores(scorers[history], matrices[ranking], data.item_ids)
                values[part][side].append(evaluate(score, cases, split.n_items).values["ndcg@10"])
    for part in parts:
        rows = []
        for n, (seed, _) in enumerate([*bundles, ("pooled", None)]):
            new = masks[part][n] if seed != "pooled" else np.concatenate(masks[part])
            row: dict = {"seed": seed}
            for side in SIDES:
                v = values[part][side][n] if seed != "pooled" else np.concatenate(values[part][side])
                row[side] = {"all": float(v.mean()), "warm": float(v[~new].mean()), "new": float(v[new].mean())}
            for side in SIDES:
                row[side]["warm_share"] = row[side]["warm"] / row["neither"]["warm"]
            rows.append(row)
            print(part, seed, "; ".join(f"{side}: all {r['all']:.4f} warm {r['warm']:.4f} ({r['warm_share']:.1%}) "
                                        f"new {r['new']:.4f}" for side, r in ((s, row[s]) for s in SIDES)), flush=True)
        report[part] = rows
    write_report(args.json, report)


if __name__ == "__main__":
    main()
