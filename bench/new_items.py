"""New items, apart from their calibration against warm ones: does training rank them better?

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/new_items.py \\
        --data amazon:../shared/data/amazon-office --bundle out/quality/amazon-office-cold-s0 \\
        --seed 0 --json bench/results/new-items-amazon-office-s0.json

On the mixed split's users whose target is a new item (held out of training), two rankings:
- among the new items only (history excluded): how well a method orders new items by what the
  user did, whatever it does with warm items. `lmrec` (the bundle: fine-tuned encoder, user model,
  borrowed residuals), `lmrec-plain` (the same bundle, new items at their plain text vectors) and
  `zeroshot` (the untrained encoder, its history length chosen on validation, as `lmrec eval`);
- the whole catalogue (the cold split's protocol), `lmrec` with new-item bonus γ over a grid:
  how the new-vs-warm calibration, not the ranking among new items, decides that number;
- over every user of the split: how well the margin between the best new item's score and the
  10th best warm item's (γ 0) tells the users whose target is new (ROC AUC; 0.5 = not at all):
  whether a per-user bonus could do better than one γ.
Paired bootstrap 95 % CIs over users (2 000 resamples) of the difference to `zeroshot`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lmrec.data import load_dataset
from lmrec.evaluation import BundleScorer, FitContext, make_split
from lmrec.trainer.baselines import BASELINES

GAMMAS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)


def ndcg_rows(scores: np.ndarray, targets: np.ndarray, histories: Sequence[np.ndarray] | None = None,
              allowed: np.ndarray | None = None) -> np.ndarray:
    """Per-row NDCG@10 of full rows of scores (one per case), each case's history and the items
    outside `allowed` excluded; shared by the scripts over held-out-items bundles."""
    s = scores.astype(np.float64)
    if histories is not None:
        for row, h in zip(s, histories, strict=True):
            row[h] = -np.inf
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    rank = (s > s[np.arange(len(targets)), targets][:, None]).sum(1)
    return np.where(rank < 10, 1 / np.log2(rank + 2), 0.0)


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC of `score` for the boolean labels `positive` (Mann-Whitney, ties averaged)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    return float((rankdata(score)[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(score) - n_pos)))


def _ci(diff: np.ndarray, rng: np.random.Generator) -> list[float]:
    means = diff[rng.integers(0, len(diff), (2000, len(diff)))].mean(1)
    return [round(float(x), 4) for x in np.percentile(means, [2.5, 97.5])]


def fitted_scorers(bundle: str, ctx: FitContext) -> tuple[BundleScorer, BundleScorer, Any]:
    """The bundle (`lmrec`), the same with its new-item pieces off (`lmrec-plain`) and the
    untrained encoder (`zeroshot`), fitted on the split: the three every new-item script scores."""
    scorers = (BundleScorer(bundle), BundleScorer(bundle, new_items=False), BASELINES["zeroshot"]())
    for s in scorers:
        s.fit(ctx)
    return scorers


def mixed_setup(description: str, warm_ok: bool = False,
                options: Callable[[argparse.ArgumentParser], None] | None = None
                ) -> tuple[argparse.Namespace, Any, Any, FitContext, np.ndarray]:
    """The command line of a script over a held-out-items bundle (--data, --bundle, --seed, --json;
    `options` adds the script's own) and the mixed split it is scored on: (args, data, split, fit
    context, mask of the new items). `warm_ok`: a bundle trained on the warm split is scored on it
    (no new items)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data", required=True)
    p.add_argument("--bundle", required=True,
                   help=f"a bundle trained with --split cold or mixed{' (or warm)' if warm_ok else ''}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    if options is not None:
        options(p)
    args = p.parse_args()
    data = load_dataset(args.data)
    trained_on = json.loads((Path(args.bundle) / "manifest.json").read_text())["training"]["split"]
    split = make_split(data, "warm" if warm_ok and trained_on == "warm" else "mixed", args.seed)
    new = np.zeros(split.n_items, dtype=bool)
    new[split.cold_items] = True
    return args, data, split, FitContext(data, split, seed=args.seed, progress=False), new


def main() -> None:
    args, data, split, ctx, new = mixed_setup(__doc__.split("\n\n")[0])
    scorers = {"lmrec": BundleScorer(args.bundle), "lmrec-plain": BundleScorer(args.bundle, "fp32", "lmrec-plain",
                                                                               new_items=False),
               "zeroshot": BASELINES["zeroshot"]()}
    for scorer in scorers.values():
        scorer.fit(ctx)
    gamma = scorers["lmrec"].rec.catalogue.bonus_of(scorers["lmrec"].rec.item_ids())
    shipped = float(np.max(gamma)) if not np.isscalar(gamma) else float(gamma)
    report: dict = {"data": data.name, "seed": args.seed, "bundle": args.bundle, "shipped_gamma": shipped}
    rng = np.random.default_rng(0)
    for part in ("valid", "test"):
        cases = getattr(split, part)
        rows = np.flatnonzero(split.new_targets(cases))
        hist = [cases.histories[r] for r in rows]
        targets = cases.targets[rows]
        scores = {name: np.concatenate([s.score(hist[i:i + 512]) for i in range(0, len(hist), 512)])
                  for name, s in scorers.items()}
        scores["lmrec"] = scores["lmrec"] - shipped * new  # γ 0: the grid below adds it back
        among = {name: ndcg_rows(m, targets, hist, new) for name, m in scores.items()}
        zs = among["zeroshot"]
        out: dict = {"users": len(rows), "among_new_items": {}}
        for name, values in among.items():
            out["among_new_items"][name] = {"ndcg@10": round(float(values.mean()), 4)}
            if name != "zeroshot":
                out["among_new_items"][name] |= {"vs_zeroshot": round(float(values.mean() / zs.mean()), 3),
                                                 "diff_ci95": _ci(values - zs, rng)}
        full_zs = ndcg_rows(scores["zeroshot"], targets, hist)
        out["whole_catalogue"] = {"zeroshot": round(float(full_zs.mean()), 4), "lmrec_by_gamma": []}
        for g in GAMMAS:
            values = ndcg_rows(scores["lmrec"] + g * new, targets, hist)
            out["whole_catalogue"]["lmrec_by_gamma"].append(
                {"gamma": g, "ndcg@10": round(float(values.mean()), 4),
                 "vs_zeroshot": round(float(values.mean() / full_zs.mean()), 3),
                 "diff_ci95": _ci(values - full_zs, rng)})
        every = scorers["lmrec"]
        margins = []
        for i in range(0, len(cases), 512):
            block = every.score(cases.histories[i:i + 512]) - shipped * new
            for row, h in zip(block, cases.histories[i:i + 512], strict=True):
                row = row.astype(np.float64)
                row[h] = -np.inf
                margins.append(row[new].max() - np.sort(row[~new])[-10])
        out["new_target_auc_of_margin"] = round(_auc(np.array(margins), split.new_targets(cases)), 3)
        report[part] = out
        print(part, json.dumps(out["among_new_items"]), "auc", out["new_target_auc_of_margin"], flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
