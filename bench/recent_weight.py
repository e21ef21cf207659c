"""The last items in the user vector: what the weight `lmrec train` now chooses does, paired on
bundles trained before it existed (the same trained models, the weight applied at serving).

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/recent_weight.py \\
        --data amazon:../shared/data/amazon-office --bundle out/quality/amazon-office-cold-s0 \\
        --seed 0 --json bench/results/recent-weight/amazon-office-cold-s0.json

The served user vector is (1 - w) u + w |u| m̂, m̂ the unit mean of the last 3 item vectors
(lmrec.UserModelInfo). For each w of the trainer's grid and, where validation has new targets, the
new-item bonus by the trainer's rule for that w (warm targets at most 3 % below the same w without a
bonus; within that the least bonus whose new targets reach the untrained encoder's, else the best),
this picks w as `Trainer.calibrate` does, on validation NDCG@10, and scores test: all, warm and new
targets against the bundle as shipped (its w, 0 before stop 29, and bonus), against the untrained
encoder, and against `lmrec-plain` at the same w (new items at their text vectors, no bonus: the
mixed split's warm-target rule), with paired bootstrap 95 % CIs (2 000 resamples). A held-out-items
bundle is scored on the mixed split, a warm one on the warm split. The weights and the bonus are the
trainer's own grids (lmrec.trainer._trainer), applied through the SDK to the int8 bundle.
"""

from __future__ import annotations

import json

import numpy as np
from new_items import fitted_scorers, mixed_setup, ndcg_rows  # bench/ is the script's folder

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # the trainer's RECENT_GRID
BONUSES = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)  # its BONUS_GRID
LAST = 3
WARM_COST = 0.03


def _ci(diff: np.ndarray, rng: np.random.Generator) -> list[float]:
    means = diff[rng.integers(0, len(diff), (2000, len(diff)))].mean(1)
    return [round(float(x), 5) for x in np.percentile(means, [2.5, 97.5])]


def _three(v: np.ndarray, new: np.ndarray) -> dict:
    return {"all": float(v.mean()), "warm": float(v[~new].mean()) if (~new).any() else None,
            "new": float(v[new].mean()) if new.any() else None}


def main() -> None:
    args, data, split, ctx, _ = mixed_setup(__doc__.split("\n\n")[0], warm_ok=True)
    scorer, plain, zeroshot = fitted_scorers(args.bundle, ctx)
    rec = scorer.rec
    if rec.users.encoder is None:
        raise SystemExit(f"{args.bundle}: no user model")
    shipped_weight = rec.manifest.user_model.recent_weight if rec.manifest.user_model is not None else 0.0
    for r in (rec, plain.rec):  # the user model alone: a bundle trained since stop 29 carries its weight
        r.users.mix = None
    table = rec.catalogue.residuals
    unseen = np.array([table is not None and i not in table for i in data.item_ids], dtype=np.float64)
    matrix = rec.catalogue.matrix()[1][scorer.to_bundle].astype(np.float64)
    plain_matrix = plain.rec.catalogue.matrix()[1][plain.to_bundle].astype(np.float64)  # new items: text alone
    shipped_bonus = rec.catalogue.new_item_bonus
    parts: dict = {}
    for part in ("valid", "test"):
        cases = getattr(split, part)
        hist, targets = cases.histories, cases.targets
        ids = [[data.item_ids[i] for i in h] for h in hist]
        users = np.concatenate([rec.users.vectors(ids[a:a + 512]) for a in range(0, len(ids), 512)]).astype(np.float64)
        norm = np.linalg.norm(users, axis=1, keepdims=True)
        last = np.stack([matrix[h[-LAST:]].mean(0) for h in hist])
        last /= np.linalg.norm(last, axis=1, keepdims=True)
        zs = np.concatenate([ndcg_rows(zeroshot.score(hist[a:a + 512]), targets[a:a + 512], hist[a:a + 512])
                             for a in range(0, len(targets), 512)])
        grid, plain_grid = {}, {}
        plain_users = np.concatenate([plain.rec.users.vectors(ids[a:a + 512])
                                      for a in range(0, len(ids), 512)]).astype(np.float64)
        plain_norm = np.linalg.norm(plain_users, axis=1, keepdims=True)
        plain_last = np.stack([plain_matrix[h[-LAST:]].mean(0) for h in hist])
        plain_last /= np.linalg.norm(plain_last, axis=1, keepdims=True)
        for w in WEIGHTS:
            base = ((1 - w) * users + w * norm * last) @ matrix.T  # the trainer's units: u·v (+ bonus)
            for b in BONUSES if unseen.any() else (0.0,):
                grid[(w, b)] = ndcg_rows(base + b * unseen, targets, hist)
            plain_grid[w] = ndcg_rows(((1 - w) * plain_users + w * plain_norm * plain_last) @ plain_matrix.T,
                                      targets, hist)
        parts[part] = {"new": split.new_targets(cases), "zeroshot": zs, "grid": grid, "plain": plain_grid}
    valid, test = parts["valid"], parts["test"]
    new_v = valid["new"]
    floor = float(valid["zeroshot"][new_v].mean()) if new_v.any() else None
    tried = []
    for w in WEIGHTS:
        rows = [(b, _three(valid["grid"][(w, b)], new_v)) for b in BONUSES if (w, b) in valid["grid"]]
        if floor is None:
            b = 0.0
        else:
            allowed = [r for r in rows if r[1]["warm"] >= (1 - WARM_COST) * rows[0][1]["warm"]]
            reaching = [r for r in allowed if r[1]["new"] >= floor]
            b = (reaching[0] if reaching else max(allowed, key=lambda r: r[1]["new"]))[0]
        tried.append({"weight": w, "bonus": b, "valid": _three(valid["grid"][(w, b)], new_v)})
    chosen = max(tried, key=lambda t: t["valid"]["all"])
    new_t = test["new"]
    shipped = test["grid"][(shipped_weight, shipped_bonus)]
    served = test["grid"][(chosen["weight"], chosen["bonus"])]
    alone = test["grid"][(0.0, tried[0]["bonus"])]  # the user model alone, with the bonus the rule gives it
    rng = np.random.default_rng(0)
    report: dict = {"data": data.name, "split": split.kind, "seed": args.seed, "bundle": args.bundle,
                    "shipped_bonus": shipped_bonus, "shipped_weight": shipped_weight, "tried": tried, "chosen": chosen,
                    "test": {"chosen": _three(served, new_t), "shipped": _three(shipped, new_t),
                             "zeroshot": _three(test["zeroshot"], new_t),
                             "plain_same_weight": _three(test["plain"][chosen["weight"]], new_t),
                             "plain_shipped": _three(test["plain"][0.0], new_t),
                             "all_ratio": float(served.mean() / shipped.mean()), "ci_all": _ci(served - shipped, rng),
                             "weight_0": _three(alone, new_t), "ci_all_vs_weight_0": _ci(served - alone, rng)}}
    if new_t.any():
        report["test"]["ci_new"] = _ci(served[new_t] - shipped[new_t], rng)
        report["test"]["new_vs_zeroshot"] = float(served[new_t].mean() / test["zeroshot"][new_t].mean())
        report["test"]["shipped_new_vs_zeroshot"] = float(shipped[new_t].mean() / test["zeroshot"][new_t].mean())
    print(json.dumps({k: report[k] for k in ("chosen", "test")}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
