"""Free-text search on a trained bundle: does an item's own title find it?

    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python bench/text_search.py \\
        --bundle out/quality/amazon-office-cold-s0 --json bench/results/text-search/amazon-office-cold-s0.json

A trained bundle's item vectors are normalise(text vector + residual). `Recommender.search` places
the query as a new item with that text would stand (plus the residual it borrows) before it meets
them; before, the bare text vector met them. For a sample of catalogue items (seed 0), the query is
the item's title (its metadata title, else its text) or the title's first three words; the figure
is how often the item itself ranks first and in the top 10 (itself not excluded). Three ways: the
bare query against item vectors (before), `Recommender.search` (exact mode: the product), and the
bare query against every item's own text vector (the encoder alone: what a separate text index
would give).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from lmrec import Recommender

SAMPLE = 800


def _hits(ranks: np.ndarray) -> dict[str, float]:
    return {"top1": round(float(np.mean(ranks < 1)), 4), "top10": round(float(np.mean(ranks < 10)), 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="a trained bundle (one with a residual table)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    rec = Recommender.load(args.bundle, precision="fp32")
    if rec.catalogue.residuals is None:
        raise SystemExit(f"{args.bundle}: no residual table (not a trained bundle)")
    ids, matrix = rec.catalogue.matrix()
    items = [rec.catalogue.get(i) for i in ids]
    text_vectors = rec.embed_texts([item.text or item.item_id for item in items])
    rows = np.sort(np.random.default_rng(0).choice(len(ids), min(SAMPLE, len(ids)), replace=False))
    titles = [str(items[r].metadata.get("title") or items[r].text or items[r].item_id) for r in rows]
    report: dict = {"bundle": args.bundle, "items": len(ids), "queries": len(rows)}
    for name, queries in (("title", titles), ("first 3 words", [" ".join(t.split()[:3]) for t in titles])):
        q = rec.embed_texts(queries)

        def rank(scores: np.ndarray) -> np.ndarray:
            own = scores[np.arange(len(rows)), rows]
            return (scores > own[:, None]).sum(1)

        product = np.array([next((n for n, r in enumerate(rec.search(text, k=10, mode="exact"))
                                  if r.item_id == ids[row]), 10) for text, row in zip(queries, rows, strict=True)])
        report[name] = {"bare query, item vectors (before)": _hits(rank(q @ matrix.T)),
                        "Recommender.search": _hits(product),
                        "bare query, text vectors": _hits(rank(q @ text_vectors.T))}
        print(name, json.dumps(report[name]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
