"""How sharply should a new item borrow residuals? The rule's k, temperature and shrink, chosen on validation.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/borrow_rule.py \\
        --data amazon:../shared/data/amazon-office --bundle out/quality/amazon-office-cold-s0 \\
        --seed 0 --json bench/results/borrow-rule/amazon-office-s0.json

A new item borrows the softmax(cos / temperature)-weighted residuals of its k nearest trained items,
times shrink (training lends dropped items the bundle's rule, k 10, temperature 0.05, shrink 1 by
default). This re-applies other rules to the new items of a trained bundle through the SDK (the user
model and the trained items are untouched) and scores the mixed split: validation and test, warm
and new targets, the new-item bonus γ over the trainer's grid, and NDCG@10 among new items only.
Then it chooses (rule, γ) on validation by issue 12's warm rule (warm targets at most 3 % below the
same bundle with its new-item pieces off, `lmrec-plain`, where the trainer counts its 3 % from γ 0
of the same bundle; within that the pair with the most new-target NDCG@10 that reaches the
untrained encoder's, else the most new-target NDCG@10) and reports the pair's test figures beside
the bundle as shipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
from lmrec.evaluation import BundleScorer
from new_items import fitted_scorers, mixed_setup, ndcg_rows  # bench/ is the script's folder

GAMMAS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)  # the trainer's grid, to 1
RULES = ((10, 0.05), (10, 0.02), (10, 0.01), (5, 0.05), (5, 0.02), (3, 0.02))  # (k, temperature)
WARM_COST = 0.03


def _grid(scorer: BundleScorer, cases: object, new: np.ndarray, shipped: float) -> dict:
    """NDCG@10 per case for every γ, and among new items only (scores without the shipped bonus)."""
    histories, targets = cases.histories, cases.targets  # type: ignore[attr-defined]
    whole = np.zeros((len(GAMMAS), len(targets)))
    among = np.zeros(len(targets))
    for a in range(0, len(targets), 512):
        s = scorer.score(histories[a:a + 512]).astype(np.float64) - shipped * new
        for r, h in enumerate(histories[a:a + 512]):
            s[r, h] = -np.inf
        t = targets[a:a + 512]
        for g, gamma in enumerate(GAMMAS):
            whole[g, a:a + len(t)] = ndcg_rows(s + gamma * new, t)
        among[a:a + len(t)] = ndcg_rows(np.where(new, s, -np.inf), t)
    return {"whole": whole, "among": among}


def references(plain: BundleScorer, zeroshot: object, split: object, new: np.ndarray) -> tuple[dict, dict, dict]:
    """(validation and test cases, their new-target masks, `lmrec-plain`'s and zero-shot's
    NDCG@10 on warm and new targets in each): what a new-item rule is held against."""
    parts = {part: getattr(split, part) for part in ("valid", "test")}
    is_new = {part: split.new_targets(cases) for part, cases in parts.items()}  # type: ignore[attr-defined]
    reference = {}
    for part, cases in parts.items():
        ref = {"lmrec-plain": _grid(plain, cases, new, 0.0)["whole"][0],
               "zeroshot": ndcg_rows(_masked(zeroshot, cases), cases.targets)}
        reference[part] = {name: {"warm": float(v[~is_new[part]].mean()), "new": float(v[is_new[part]].mean())}
                           for name, v in ref.items()}
    return parts, is_new, reference


def _rules(text: str) -> list[tuple[int, float, float]]:
    """`10:0.05,10:0.05:0.5` → [(10, 0.05, 1.0), (10, 0.05, 0.5)] (k, temperature, shrink)."""
    try:
        rules = [[float(x) for x in r.split(":")] for r in text.split(",")]
        if any(len(r) not in (2, 3) for r in rules):
            raise ValueError
        return [(int(r[0]), r[1], r[2] if len(r) == 3 else 1.0) for r in rules]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--rules {text!r}: expected K:TEMPERATURE[:SHRINK][,...]") from None


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", type=_rules, default=[(k, t, 1.0) for k, t in RULES],
                   help="the (k, temperature, shrink) rules to score, K:T[:SHRINK] comma-separated (shrink 1 "
                        "when left out; 0 leaves new items at their text vectors); the first is the γ grid's "
                        "reference for the shipped bundle, so give the bundle's own first (default: all six)")


def main() -> None:
    args, data, split, ctx, new = mixed_setup(__doc__.split("\n\n")[0], options=_options)
    scorer, plain, zeroshot = fitted_scorers(args.bundle, ctx)
    rec = scorer.rec
    table = rec.catalogue.residuals
    if table is None:
        raise SystemExit(f"{args.bundle}: no residual table (not trained with residuals)")
    shipped = table.info
    ids = [i for i in rec.item_ids() if i not in table]
    items = [rec.catalogue.get(i) for i in ids]
    texts = [item.text or item.item_id for item in items]
    parts, is_new, reference = references(plain, zeroshot, split, new)
    report: dict = {"data": data.name, "seed": args.seed, "bundle": args.bundle,
                    "shipped": {"k": shipped.k, "temperature": shipped.temperature, "shrink": shipped.shrink,
                                "bonus": shipped.bonus},
                    "reference": reference, "rules": []}
    for k, temperature, shrink in args.rules:
        table.info = dataclasses.replace(shipped, k=k, temperature=temperature, shrink=shrink)
        rec.add_items(ids, texts, metadata=[item.metadata for item in items])  # borrows by the rule just set
        row: dict = {"k": k, "temperature": temperature, "shrink": shrink}
        for part, cases in parts.items():
            g = _grid(scorer, cases, new, shipped.bonus)
            mask = is_new[part]
            by_gamma = [{"gamma": gamma, "all": float(v.mean()), "warm": float(v[~mask].mean()),
                         "new": float(v[mask].mean())} for gamma, v in zip(GAMMAS, g["whole"], strict=True)]
            row[part] = {"among_new": float(g["among"][mask].mean()), "by_gamma": by_gamma}
        report["rules"].append(row)
        print(f"k {k} T {temperature} shrink {shrink}: among new valid {row['valid']['among_new']:.4f} test "
              f"{row['test']['among_new']:.4f}", flush=True)
    table.info = shipped
    floor_warm = (1 - WARM_COST) * reference["valid"]["lmrec-plain"]["warm"]
    floor_new = reference["valid"]["zeroshot"]["new"]
    pairs = [(r, n) for r in report["rules"] for n, x in enumerate(r["valid"]["by_gamma"]) if x["warm"] >= floor_warm]
    reaching = [(r, n) for r, n in pairs if r["valid"]["by_gamma"][n]["new"] >= floor_new]
    best = max(reaching or pairs, key=lambda rn: rn[0]["valid"]["by_gamma"][rn[1]]["new"]) if pairs else None
    at = GAMMAS.index(min(GAMMAS, key=lambda x: abs(x - shipped.bonus)))
    base = report["rules"][0]
    report["shipped_test"] = base["test"]["by_gamma"][at] | {"among_new": base["test"]["among_new"]}
    if best is not None:
        r, n = best
        report["chosen"] = {"k": r["k"], "temperature": r["temperature"], "shrink": r["shrink"], "gamma": GAMMAS[n],
                            "reached_floor": bool(reaching), "valid": r["valid"]["by_gamma"][n],
                            "test": r["test"]["by_gamma"][n] | {"among_new": r["test"]["among_new"]}}
    print(json.dumps({k: report.get(k) for k in ("shipped", "shipped_test", "chosen")}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _masked(scorer: object, cases: object) -> np.ndarray:
    """The scorer's scores with each case's history excluded."""
    histories = cases.histories  # type: ignore[attr-defined]
    out = np.concatenate([scorer.score(histories[a:a + 512]) for a in range(0, len(histories), 512)]).astype(np.float64)  # type: ignore[attr-defined]
    for r, h in enumerate(histories):
        out[r, h] = -np.inf
    return out


if __name__ == "__main__":
    main()
