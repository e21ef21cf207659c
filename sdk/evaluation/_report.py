"""Run several methods on one split and write the table, the JSON report and the plot."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..data import Dataset
from ._harness import FitContext, Scorer, evaluate
from ._metrics import METRICS, MethodResult, paired_bootstrap
from ._splits import Split


def run_methods(data: Dataset, split: Split, scorers: Sequence[Scorer], ctx: FitContext,
                log: Callable[[str], None] = print) -> tuple[dict[str, Any], dict[str, MethodResult]]:
    """Fit each scorer on the split's training part, evaluate on its test cases, summarise."""
    results, raw = {}, {}
    for scorer in scorers:
        start = time.perf_counter()
        scorer.fit(ctx)
        fitted = time.perf_counter() - start
        res = evaluate(scorer.score, split.test, split.n_items, desc=f"eval {scorer.name}" if ctx.progress else None)
        raw[scorer.name] = res
        results[scorer.name] = {**res.summary(seed=ctx.seed), "params": scorer.params,
                                "fit_seconds": round(fitted, 2),
                                "eval_seconds": round(time.perf_counter() - start - fitted, 2)}
        if split.kind == "mixed":  # where the gains come from: targets with history, and new ones
            new = split.new_targets(split.test)
            results[scorer.name]["by_target"] = {"warm": res.subset(~new).summary(seed=ctx.seed),
                                                 "new": res.subset(new).summary(seed=ctx.seed)}
        log(f"{scorer.name}: ndcg@10={results[scorer.name]['ndcg@10']:.4f} "
            f"recall@10={results[scorer.name]['recall@10']:.4f} ({fitted:.0f}s fit)")
    return results, raw


def build_report(data: Dataset, split: Split, results: dict[str, Any], raw: dict[str, MethodResult],
                 reference: str | None, seed: int) -> dict[str, Any]:
    report: dict[str, Any] = {
        "dataset": {k: v for k, v in data.summary().items()},
        "split": split.kind,
        "seed": seed,
        "split_info": split.describe(),
        "results": results,
    }
    if reference in raw and len(raw) > 1:
        report["paired"] = {
            f"{name} vs {reference}": paired_bootstrap(res, raw[reference], seed=seed)
            for name, res in raw.items() if name != reference
        }
    return report


def format_table(report: dict[str, Any]) -> str:
    cols = [m for m in METRICS]
    lines = [f"{report['dataset']['name']} split={report['split']} seed={report['seed']} "
             f"test users={report['split_info']['test_users']}",
             f"{'method':14}" + "".join(f"{c:>13}" for c in cols)]
    for name, r in report["results"].items():
        lines.append(f"{name:14}" + "".join(f"{r[c]:13.4f}" for c in cols))
        lo, hi = r["ci95"]["ndcg@10"]
        lines.append(f"{'':14}{'ndcg@10 95% CI':>13} [{lo:.4f}, {hi:.4f}]")
    for pair, stats in report.get("paired", {}).items():
        s = stats["ndcg@10"]
        ratio = f"ratio {s['ratio']:.3f}" if s["ratio"] is not None else "ratio n/a"
        lines.append(
            f"{pair}: ndcg@10 diff {s['diff']:+.4f} CI [{s['diff_ci95'][0]:+.4f}, {s['diff_ci95'][1]:+.4f}], {ratio}"
        )
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def plot(report: dict[str, Any], path: str | Path) -> None:
    """Side-by-side bars of Recall@10 and NDCG@10 (with 95 % intervals) for every method."""
    from .._errors import require

    require("matplotlib", "train", "--plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(report["results"])
    metrics = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]
    x = np.arange(len(metrics))
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(2 + 1.6 * len(metrics), 4))
    for i, name in enumerate(names):
        r = report["results"][name]
        means = np.array([r[m] for m in metrics])
        ci = np.array([r["ci95"][m] for m in metrics]).T
        ax.bar(x + i * width, means, width, yerr=[means - ci[0], ci[1] - means], capsize=3, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2, metrics)
    ax.set_title(f"{report['dataset']['name']} · {report['split']} split · seed {report['seed']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
