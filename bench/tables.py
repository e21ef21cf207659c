"""Render `lmrec eval` JSON reports as the Markdown tables of bench/RESULTS.md.

Usage: python bench/tables.py bench/results/baselines-*.json
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    r = json.load(open(path))
    d = r["dataset"]
    head = (f"**{d['name']}**, split `{r['split']}`, seed {r['seed']} — {d['users']} users, {d['items']} items, "
            f"{d['interactions']} interactions; {r['split_info']['test_users']} test users")
    rows = [
        "| method | Recall@10 | NDCG@10 (95 % CI) | Recall@20 | NDCG@20 | MRR | coverage@10 | chosen on validation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in r["results"].items():
        lo, hi = m["ci95"]["ndcg@10"]
        params = {k: v for k, v in m.get("params", {}).items()
                  if k in ("last_n", "epochs_run", "best_valid_ndcg@10", "dropout", "dim", "max_len", "precision")}
        rows.append(
            f"| {name} | {m['recall@10']:.4f} | {m['ndcg@10']:.4f} ({lo:.4f}–{hi:.4f}) | {m['recall@20']:.4f} | "
            f"{m['ndcg@20']:.4f} | {m['mrr']:.4f} | {m['coverage@10']:.3f} | "
            f"{', '.join(f'{k}={v:.4g}' if isinstance(v, float) else f'{k}={v}' for k, v in params.items())} |"
        )
    return head + "\n\n" + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print("\n".join(table(p) for p in sys.argv[1:]))
