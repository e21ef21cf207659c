"""New items scored by the user model plus the fine-tuned encoder's own text similarity.

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/content_mix.py \\
        --data amazon:../shared/data/amazon-office --bundle out/quality/amazon-office-cold-s0 \\
        --seed 0 --json bench/results/content-mix/amazon-office-s0.json
    python bench/content_mix.py summary bench/results/content-mix32     # means per dataset and β
    python bench/content_mix.py testlike bench/results/content-mix32 bench/results/content-mix32-testlike

A bundle trained with held-out items scores a new item by its user model (text vector through the
adapter plus a borrowed residual) and the new-item bonus γ. This script adds, for new items only,
β × the user's score spread × the z-scored cosine between the item's text vector and the mean of
the user's last n history text vectors (the bundle's own encoder, as `Recommender.embed_texts`
gives them), and measures on the mixed split:
- among the new items only (users whose target is new, history excluded): n and β chosen on
  validation by this ranking, test with paired 95 % CIs against the user model alone (β 0) and
  against the untrained encoder (`zeroshot`, as `lmrec eval`);
- the whole catalogue: (β, γ) chosen on validation, the most new-target NDCG@10 with warm targets
  at most 3 % below the bundle at β 0, γ 0, against the shipped γ at β 0;
- the same term on every item, warm ones too (an ensemble of the user model and text similarity):
  β chosen on validation NDCG@10 of all targets at γ 0, then γ by the trainer's rule (the least γ
  whose new targets reach the untrained encoder's, warm targets at most 3 % below γ 0; else the
  most new-target NDCG@10 within that), against the shipped bundle; and the same for every β of
  the grid (`every_item_by_beta`), to read off what one β fixed for every dataset would give, and
  for the same query met by the served item vectors instead of the text vectors (`query_by_beta`:
  a change of the user's query alone, which the SDK's one index could serve). A bundle trained
  on the warm split gets this part alone, on the warm split (n chosen with β).
Paired bootstrap over users, 2 000 resamples. About three minutes a bundle on one core with
`--ensemble-only`, twenty without.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from lmrec.evaluation import BundleScorer
from lmrec.trainer.baselines import BASELINES
from new_items import mixed_setup, ndcg_rows  # bench/ is the script's folder

LAST_N = (1, 5, 20)
BETAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)
WARM_COST = 0.03
GAMMAS = (0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0)  # the trainer's bonus grid


def _paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict:
    idx = rng.integers(0, len(a), (2000, len(a)))
    diff = a[idx].mean(1) - b[idx].mean(1)
    return {"ratio": round(float(a.mean() / b.mean()), 3),
            "diff_ci95": [round(float(x), 4) for x in np.percentile(diff, [2.5, 97.5])]}


def _z(s: np.ndarray) -> np.ndarray:
    return (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ensemble-only", action="store_true", help="skip the term on new items only (the slow part)")


def main() -> None:
    args, data, split, ctx, new = mixed_setup(__doc__.split("\n\n")[0], warm_ok=True, options=_options)
    lm, zs = BundleScorer(args.bundle, "fp32"), BASELINES["zeroshot"]()
    lm.fit(ctx)
    zs.fit(ctx)
    rec = lm.rec
    shipped = float(np.max(rec.catalogue.bonus_of(rec.item_ids())))
    text = rec.embed_texts(list(data.item_texts))
    item_vectors = rec.catalogue.vectors(list(lm.item_ids))
    parts = {}
    for part in ("valid", "test"):
        cases = getattr(split, part)
        hist = list(cases.histories)
        user = np.concatenate([lm.score(hist[i:i + 512]) for i in range(0, len(hist), 512)]) - shipped * new
        recent = {n: np.stack([text[h[-n:]].mean(0) for h in hist]) for n in LAST_N}
        parts[part] = {"hist": hist, "targets": cases.targets, "new_target": split.new_targets(cases),
                       "user": user, "zeroshot": zs.score(hist),
                       "content": {n: r @ text.T for n, r in recent.items()},
                       # the same query met by the served item vectors (text + residual): a term the
                       # SDK's one index can hold, as a change of the user's query alone
                       "query": {n: r @ item_vectors.T for n, r in recent.items()}}
    held_out = bool(new.any())

    def among(part: str, scores: np.ndarray) -> np.ndarray:
        p = parts[part]
        rows = np.flatnonzero(p["new_target"])
        return ndcg_rows(scores[rows], p["targets"][rows], [p["hist"][r] for r in rows], new)

    def mixed(part: str, n: int, beta: float) -> np.ndarray:
        p = parts[part]
        return p["user"] + beta * p["user"].std(1, keepdims=True) * _z(p["content"][n]) * new

    def every_item(part: str, n: int, b: float, gamma: float, side: str = "content") -> np.ndarray:
        p = parts[part]
        scores = p["user"] + b * p["user"].std(1, keepdims=True) * _z(p[side][n])
        return ndcg_rows(scores + gamma * new, p["targets"], p["hist"])

    def split_means(part: str, v: np.ndarray) -> dict:
        t = parts[part]["new_target"]
        out = {"all": round(float(v.mean()), 4)}
        if held_out:
            out |= {"warm": round(float(v[~t].mean()), 4), "new": round(float(v[t].mean()), 4)}
        return out

    rng = np.random.default_rng(0)
    if held_out:
        n = max(LAST_N, key=lambda k: among("valid", parts["valid"]["content"][k]).mean())
    else:  # a warm bundle: n chosen with β on all targets
        n = max(LAST_N, key=lambda k: max(every_item("valid", k, b, 0.0).mean() for b in BETAS))
    report: dict = {"data": data.name, "seed": args.seed, "bundle": args.bundle, "shipped_gamma": shipped,
                    "last_n": n}
    if held_out and not args.ensemble_only:
        _new_items_only(report, parts, among, mixed, n, shipped, new, rng)
    for part in ("valid", "test"):
        p = parts[part]
        p["zeroshot_ndcg"] = ndcg_rows(p["zeroshot"], p["targets"], p["hist"])
        report[f"zeroshot_{part}"] = split_means(part, p["zeroshot_ndcg"])
    floor_new = 0.0
    if held_out:
        floor_new = float(parts["valid"]["zeroshot_ndcg"][parts["valid"]["new_target"]].mean())

    def gamma_by_rule(b: float, side: str = "content") -> float:
        """The trainer's rule for the bonus, at ensemble weight b (0 without held-out items)."""
        if not held_out:
            return 0.0
        grid = [(g, split_means("valid", every_item("valid", n, b, g, side))) for g in GAMMAS]
        allowed = [(g, m) for g, m in grid if m["warm"] >= (1 - WARM_COST) * grid[0][1]["warm"]]
        reaching = [(g, m) for g, m in allowed if m["new"] >= floor_new]
        return reaching[0][0] if reaching else max(allowed, key=lambda x: x[1]["new"])[0]

    def scored(b: float, gamma: float, side: str = "content") -> dict:
        row: dict = {"beta": b, "gamma": gamma}
        for part in ("valid", "test"):
            mine, base = every_item(part, n, b, gamma, side), every_item(part, n, 0.0, shipped)
            row[part] = split_means(part, mine)
            t = parts[part]["new_target"]
            row[f"{part}_vs_shipped"] = {"all": _paired(mine, base, rng)}
            if held_out:
                row[f"{part}_vs_shipped"] |= {"warm": _paired(mine[~t], base[~t], rng),
                                              "new": _paired(mine[t], base[t], rng)}
                row[f"{part}_new_vs_zeroshot"] = _paired(mine[t], parts[part]["zeroshot_ndcg"][t], rng)
        return row

    report["shipped"] = {part: split_means(part, every_item(part, n, 0.0, shipped)) for part in ("valid", "test")}
    b_every = max(BETAS, key=lambda b: every_item("valid", n, b, 0.0).mean())
    row = scored(b_every, gamma_by_rule(b_every))
    if held_out:
        row["floor_new_valid"] = round(floor_new, 4)
    report["every_item"] = row
    print("every item", json.dumps(row), flush=True)
    # every β of the grid with its own γ by the rule: what one β fixed for every dataset would give
    report["every_item_by_beta"] = [scored(b, gamma_by_rule(b)) for b in BETAS]
    report["query_by_beta"] = [scored(b, gamma_by_rule(b, "query"), "query") for b in BETAS]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _new_items_only(report: dict, parts: dict, among: Callable, mixed: Callable, n: int, shipped: float,
                    new: np.ndarray, rng: np.random.Generator) -> None:
    """The term on new items only: among them, and on the whole catalogue."""
    beta = max(BETAS, key=lambda b: among("valid", mixed("valid", n, b)).mean())
    report["beta_among_new"] = beta
    for part in ("valid", "test"):
        user, zero = among(part, parts[part]["user"]), among(part, parts[part]["zeroshot"])
        content, mix = among(part, parts[part]["content"][n]), among(part, mixed(part, n, beta))
        report[f"among_new_{part}"] = {
            "users": len(mix), "user_model": round(float(user.mean()), 4), "zeroshot": round(float(zero.mean()), 4),
            "content": round(float(content.mean()), 4), "mix": round(float(mix.mean()), 4),
            "mix_vs_user_model": _paired(mix, user, rng), "mix_vs_zeroshot": _paired(mix, zero, rng),
            "user_model_vs_zeroshot": _paired(user, zero, rng)}
        print(part, "among new", json.dumps(report[f"among_new_{part}"]), flush=True)

    def whole(part: str, b: float, gamma: float) -> dict:
        p = parts[part]
        v = ndcg_rows(mixed(part, n, b) + gamma * new, p["targets"], p["hist"])
        return {"all": float(v.mean()), "warm": float(v[~p["new_target"]].mean()),
                "new": float(v[p["new_target"]].mean())}

    floor = (1 - WARM_COST) * whole("valid", 0.0, 0.0)["warm"]
    best: tuple[float, float, float] | None = None
    for b in BETAS:
        for gamma in np.round(np.arange(-1.0 - 8 * b, 1.001, 0.05), 3):
            v = whole("valid", b, float(gamma))
            if v["warm"] >= floor and (best is None or v["new"] > best[2]):
                best = (b, float(gamma), v["new"])
    report["whole_catalogue"] = {"shipped": {"beta": 0.0, "gamma": shipped}}
    if best is not None:
        report["whole_catalogue"]["chosen"] = {"beta": best[0], "gamma": best[1]}
    for row in report["whole_catalogue"].values():
        for part in ("valid", "test"):
            row[part] = {k: round(x, 4) for k, x in whole(part, row["beta"], row["gamma"]).items()}
    print("whole catalogue", json.dumps(report["whole_catalogue"]), flush=True)


def summary(folder: Path) -> None:
    """Per dataset and β, means over the reports in `folder` against the shipped bundle; then each
    bundle's β by the trainer's rule on validation (the most new-target NDCG@10 whose warm targets
    keep 97 % of β 0's)."""
    reports = [json.loads(f.read_text()) for f in sorted(folder.glob("*.json"))]
    for side in ("every_item_by_beta", "query_by_beta"):
        print(f"\n{side}: test ratio to the shipped bundle, all / warm / new (valid all); new × zero-shot")
        for ds in sorted({r["data"] for r in reports}):
            mine = [r for r in reports if r["data"] == ds and side in r]
            for i, b in enumerate(BETAS):
                rows = [r[side][i] for r in mine]
                ratio = " / ".join(f"{np.mean([x['test_vs_shipped'][k]['ratio'] for x in rows]):.3f}"
                                   for k in rows[0]["test_vs_shipped"])
                valid = np.mean([x["valid_vs_shipped"]["all"]["ratio"] for x in rows])
                zs = [x["test_new_vs_zeroshot"]["ratio"] for x in rows if "test_new_vs_zeroshot" in x]
                print(f"  {ds:24s} β {b:<5} {ratio} ({valid:.3f})" + (f"; new {np.mean(zs):.3f}×" if zs else ""))
        print("  β by the rule on validation: β, γ | valid warm % of β 0 | test all (CI) | warm | new × zero-shot (CI)")
        for r in reports:
            rows = r[side]
            if "new" not in rows[0]["valid"]:
                continue
            best = _by_rule(rows, "valid")
            t, z = best["test_vs_shipped"], best["test_new_vs_zeroshot"]
            print(f"  {r['data']:24s} s{r['seed']} | {best['beta']}, {best['gamma']} | "
                  f"{100 * best['valid']['warm'] / rows[0]['valid']['warm']:.1f} % | "
                  f"{t['all']['ratio']:.3f} {t['all']['diff_ci95']} | {t['warm']['ratio']:.3f} | "
                  f"{z['ratio']:.3f} {z['diff_ci95']}")


def _by_rule(rows: list[dict], part: str) -> dict:
    """The row with the most new-target NDCG@10 whose warm targets keep 97 % of β 0's, on `part`."""
    return max((x for x in rows if x[part]["warm"] >= (1 - WARM_COST) * rows[0][part]["warm"]),
               key=lambda x: x[part]["new"])


def testlike(shipped: Path, shorter: Path) -> None:
    """β by the rule on a test-like validation: the test cases of a model trained on the same data
    without each user's last interaction (reports in `shorter`, same names as in `shipped`), which
    are the shipped model's validation targets one step beyond an untrained history item."""
    for f in sorted(shorter.glob("*.json")):
        a = json.loads((shipped / f.name).read_text())["every_item_by_beta"]
        t = json.loads(f.read_text())["every_item_by_beta"]
        valid, like = _by_rule(a, "valid"), a[t.index(_by_rule(t, "test"))]
        i = BETAS.index(0.2)
        at = [round(rows[i][p]["warm"] / rows[0][p]["warm"], 3) for rows, p in ((a, "valid"), (t, "test"), (a, "test"))]
        s, z = like["test_vs_shipped"], like["test_new_vs_zeroshot"]
        print(f"{f.stem}: β by validation {valid['beta']}, by the test-like validation {like['beta']}; "
              f"warm at β 0.2 × β 0 (validation / test-like / test) {at}; shipped model's test at "
              f"β {like['beta']}: all {s['all']['ratio']} {s['all']['diff_ci95']}, warm {s['warm']['ratio']}, "
              f"new × zero-shot {z['ratio']} {z['diff_ci95']}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["summary"]:
        summary(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["testlike"]:
        testlike(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        main()
