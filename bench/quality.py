"""Quality tables of default `lmrec train` bundles (bench/quality.sh runs the trainings and evals).

    python bench/quality.py summary bench/results/quality     tables, means over seeds, the targets
    python bench/quality.py int8 out/quality                  int8 vs fp32 on the median seeds' bundles

`summary` prints, for each dataset and split, the median seed's table (its report is copied to
bench/results/quality-<dataset>-<split>.json), the mean ± sd of every method over seeds, the
paired comparisons of each seed (lmrec vs sasrec on warm and mixed, lmrec vs zeroshot on cold
and mixed, overall and by target), and the targets of issues 11 and 12 against the tuned results
of the previous round. `int8` compares the int8 and fp32 encoders on items embedded at run time
(the stored catalogue's vectors are the fp32 graph's, so only new items can differ).
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
# The previous round's tuned results (per-dataset configs; bench/RESULTS.md "Quality: trained bundles").
TUNED = {("amazon-office", "warm"): 0.0748, ("movielens-latest-small", "warm"): 0.0649,
         ("amazon-office", "cold"): 0.0535, ("movielens-latest-small", "cold"): 0.0441}


def _reports(folder: Path) -> dict[tuple[str, str], dict[int, dict]]:
    out: dict[tuple[str, str], dict[int, dict]] = {}
    for path in sorted(folder.glob("*.json")):
        m = re.fullmatch(r"(.+)-(warm|cold|mixed)-s(\d+)\.json", path.name)
        if m:
            out.setdefault((m[1], m[2]), {})[int(m[3])] = json.loads(path.read_text())
    return out


def median_seed(by_seed: dict[int, dict]) -> int:
    seeds = sorted(by_seed, key=lambda s: (by_seed[s]["results"]["lmrec"]["ndcg@10"], s))
    return seeds[(len(seeds) - 1) // 2]


def _mean(by_seed: dict[int, dict], method: str, target: str | None = None) -> tuple[float, float, int]:
    vals = [(r["results"][method]["by_target"][target] if target else r["results"][method])["ndcg@10"]
            for r in by_seed.values() if method in r["results"]]
    return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, len(vals)


def _pairs(report: dict, against: str) -> str:
    pair = report.get("paired", {}).get(f"lmrec vs {against}", {}).get("ndcg@10")
    if not pair:
        return ""
    ratio = f"ratio {pair['ratio']:.3f} (95 % CI {pair['ratio_ci95'][0]:.3f}–{pair['ratio_ci95'][1]:.3f})" \
        if pair.get("ratio") is not None else "ratio n/a"
    return (f"lmrec vs {against}: {ratio}, difference {pair['diff']:+.4f} "
            f"({pair['diff_ci95'][0]:+.4f}–{pair['diff_ci95'][1]:+.4f})")


def summary(folder: Path) -> None:
    reports = _reports(folder)
    for (ds, split), by_seed in sorted(reports.items()):
        seed = median_seed(by_seed)
        shutil.copyfile(folder / f"{ds}-{split}-s{seed}.json", ROOT / "results" / f"quality-{ds}-{split}.json")
        r = by_seed[seed]
        print(f"\n**{ds}**, `{split}` — median seed {seed} of {sorted(by_seed)}; "
              f"{r['split_info']['test_users']} test users\n")
        targets = " | NDCG@10 warm targets | NDCG@10 new targets" if split == "mixed" else ""
        print(f"| method | Recall@10 | NDCG@10 (95 % CI) | NDCG@20 | MRR | NDCG@10 over seeds (mean ± sd){targets} |")
        print("|---|---|---|---|---|---|" + ("---|---|" if split == "mixed" else ""))
        for name, m in r["results"].items():
            lo, hi = m["ci95"]["ndcg@10"]
            mean, sd, n = _mean(by_seed, name)
            row = (f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} ({lo:.4f}–{hi:.4f}) | {m['ndcg@20']:.4f} | "
                   f"{m['mrr']:.4f} | {mean:.4f} ± {sd:.4f} (n={n})")
            if split == "mixed":
                (wm, ws, _), (nm, ns, _) = _mean(by_seed, name, "warm"), _mean(by_seed, name, "new")
                row += f" | {wm:.4f} ± {ws:.4f} | {nm:.4f} ± {ns:.4f}"
            print(row + " |")
        print()
        for s, report in sorted(by_seed.items()):  # paired: only within one seed's report
            lines = [_pairs(report, other) for other in ("sasrec", "zeroshot")]
            print(f"- seed {s}: " + "; ".join(x for x in lines if x))
        _times(ds, "cold" if split == "mixed" else split, sorted(by_seed))
        lm = _mean(by_seed, "lmrec")[0]
        if (ds, split) in TUNED:
            print(f"\ntarget: mean lmrec NDCG@10 {lm:.4f} = {lm / TUNED[(ds, split)]:.1%} of the previous round's "
                  f"tuned {TUNED[(ds, split)]} (>= 97 %)")
        for other in ("sasrec", "zeroshot"):
            if other in r["results"]:
                o = _mean(by_seed, other)[0]
                print(f"target: mean lmrec / {other} = {lm / o:.3f}" if o else f"target: {other} scores 0")
        if split == "mixed":
            new, floor = _mean(by_seed, "lmrec", "new")[0], _mean(by_seed, "zeroshot", "new")[0]
            print(f"new targets: lmrec {new:.4f} vs zeroshot {floor:.4f} = {new / floor:.3f}x "
                  f"(not below: {'met' if new >= floor else 'missed'})")
            if "lmrec-plain" in r["results"]:
                warm, plain = _mean(by_seed, "lmrec", "warm")[0], _mean(by_seed, "lmrec-plain", "warm")[0]
                print(f"warm targets: lmrec {warm:.4f} = {warm / plain:.1%} of lmrec-plain {plain:.4f} "
                      f"(the same model without its new-item rules; >= 97 %)")


def _times(ds: str, split: str, seeds: list[int], bundles: Path = ROOT.parent / "out" / "quality") -> None:
    """Training time and choices per seed, from the bundles' manifests (when the bundles are here)."""
    rows = []
    for seed in seeds:
        path = bundles / f"{ds}-{split}-s{seed}" / "manifest.json"
        if path.is_file():
            t = json.loads(path.read_text())["training"]
            chose = (t.get("search") or {}).get("chosen", "")
            rows.append(f"seed {seed}: {t['seconds'] / 60:.1f} min, best {t['best']['phase']} epoch "
                        f"{t['best']['epoch']} (valid NDCG@10 {t['best']['valid_ndcg@10']:.4f})"
                        + (f", chose {chose}" if chose else "") + f", encoder {t.get('encoder')}")
    if rows:
        print("\ntraining: " + "; ".join(rows))


def int8(bundles: Path) -> None:
    import lmrec
    from lmrec import Recommender
    from lmrec.evaluation import evaluate, make_split, paired_bootstrap

    out = {}
    for (ds, split), by_seed in sorted(_reports(ROOT / "results" / "quality").items()):
        seed = median_seed(by_seed)
        bundle = bundles / f"{ds}-{'cold' if split == 'mixed' else split}-s{seed}"  # mixed: the cold bundle
        data = lmrec.load_dataset(SPECS[ds])
        parts = make_split(data, split, seed)
        cases = parts.test
        row: dict = {"seed": seed}
        variants = {"stored": None}
        if split in ("cold", "mixed"):
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
