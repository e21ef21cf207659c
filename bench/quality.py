"""Quality tables of trained bundles (bench/quality.sh runs the training and the `lmrec eval`s).

    python bench/quality.py summary bench/results/quality     median seeds, tables, targets
    python bench/quality.py int8 out/quality                  int8 vs fp32 on the median seeds' bundles

`summary` copies, for each dataset and split, the report of the seed whose lmrec NDCG@10 is the
median to bench/results/quality-<dataset>-<split>.json and prints Markdown tables with the
targets of issue 4. `int8` compares the int8 and fp32 bundles user by user (paired bootstrap,
top-10 overlap). A bundle stores its catalogue's vectors (computed by the fp32 graph at export),
so `lmrec` and `lmrec-fp32` score the catalogue identically; precision matters for items embedded
at run time. So `int8` also upserts the cold split's held-out items through each precision's
encoder (what a user does with a new item) and scores the cold test cases again.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np

SPECS = {"amazon-office": "amazon:../shared/data/amazon-office",
         "movielens-latest-small": "movielens:../shared/data/movielens-latest-small"}
ROOT = Path(__file__).resolve().parent


def _reports(folder: Path) -> dict[tuple[str, str], dict[int, dict]]:
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(folder.glob("*.json")):
        m = re.fullmatch(r"(.+)-(warm|cold)-s(\d+)\.json", path.name)
        if m:
            out.setdefault((m[1], m[2]), {})[int(m[3])] = json.loads(path.read_text())
    return out


def median_seed(by_seed: dict[int, dict]) -> int:
    seeds = sorted(by_seed, key=lambda s: (by_seed[s]["results"]["lmrec"]["ndcg@10"], s))
    return seeds[(len(seeds) - 1) // 2]


def summary(folder: Path) -> None:
    reports = _reports(folder)
    medians: dict[tuple[str, str], dict] = {}
    for (ds, split), by_seed in sorted(reports.items()):
        seed = median_seed(by_seed)
        medians[(ds, split)] = by_seed[seed]
        shutil.copyfile(folder / f"{ds}-{split}-s{seed}.json", ROOT / "results" / f"quality-{ds}-{split}.json")
        r = by_seed[seed]
        print(f"\n**{ds}**, `{split}` — median seed {seed} of {sorted(by_seed)}; "
              f"{r['split_info']['test_users']} test users\n")
        print("| method | Recall@10 | NDCG@10 (95 % CI) | NDCG@20 | MRR | NDCG@10 over seeds (mean ± sd) |")
        print("|---|---|---|---|---|---|")
        for name, m in r["results"].items():
            lo, hi = m["ci95"]["ndcg@10"]
            over = [s["results"][name]["ndcg@10"] for s in by_seed.values() if name in s["results"]]
            spread = f"{np.mean(over):.4f} ± {np.std(over, ddof=1):.4f} (n={len(over)})" if len(over) > 1 else "—"
            print(f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} ({lo:.4f}–{hi:.4f}) | {m['ndcg@20']:.4f} | "
                  f"{m['mrr']:.4f} | {spread} |")
        for s, report in sorted(by_seed.items()):  # paired: only within one seed's report
            pair = report.get("paired", {}).get("lmrec vs sasrec", {}).get("ndcg@10")
            if pair:
                print(f"\nseed {s}: lmrec vs sasrec NDCG@10 ratio {pair['ratio']:.3f} (95 % CI "
                      f"{pair['ratio_ci95'][0]:.3f}–{pair['ratio_ci95'][1]:.3f}), difference {pair['diff']:+.4f} "
                      f"({pair['diff_ci95'][0]:+.4f}–{pair['diff_ci95'][1]:+.4f})")
        _times(ds, split, sorted(by_seed))
    for ds in sorted({d for d, _ in medians}):
        warm, cold = medians.get((ds, "warm")), medians.get((ds, "cold"))
        if warm and cold:
            w, c = warm["results"]["lmrec"]["ndcg@10"], cold["results"]["lmrec"]["ndcg@10"]
            print(f"\n{ds}: cold lmrec NDCG@10 {c:.4f} = {c / w:.1%} of its warm {w:.4f} (target >= 60 %)")


def _times(ds: str, split: str, seeds: list[int], bundles: Path = ROOT.parent / "out" / "quality") -> None:
    """Training time per seed, from the bundles' manifests (when the bundles are here)."""
    rows = []
    for seed in seeds:
        path = bundles / f"{ds}-{split}-s{seed}" / "manifest.json"
        if path.is_file():
            t = json.loads(path.read_text())["training"]
            epochs = [h for h in t["history"] if h["phase"] in ("user", "user2")]
            rows.append(f"seed {seed}: {len(epochs)} epochs (best {t['best']['phase']} {t['best']['epoch']}, "
                        f"valid NDCG@10 {t['best']['valid_ndcg@10']:.4f}), {t['seconds_per_epoch']:.1f} s/epoch, "
                        f"{t['seconds'] / 60:.1f} min of training")
    if rows:
        print("\ntraining: " + "; ".join(rows))


def int8(bundles: Path) -> None:
    import lmrec
    from lmrec import Recommender
    from lmrec.evaluation import evaluate, make_split, paired_bootstrap

    out = {}
    for (ds, split), by_seed in sorted(_reports(ROOT / "results" / "quality").items()):
        seed = median_seed(by_seed)
        bundle = bundles / f"{ds}-{split}-s{seed}"
        data = lmrec.load_dataset(SPECS[ds])
        parts = make_split(data, split, seed)
        cases = parts.test
        row: dict = {"seed": seed}
        variants = {"stored": None}
        if split == "cold":
            variants["cold items embedded at run time"] = [data.item_ids[i] for i in parts.cold_items]
        for label, upsert in variants.items():
            results = {}
            for precision in ("fp32", "int8"):
                rec = Recommender.load(bundle, precision=precision)
                if upsert:
                    index = {item: i for i, item in enumerate(data.item_ids)}
                    rec.add_items(upsert, texts=[data.item_texts[index[i]] for i in upsert])
                pos = {item: i for i, item in enumerate(rec.item_ids())}
                order = np.array([pos[i] for i in data.item_ids])

                def score(histories, rec=rec, order=order, data=data):
                    return rec.score_all([[data.item_ids[i] for i in h] for h in histories])[:, order]

                results[precision] = evaluate(score, cases, parts.n_items)
            a, b = results["int8"], results["fp32"]
            overlap = float(
                np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a.topk.tolist(), b.topk.tolist(), strict=True)])
            )
            pair = paired_bootstrap(a, b, seed=seed)["ndcg@10"]
            row[label] = {
                "fp32_ndcg@10": float(b.values["ndcg@10"].mean()),
                "int8_ndcg@10": float(a.values["ndcg@10"].mean()),
                "ratio": pair["ratio"],
                "diff": pair["diff"],
                "diff_ci95": pair["diff_ci95"],
                "top10_overlap": overlap,
            }
            print(f"{ds} {split} seed {seed} ({label}): int8 {row[label]['int8_ndcg@10']:.4f} vs fp32 "
                  f"{row[label]['fp32_ndcg@10']:.4f}, ratio {pair['ratio']:.4f}, diff CI {pair['diff_ci95']}, "
                  f"top-10 overlap {overlap:.3f}")
        out[f"{ds}-{split}"] = row
    (ROOT / "results" / "quality-int8.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("summary", "int8"):
        sys.exit(__doc__)
    {"summary": summary, "int8": int8}[sys.argv[1]](Path(sys.argv[2]))
