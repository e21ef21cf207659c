"""Do users get what was measured? A trained bundle's served rankings against its evaluated ones.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/served_rankings.py \\
        --data amazon:../shared/data/amazon-office --bundle out/quality/amazon-office-cold-s0 \\
        --seed 0 --json bench/results/served-rankings/amazon-office-cold-s0.json

Every quality number of bench/RESULTS.md scores a bundle with `Recommender.score_all` (what
`lmrec eval` runs). Users get `recommend` / `recommend_batch` (and gRPC `Recommend`), whose index
search is a separate path: exact or HNSW, the new-item bonus added inside it. This scores the test
users of the bundle's split (mixed for a held-out-items bundle) both ways, NDCG@10 over all, warm
and new targets, and counts users whose served top 10 differs from the evaluated one; and the same
for `recommend(user_vector=embed_user(history))`, the query a sharded catalogue sends to every
shard (docs/scaling.md), beside the mean of the history's last item vectors (`manifest.recent`),
all that the sharded recipe could send before `EmbedUser`. Paired bootstrap 95 % CIs (2 000
resamples) of served minus evaluated.
"""

from __future__ import annotations

import json

import numpy as np
from lmrec.evaluation import BundleScorer
from new_items import mixed_setup, ndcg_rows  # bench/ is the script's folder


def _ci(diff: np.ndarray, rng: np.random.Generator) -> list[float]:
    means = diff[rng.integers(0, len(diff), (2000, len(diff)))].mean(1)
    return [round(float(x), 5) for x in np.percentile(means, [2.5, 97.5])]


def _ndcg_of_lists(lists: list[list[str]], targets: list[str]) -> np.ndarray:
    return np.array([1 / np.log2(ids.index(t) + 2) if t in ids else 0.0 for ids, t in zip(lists, targets, strict=True)])


def main() -> None:
    args, data, split, ctx, new = mixed_setup(__doc__.split("\n\n")[0], warm_ok=True)
    scorer = BundleScorer(args.bundle)
    scorer.fit(ctx)
    rec = scorer.rec
    cases = split.test
    is_new = split.new_targets(cases)
    hist_ids = [[data.item_ids[i] for i in h] for h in cases.histories]
    targets = [data.item_ids[t] for t in cases.targets]
    evaluated = np.concatenate([ndcg_rows(scorer.score(cases.histories[a:a + 512]), cases.targets[a:a + 512],
                                          cases.histories[a:a + 512]) for a in range(0, len(targets), 512)])
    order = {}
    for a in range(0, len(targets), 512):
        s = scorer.score(cases.histories[a:a + 512]).astype(np.float64)
        for r, h in enumerate(cases.histories[a:a + 512]):
            s[r, h] = -np.inf
        for row in s:
            top = np.argsort(-row, kind="stable")[:10]
            order[len(order)] = [data.item_ids[j] for j in top]
    rng = np.random.default_rng(0)
    report: dict = {"data": data.name, "seed": args.seed, "bundle": args.bundle, "users": len(targets),
                    "new_targets": int(is_new.sum()), "bonus": rec.catalogue.new_item_bonus,
                    "evaluated": {"all": float(evaluated.mean()), "warm": float(evaluated[~is_new].mean()),
                                  "new": float(evaluated[is_new].mean()) if is_new.any() else None}}
    recent = rec.manifest.recent
    for path in ("exact", "ann", "user_vector", "mean_of_items"):
        if path == "user_vector":
            lists = [[r.item_id for r in rec.recommend(user_vector=rec.embed_user(h), exclude=h, k=10, mode="exact")]
                     for h in hist_ids]
        elif path == "mean_of_items":
            lists = [[r.item_id for r in rec.recommend(user_vector=rec.catalogue.vectors(h[-recent:]).mean(0),
                                                         exclude=h, k=10, mode="exact")] for h in hist_ids]
        else:
            lists = [[r.item_id for r in found] for a in range(0, len(hist_ids), 256)
                     for found in rec.recommend_batch(hist_ids[a:a + 256], k=10, mode=path)]
        served = _ndcg_of_lists(lists, targets)
        diff = served - evaluated
        differ = sum(lists[n] != order[n] for n in range(len(lists)))
        report[path] = {"all": float(served.mean()), "warm": float(served[~is_new].mean()),
                        "new": float(served[is_new].mean()) if is_new.any() else None,
                        "ratio_all": float(served.mean() / evaluated.mean()), "ci_all": _ci(diff, rng),
                        "top10_differs": differ,
                        "new_in_top10": float(np.mean([sum(new[data.item_index[i]] for i in ids) for ids in lists]))}
        print(path, json.dumps(report[path]), flush=True)
    report["evaluated"]["new_in_top10"] = float(np.mean([sum(new[data.item_index[i]] for i in ids)
                                                         for ids in order.values()]))
    print("evaluated", json.dumps(report["evaluated"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
