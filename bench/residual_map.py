"""Could a new item's residual be predicted from its text by one linear map, instead of borrowed?

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/residual_map.py \\
        --data amazon:../shared/data/amazon-office --bundle out/quality/amazon-office-cold-s0 \\
        --seed 0 --json bench/results/residual-map/amazon-office-s0.json

A new item borrows the softmax-weighted residuals of its 10 nearest trained items by text: a pass
over every trained item per new item or text query (`Recommender.place_limit`). A ridge map
W = argmin |T W - R|² + λ n |W|² over the trained items' text vectors T and residuals R costs one
(dim x dim) product instead, whatever the table's size (the content-to-collaborative mappings of
DropoutNet and Heater are of this kind). This re-embeds a trained bundle's new items both ways
through the SDK (user model and trained items untouched), scores the mixed split's validation and
test users over the trainer's bonus grid, and chooses (rule, γ) on validation as the trainer
chooses γ (bench/borrow_rule.py).
"""

from __future__ import annotations

import json

import numpy as np
from borrow_rule import GAMMAS, WARM_COST, _grid, references  # bench/ is the script's folder
from new_items import fitted_scorers, mixed_setup

LAMBDAS = (0.003, 0.03, 0.3)


def main() -> None:
    args, data, split, ctx, _ = mixed_setup(__doc__.split("\n\n")[0])
    scorer, plain, zeroshot = fitted_scorers(args.bundle, ctx)
    rec = scorer.rec
    table = rec.catalogue.residuals
    if table is None:
        raise SystemExit(f"{args.bundle}: no residual table")
    unseen = np.array([i not in table for i in data.item_ids])  # the items the bundle's bonus lifts
    ids = [i for i in rec.item_ids() if i not in table]
    items = [rec.catalogue.get(i) for i in ids]
    texts, metas = [it.text or it.item_id for it in items], [it.metadata for it in items]
    text = rec.embed_texts(texts)
    parts, is_new, reference = references(plain, zeroshot, split, unseen)
    t, r = table.text.astype(np.float64), table.residual.astype(np.float64)
    gram, cross = t.T @ t, t.T @ r
    scale = np.trace(gram) / len(gram)
    rules: dict[str, np.ndarray | None] = {"knn": None}
    for lam in LAMBDAS:
        w = np.linalg.solve(gram + lam * scale * np.eye(len(gram)), cross)
        fit = 1 - ((t @ w - r) ** 2).sum() / ((r - r.mean(0)) ** 2).sum()
        print(f"ridge λ {lam}: in-sample R² {fit:.3f}", flush=True)
        rules[f"ridge {lam}"] = w.astype(np.float32)
    report: dict = {"data": data.name, "seed": args.seed, "bundle": args.bundle, "bonus": table.info.bonus,
                    "reference": reference, "rules": []}
    for name, w in rules.items():
        if w is None:
            rec.add_items(ids, texts, metadata=metas)  # the table's own rule: borrowing
        else:
            rec.add_items(ids, texts, vectors=text + text @ w, metadata=metas)
        row: dict = {"rule": name}
        for part, cases in parts.items():
            g = _grid(scorer, cases, unseen, table.info.bonus)
            mask = is_new[part]
            by_gamma = [{"gamma": gamma, "all": float(v.mean()), "warm": float(v[~mask].mean()),
                         "new": float(v[mask].mean())} for gamma, v in zip(GAMMAS, g["whole"], strict=True)]
            row[part] = {"among_new": float(g["among"][mask].mean()), "by_gamma": by_gamma}
        report["rules"].append(row)
        print(f"{name}: among new valid {row['valid']['among_new']:.4f} test {row['test']['among_new']:.4f}",
              flush=True)
    floor_warm = (1 - WARM_COST) * reference["valid"]["lmrec-plain"]["warm"]
    floor_new = reference["valid"]["zeroshot"]["new"]
    report["chosen"] = {}
    for name in ["knn", "any"]:
        pool = report["rules"] if name == "any" else report["rules"][:1]
        pairs = [(r, n) for r in pool for n, x in enumerate(r["valid"]["by_gamma"]) if x["warm"] >= floor_warm]
        reaching = [(r, n) for r, n in pairs if r["valid"]["by_gamma"][n]["new"] >= floor_new]
        r, n = max(reaching or pairs, key=lambda rn: rn[0]["valid"]["by_gamma"][rn[1]]["new"])
        report["chosen"][name] = {"rule": r["rule"], "gamma": GAMMAS[n], "reached_floor": bool(reaching),
                                  "valid": r["valid"]["by_gamma"][n], "test": r["test"]["by_gamma"][n]}
    print(json.dumps(report["chosen"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
