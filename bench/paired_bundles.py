"""Two bundles on the same users, paired: A's NDCG@10 as a share of reference B's (all, warm, new targets).

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/paired_bundles.py \\
        --data amazon:../shared/data/amazon-office --split mixed \\
        --pair 0:out/quality/amazon-office-cold-s0:out/ablation/amazon-office-mixed-s0-text \\
        --pair 1:... --pair 2:... --json bench/results/borrow-paired-amazon-office.json

Separate `lmrec eval` runs give each bundle its own CI but none for the difference; two trainings
of the same seed see the same users, so the difference per user is what to bootstrap. Each
`--pair SEED:A:B` is one seed (its own split); the pooled line resamples users within each seed
(2 000 resamples) and compares the means over all seeds' users: the ratio A / B and A - B.
Both bundles score through the SDK at their default precision, as `lmrec eval --methods lmrec`;
`--bonus G` scores A with new-item bonus G instead of its manifest's (0: what training alone did).
B may be `zeroshot`: the untrained encoder as `lmrec eval --methods zeroshot` scores it, fitted on
that seed's split (pooled over seeds, the paired CI that one `lmrec eval` per seed cannot give),
or `plain`: bundle A with its new-item rules off, as `lmrec eval --methods lmrec-plain` scores it
(fp32; issue 12's warm-target limit, pooled).
`--history` adds the warm-target users whose history holds a held-out item and those whose history
does not, and every line gives the mean number of held-out items in each bundle's top 10.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from lmrec.data import load_dataset
from lmrec.evaluation import BundleScorer, FitContext, MethodResult, evaluate, make_split, paired_bootstrap
from lmrec.trainer.baselines import make_baseline

RESAMPLES = 2000
ZEROSHOT = "zeroshot"  # references that are not bundles
PLAIN = "plain"


def _pooled(pairs: list[tuple[MethodResult, MethodResult]], rng: np.random.Generator) -> dict:
    """`paired_bootstrap` over several seeds' users at once, resampling within each seed."""
    a = np.concatenate([x.values["ndcg@10"] for x, _ in pairs])
    b = np.concatenate([y.values["ndcg@10"] for _, y in pairs])
    bounds = np.cumsum([0] + [x.users for x, _ in pairs])
    idx = np.concatenate([rng.integers(lo, hi, (RESAMPLES, hi - lo), dtype=np.int32)
                          for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)], axis=1)
    ma, mb = a[idx].mean(1), b[idx].mean(1)
    return _line(a, b, {"diff": float(a.mean() - b.mean()), "diff_ci95": np.percentile(ma - mb, [2.5, 97.5]).tolist(),
                        "ratio": float(a.mean() / b.mean()) if b.mean() > 0 else None,
                        "ratio_ci95": np.nanpercentile(np.where(mb > 0, ma / np.maximum(mb, 1e-12), np.nan),
                                                       [2.5, 97.5]).tolist()})


def _line(a: np.ndarray, b: np.ndarray, paired: dict) -> dict:
    return {"users": len(a), "a": float(a.mean()), "b": float(b.mean()), **paired}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="mixed", choices=("warm", "cold", "mixed"))
    p.add_argument("--pair", action="append", required=True, metavar="SEED:A:B",
                   help="a seed, the bundle under test and the reference (a bundle of that seed, zeroshot or plain); "
                        "repeat per seed")
    p.add_argument("--parts", default="valid,test")
    p.add_argument("--bonus", type=float, default=None, help="A's new-item bonus (default: its manifest's)")
    p.add_argument("--history", action="store_true",
                   help="also split warm targets by whether the history holds a held-out item")
    p.add_argument("--base-model", default=None,
                   help="the zeroshot reference's encoder (default: packaged all-MiniLM-L6-v2)")
    p.add_argument("--threads", type=int, default=None,
                   help="ONNX Runtime threads of the bundles (as `lmrec eval --threads`; default: every core)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    pairs = []
    for spec in args.pair:
        seed, a, b = spec.split(":")
        for bundle in (a, b) if b not in (ZEROSHOT, PLAIN) else (a,):
            if not (Path(bundle) / "manifest.json").is_file():
                p.error(f"--pair {spec}: {bundle} is not a bundle (no manifest.json)")
        pairs.append((int(seed), a, b))
    parts = args.parts.split(",")
    data = load_dataset(args.data)
    report: dict = {"data": data.name, "split": args.split, "pairs": [list(x) for x in pairs], "bonus_a": args.bonus}
    found: dict[str, list] = {part: [] for part in parts}  # (seed, {group: (result A, result B)}, held-out mask)
    for seed, a, b in pairs:
        split = make_split(data, args.split, seed)
        ctx = FitContext(data, split, seed=seed, progress=False)
        reference = (make_baseline(ZEROSHOT, base_model=args.base_model) if b == ZEROSHOT
                     else BundleScorer(a, "fp32", "lmrec-plain", new_items=False, threads=args.threads) if b == PLAIN
                     else BundleScorer(b, threads=args.threads))
        scorers = [BundleScorer(a, threads=args.threads), reference]
        for scorer in scorers:
            scorer.fit(ctx)
        score_a = scorers[0].score
        if args.bonus is not None:  # the shipped bonus sits on the held-out items; swap it for --bonus
            shipped = float(np.max(scorers[0].rec.catalogue.bonus_of(scorers[0].rec.item_ids())))
            held = np.zeros(split.n_items, dtype=np.float32)
            held[split.cold_items] = args.bonus - shipped
            score_a = lambda h, f=score_a, d=held: f(h) + d  # noqa: E731
        for part in parts:
            cases = getattr(split, part)
            new = split.new_targets(cases)
            masks = {"all": np.ones(len(cases), dtype=bool), "warm": ~new, "new": new}
            held = np.zeros(split.n_items, dtype=bool)
            held[split.cold_items] = True
            if args.history:
                holds = np.array([held[np.asarray(h, dtype=np.int64)].any() for h in cases.histories])
                masks |= {"warm, history holds a new item": ~new & holds, "warm, history all warm": ~new & ~holds}
            masks = {g: m for g, m in masks.items() if m.any()}  # the warm split has no new targets
            ra, rb = (evaluate(f, cases, split.n_items) for f in (score_a, scorers[1].score))
            found[part].append((seed, {g: (ra.subset(m), rb.subset(m)) for g, m in masks.items()}, held))
    rng = np.random.default_rng(0)
    for part in parts:
        per_seed = []
        for seed, groups, held in found[part]:
            row: dict = {"seed": seed}
            for g, (ra, rb) in groups.items():
                row[g] = _line(ra.values["ndcg@10"], rb.values["ndcg@10"],
                               paired_bootstrap(ra, rb, ("ndcg@10",), seed=seed)["ndcg@10"])
                row[g]["new_in_top10"] = [float(held[r.topk].sum(1).mean()) for r in (ra, rb)]
            per_seed.append(row)
        names = dict.fromkeys(g for _, groups, _ in found[part] for g in groups)  # a group may be empty on a seed
        pooled = {g: _pooled([groups[g] for _, groups, _ in found[part] if g in groups], rng) for g in names}
        report[part] = {"per_seed": per_seed, "pooled": pooled}
        for row in (*per_seed, {"seed": "pooled", **pooled}):
            shown = {g: (round(row[g]["a"], 4), round(row[g]["b"], 4), round(row[g]["ratio"] or 0, 3),
                         [round(x, 3) for x in row[g]["ratio_ci95"] or []]) for g in pooled if g in row}
            print(part, row["seed"], shown, flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
