"""The text term of shipped bundles on test: each β of the trainer's grid, and the β it chose.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/text_term.py \\
        --data amazon:../shared/data/amazon-office --bundle out/q34/amazon-office-cold-s0 \\
        --seed 0 --json bench/results/text-term/amazon-office-cold-s0.json
    python bench/text_term.py summary bench/results/text-term     # means per dataset and choice
    python bench/text_term.py speed out/q34/amazon-office-cold-s0      # what the term costs a query

A trained bundle's manifest holds the trainer's grid of the text term's weight β (each with the
new-item bonus γ its validation gave it, `training.text_term.grid`) and, when β was chosen on the
test-like validation, that validation's grid (`test_like.grid`). This script scores the bundle
as `lmrec eval` scores `lmrec-fp32` at every β of the grid with its γ, on the mixed split for a
bundle trained with held-out items (all, warm and new targets), else on the warm split, and
reports the β each choice picks: `validation` (the trainer's rule on the validation grid),
`test_like` (the same rule on the test-like grid: what ships), `both` (the test-like grid's rule
among the β whose warm targets keep the rule's share on validation too; not shipped, bench/RESULTS.md
"The text term's warm rule on both validations") and β 0 (no text term), with
paired bootstrap 95 % CIs over users (2 000 resamples) against β 0 and, on new targets, against
the untrained encoder (`zeroshot`, as `lmrec eval`); `lmrec-plain` (new-item pieces and the text
term off) for the issue's warm-target check. A bundle shipped at β 0 keeps no text vectors: only
its β 0 row is scored (a choice of another β is reported, not scored). About a minute a bundle
on one core.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from lmrec.evaluation import BundleScorer
from lmrec.trainer import text_rule
from lmrec.trainer.baselines import BASELINES
from new_items import mixed_setup, ndcg_rows  # bench/ is the script's folder

CHOICES = ("beta0", "validation", "test_like", "both")


def _paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict:
    idx = rng.integers(0, len(a), (2000, len(a)))
    diff = a[idx].mean(1) - b[idx].mean(1)
    return {"ratio": round(float(a.mean() / b.mean()), 3),
            "diff_ci95": [round(float(x), 4) for x in np.percentile(diff, [2.5, 97.5])]}


def on_both(valid: list[dict], test_like: list[dict], warm_cost: float) -> int:
    """`text_rule` on the test-like grid, among the β whose validation warm targets also keep
    1 - `warm_cost` of theirs at β 0 (no new targets: `text_rule` alone)."""
    if valid[0]["warm"] is None:
        return text_rule(test_like)
    kept = {n for n, r in enumerate(valid) if r["warm"] >= (1 - warm_cost) * valid[0]["warm"]}
    return text_rule([r if n in kept else {**r, "warm": -1.0} for n, r in enumerate(test_like)])


def main() -> None:
    args, data, split, ctx, new = mixed_setup(__doc__.split("\n\n")[0], warm_ok=True)
    lm, plain, zs = BundleScorer(args.bundle, "fp32"), BundleScorer(args.bundle, "fp32", new_items=False), \
        BASELINES["zeroshot"]()
    for scorer in (lm, plain, zs):
        scorer.fit(ctx)
    manifest = lm.rec.manifest
    term = manifest.training["text_term"]  # type: ignore[index]
    grid = term["grid"]
    picked = {"beta0": 0, "validation": text_rule(grid),
              "test_like": text_rule(term["test_like"]["grid"]) if "test_like" in term else None,
              "both": on_both(grid, term["test_like"]["grid"], term["warm_cost"]) if "test_like" in term else None}
    assert grid[picked["test_like"] if picked["test_like"] is not None else picked["validation"]]["beta"] \
        == manifest.text_weight, "the manifest's β is not its grid's choice"
    cases = split.test
    hist, targets = list(cases.histories), cases.targets
    is_new = split.new_targets(cases)
    held_out = bool(is_new.any())
    table = lm.rec.catalogue.residuals

    def ndcg(scorer: object) -> np.ndarray:
        scores = np.concatenate([scorer.score(hist[i:i + 512]) for i in range(0, len(hist), 512)])  # type: ignore[attr-defined]
        return ndcg_rows(scores, targets, hist)

    def means(v: np.ndarray) -> dict:
        out = {"all": round(float(v.mean()), 4)}
        if held_out:
            out |= {"warm": round(float(v[~is_new].mean()), 4), "new": round(float(v[is_new].mean()), 4)}
        return out

    rng = np.random.default_rng(0)
    zs_ndcg, plain_ndcg = ndcg(zs), ndcg(plain)
    rows, values = [], []
    if not manifest.ranks_with_text:  # no text vectors to score another β with
        grid = grid[:1]
    for row in grid:
        lm.rec.users.text = (term["items"], row["beta"], 0.0) if row["beta"] else None
        if table is not None:
            table.info = dataclasses.replace(table.info, bonus=row["bonus"])
        values.append(ndcg(lm))
        rows.append({"beta": row["beta"], "gamma": row["bonus"], "test": means(values[-1])})
    for row, v in zip(rows, values, strict=True):
        row["vs_beta0"] = {"all": _paired(v, values[0], rng)}
        if held_out:
            row["vs_beta0"] |= {k: _paired(v[m], values[0][m], rng) for k, m in (("warm", ~is_new), ("new", is_new))}
            row["new_vs_zeroshot"] = _paired(v[is_new], zs_ndcg[is_new], rng)
            row["warm_vs_plain"] = round(float(v[~is_new].mean() / plain_ndcg[~is_new].mean()), 3)
    report = {"data": data.name, "seed": args.seed, "bundle": args.bundle, "split": split.kind,
              "trained_on": manifest.training["split"], "users": len(cases),  # type: ignore[index]
              "new_users": int(is_new.sum()),
              "picked": {k: None if n is None else term["grid"][n]["beta"] for k, n in picked.items()},
              "zeroshot": means(zs_ndcg), "plain": means(plain_ndcg), "by_beta": rows}
    print(json.dumps({k: report[k] for k in ("data", "seed", "picked", "zeroshot")}))
    for name, n in picked.items():
        if n is not None and n < len(rows):
            print(f"  {name}: {json.dumps(rows[n])}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def summary(folder: Path) -> None:
    """Per dataset and split, each choice's β and test figures, per seed and on the mean."""
    reports = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    for key in sorted({(r["data"], r["trained_on"]) for r in reports}):
        mine = [r for r in reports if (r["data"], r["trained_on"]) == key]
        print(f"\n{key[0]} ({key[1]}-trained, {mine[0]['split']} split), test NDCG@10; seeds "
              + ", ".join(str(r["seed"]) for r in mine))
        for choice in CHOICES:
            picked = [(r, x) for r in mine for x in r["by_beta"] if x["beta"] == r["picked"].get(choice)]
            if not picked:
                continue
            cells = []
            for part in ("all", "warm", "new"):
                if part in picked[0][1]["test"]:
                    cells.append(f"{part} {np.mean([x['test'][part] for _, x in picked]):.4f} "
                                 f"({np.mean([x['vs_beta0'][part]['ratio'] for _, x in picked]):.3f}× β 0)")
            line = (f"  {choice:10s} β {[r['picked'].get(choice) for r in mine]} (scored: seeds "
                    f"{', '.join(str(r['seed']) for r, _ in picked)}): " + ", ".join(cells))
            if "new_vs_zeroshot" in picked[0][1]:
                ratios = [x["new_vs_zeroshot"]["ratio"] for _, x in picked]
                above = sum(x["new_vs_zeroshot"]["diff_ci95"][0] > 0 for _, x in picked)
                line += (f"; new × zero-shot {np.mean(ratios):.3f} ({' / '.join(f'{v:.2f}' for v in ratios)}; "
                         f"CI above 0 on {above} of {len(picked)}); warm × plain "
                         f"{np.mean([x['warm_vs_plain'] for _, x in picked]):.3f}")
            print(line)
        print("  zero-shot: " + ", ".join(f"{p} {np.mean([r['zeroshot'][p] for r in mine]):.4f}"
                                          for p in mine[0]["zeroshot"]))


def speed(bundle: str, users: int = 200, repeats: int = 5) -> None:
    """`recommend(history, k=10)` one query at a time, exact and through the graph, with the
    bundle's text term and with it off (the same Recommender), on `users` random 8-item
    histories; median over `repeats` of the mean per query (RESULTS ran it with
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1: one BLAS thread)."""
    from lmrec import Recommender

    rec = Recommender.load(bundle, precision="fp32")
    ids = rec.item_ids()
    rng = np.random.default_rng(0)
    histories = [[ids[j] for j in rng.choice(len(ids), 8, replace=False)] for _ in range(users)]
    term = rec.users.text
    print(f"{bundle}: {len(ids)} items, text term {term}")
    for mode in ("exact", "ann"):
        ms = {}
        for name, text in (("without", None), ("with", term)):
            rec.users.text = text
            runs = []
            for _ in range(repeats):
                started = time.perf_counter()
                for h in histories:
                    rec.recommend(h, k=10, mode=mode)
                runs.append(1000 * (time.perf_counter() - started) / users)
            ms[name] = float(np.median(runs))
        print(f"  {mode}: {ms['without']:.3f} ms without the term, {ms['with']:.3f} ms with it "
              f"({ms['with'] / ms['without']:.2f}×)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["summary"]:
        summary(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["speed"]:
        speed(sys.argv[2])
    else:
        main()
