"""Two bundles on the same users, paired: A's NDCG@10 as a share of reference B's (all, warm, new targets).

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/paired_bundles.py \\
        --data amazon:../shared/data/amazon-office --split mixed \\
        --pair 0:out/quality/amazon-office-cold-s0:out/ablation/amazon-office-mixed-s0-text \\
        --pair 1:... --pair 2:... --json bench/results/borrow-paired-amazon-office.json

Separate `lmrec eval` runs give each bundle its own CI but none for the difference; two trainings
of the same seed see the same users, so the difference per user is what to bootstrap. Each
`--pair SEED:A:B` is one seed (its own split); the pooled line resamples users within each seed
(2 000 resamples) and compares the means over all seeds' users: the ratio A / B and A - B.
Both bundles score through the SDK at their default precision, as `lmrec eval --methods lmrec`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from lmrec.data import load_dataset
from lmrec.evaluation import BundleScorer, FitContext, evaluate, make_split

GROUPS = ("all", "warm", "new")


def _per_user(bundle: str, ctx: FitContext, part: str) -> np.ndarray:
    scorer = BundleScorer(bundle)
    scorer.fit(ctx)
    cases = getattr(ctx.split, part)
    return evaluate(scorer.score, cases, ctx.split.n_items).values["ndcg@10"]


def _summary(pairs: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> dict:
    a = np.concatenate([x for x, _ in pairs])
    b = np.concatenate([y for _, y in pairs])
    ratios, diffs = [], []
    for _ in range(2000):  # users resampled within each seed: the seeds stay apart
        idx = np.concatenate([off + rng.integers(0, len(x), len(x))
                              for off, (x, _) in zip(np.cumsum([0] + [len(x) for x, _ in pairs[:-1]]), pairs,
                                                     strict=True)])
        ma, mb = a[idx].mean(), b[idx].mean()
        ratios.append(ma / mb if mb > 0 else np.nan)
        diffs.append(ma - mb)
    return {"users": len(a), "a": round(float(a.mean()), 4), "b": round(float(b.mean()), 4),
            "ratio": round(float(a.mean() / b.mean()), 3) if b.mean() > 0 else None,
            "ratio_ci95": [round(float(x), 3) for x in np.nanpercentile(ratios, [2.5, 97.5])],
            "diff": round(float(a.mean() - b.mean()), 4),
            "diff_ci95": [round(float(x), 4) for x in np.percentile(diffs, [2.5, 97.5])]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="mixed", choices=("warm", "cold", "mixed"))
    p.add_argument("--pair", action="append", required=True, metavar="SEED:A:B",
                   help="a seed, the bundle under test and the reference, both of that seed (repeat per seed)")
    p.add_argument("--parts", default="valid,test")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    pairs = []
    for spec in args.pair:
        seed, a, b = spec.split(":")
        for bundle in (a, b):
            if not (Path(bundle) / "manifest.json").is_file():
                p.error(f"--pair {spec}: {bundle} is not a bundle (no manifest.json)")
        pairs.append((int(seed), a, b))
    data = load_dataset(args.data)
    rng = np.random.default_rng(0)
    report: dict = {"data": data.name, "split": args.split, "pairs": [list(x) for x in pairs]}
    for part in args.parts.split(","):
        by_group: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {g: [] for g in GROUPS}
        per_seed = []
        for seed, a, b in pairs:
            split = make_split(data, args.split, seed)
            ctx = FitContext(data, split, seed=seed, progress=False)
            va, vb = _per_user(a, ctx, part), _per_user(b, ctx, part)
            new = split.new_targets(getattr(split, part))
            masks = {"all": np.ones(len(va), dtype=bool), "warm": ~new, "new": new}
            row = {"seed": seed}
            for g, m in masks.items():
                by_group[g].append((va[m], vb[m]))
                row[g] = _summary([(va[m], vb[m])], rng)
            per_seed.append(row)
            print(part, seed, {g: (row[g]["a"], row[g]["b"], row[g]["ratio"], row[g]["ratio_ci95"]) for g in GROUPS},
                  flush=True)
        pooled = {g: _summary(v, rng) for g, v in by_group.items()}
        print(part, "pooled", {g: (v["a"], v["b"], v["ratio"], v["ratio_ci95"]) for g, v in pooled.items()},
              flush=True)
        report[part] = {"per_seed": per_seed, "pooled": pooled}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
