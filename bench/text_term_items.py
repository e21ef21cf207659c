"""Which items the text term reaches: every item (as shipped) or new items only, at each β.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/text_term_items.py \\
        --data movielens:../shared/data/movielens-latest-small \\
        --bundle 0:out/q49/movielens-latest-small-cold-s0-wt53 --bundle 1:... \\
        --json bench/results/text-term-items/movielens-latest-small.json

The served score adds β |u| cos(r, t) to every item (t its text vector, r the text vector of the
history's last item). On warm targets it reorders warm items against the user model, on new
ones it is most of what places them. Each `--bundle SEED:PATH` (a cold or mixed bundle, every
seed of one dataset) is scored on the mixed split, fp32, with borrowed residuals and without the
bonus, at each β of the trainer's grid (the first bundle's `training.text_term.grid`) with the
term on every item, on new items only, or on new items only centred: β |u| (cos(r, t) − cos(r, t̄)),
t̄ the catalogue's mean text vector, so that the term places a new item against the others by how
much more it resembles r than an average item does, instead of lifting every new item;
`--with-centred C` adds form `both` (β on every item plus C centred on new items), `--betas` other
β than the grid's. Lines are pooled over the seeds' users: NDCG@10 on all, warm and new targets,
warm targets as a share of `lmrec-plain`'s (the same bundles with new items as their text and no
term); each row also by seed (`seeds`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from borrow_sides import parse_bundles, write_report  # bench/ is the script's folder
from lmrec.data import load_dataset
from lmrec.evaluation import BundleScorer, FitContext, evaluate, make_split

FORMS = ("every", "new", "centred")


def _scores(scorer: BundleScorer, matrix: np.ndarray, text: np.ndarray, held: np.ndarray,
            weights: tuple[float, float, float], item_ids: list[str]) -> Callable:
    """User model · items + |u| (a cos(r, t) + b cos(r, t) [t new] + c (cos(r, t) − cos(r, t̄)) [t new]),
    (a, b, c) = `weights`, r the last item's text vector, `held` marking new items."""
    mean = text.mean(axis=0)
    every, new, centred = weights

    def score(histories: list[np.ndarray]) -> np.ndarray:
        users = scorer.rec.users.vectors([[item_ids[i] for i in h] for h in histories])
        out = users @ matrix.T
        if any(weights):
            last = text[np.array([h[-1] for h in histories])]
            cos = last @ text.T
            term = every * cos + (new * cos + centred * (cos - (last @ mean)[:, None])) * held
            out += np.linalg.norm(users, axis=1, keepdims=True) * term
        return out
    return score


def _weights(form: str, beta: float, with_centred: float) -> tuple[float, float, float]:
    """(every, new, centred) of a form at β; "both": β on every item and `with_centred` centred."""
    return {"every": (beta, 0.0, 0.0), "new": (0.0, beta, 0.0), "centred": (0.0, 0.0, beta),
            "both": (beta, 0.0, with_centred)}[form]


def main() -> None:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--betas", default=None, help="comma-separated β to score (default: the first bundle's grid)")
        p.add_argument("--with-centred", type=float, default=None,
                       help="also form 'both': each β on every item plus this weight centred on new items")

    args, bundles = parse_bundles(__doc__.split("\n\n")[0], extra)
    forms = FORMS if args.with_centred is None else (*FORMS, "both")
    data = load_dataset(args.data)
    parts = args.parts.split(",")
    text_term = (BundleScorer(bundles[0][1]).manifest.training or {}).get("text_term")
    if not text_term:
        raise SystemExit(f"{bundles[0][1]}: no training.text_term in its manifest (a trained cold or mixed bundle?)")
    grid = [float(b) for b in args.betas.split(",")] if args.betas else [float(r["beta"]) for r in text_term["grid"]]
    keys = [("plain", 0.0)] + [(form, beta) for form in forms for beta in grid]
    values: dict[str, dict[tuple[str, float], list[np.ndarray]]] = {part: {k: [] for k in keys} for part in parts}
    new_masks: dict[str, list[np.ndarray]] = {part: [] for part in parts}
    for seed, path in bundles:
        split = make_split(data, "mixed", seed)
        ctx = FitContext(data, split, seed=seed, progress=False)
        served = BundleScorer(path, "fp32", threads=args.threads)
        plain = BundleScorer(path, "fp32", "lmrec-plain", new_items=False, threads=args.threads)
        for scorer in (served, plain):
            scorer.fit(ctx)
        matrix = served.rec.catalogue.matrix()[1][served.to_bundle]  # data's item order
        text = served.rec.embed_texts(data.item_texts)
        held = np.zeros(split.n_items, dtype=np.float32)
        held[split.cold_items] = 1.0
        for part in parts:
            cases = getattr(split, part)
            new_masks[part].append(split.new_targets(cases))
            values[part][("plain", 0.0)].append(evaluate(plain.score, cases, split.n_items).values["ndcg@10"])
            for form in forms:
                for beta in grid:
                    score = _scores(served, matrix, text, held, _weights(form, beta, args.with_centred or 0.0),
                                    data.item_ids)
                    values[part][(form, beta)].append(evaluate(score, cases, split.n_items).values["ndcg@10"])
        print(f"seed {seed} scored", flush=True)
    report: dict = {"data": data.name, "split": "mixed", "bundles": [list(b) for b in bundles],
                    "with_centred": args.with_centred}
    for part in parts:
        new = np.concatenate(new_masks[part])
        plain_warm = float(np.concatenate(values[part][("plain", 0.0)])[~new].mean())
        rows = []
        for form, beta in keys:
            v = np.concatenate(values[part][(form, beta)])
            row = {"form": form, "beta": beta, "all": float(v.mean()), "warm": float(v[~new].mean()),
                   "new": float(v[new].mean())}
            row["warm_share"] = row["warm"] / plain_warm
            row["seeds"] = [{"seed": seed, "warm_share": float(x[~m].mean() / y[~m].mean()), "new": float(x[m].mean())}
                            for (seed, _), x, y, m in zip(bundles, values[part][(form, beta)],
                                                           values[part][("plain", 0.0)], new_masks[part], strict=True)]
            rows.append(row)
            print(f"{part} {form:5s} β {beta:<4g} all {row['all']:.4f} warm {row['warm']:.4f} "
                  f"({row['warm_share']:.1%}) new {row['new']:.4f}", flush=True)
        report[part] = rows
    write_report(args.json, report)


if __name__ == "__main__":
    main()
