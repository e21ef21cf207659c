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

`--cost` instead times what placing adds to a query: `ResidualTable.place` on one query against
the HNSW search of the same size (`VectorIndex`, k 10), random unit vectors, 10 k / 100 k / 400 k
trained items, medians of 20 calls each, one process:

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/text_search.py --cost \
        --json bench/results/text-search/cost.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from lmrec import NewItemsInfo, Recommender, ResidualTable, build_index

SAMPLE = 800
COST_SIZES = (10_000, 100_000, 400_000)
REPEATS = 20


def _hits(ranks: np.ndarray) -> dict[str, float]:
    return {"top1": round(float(np.mean(ranks < 1)), 4), "top10": round(float(np.mean(ranks < 10)), 4)}


def _median_ms(call: Callable[..., object], *args: object) -> float:
    call(*args)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - start)
    return round(float(np.median(times)) * 1e3, 3)


def cost() -> dict:
    rng = np.random.default_rng(0)
    rows = []
    for n in COST_SIZES:
        text = rng.normal(size=(n, 384)).astype(np.float32)
        text /= np.linalg.norm(text, axis=1, keepdims=True)
        ids = [f"i{j}" for j in range(n)]
        table = ResidualTable(ids, text, 0.3 * rng.normal(size=(n, 384)).astype(np.float32),
                              NewItemsInfo(k=10, temperature=0.05, shrink=1.0, bonus=0.0))
        index = build_index(table.apply(ids, text), ids)
        query = text[:1] + 0.1 * rng.normal(size=(1, 384)).astype(np.float32)
        query /= np.linalg.norm(query)
        place, search = _median_ms(table.place, query), _median_ms(index.search, query, 10)
        rows.append({"trained_items": n, "place_ms": place, "hnsw_search_ms": search,
                     "place_over_search": round(place / search, 2)})
        print(json.dumps(rows[-1]), flush=True)
    return {"repeats": REPEATS, "rows": rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", default=None, help="a trained bundle (one with a residual table)")
    p.add_argument("--cost", action="store_true", help="time the placing against an HNSW query instead")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.cost or args.bundle is None:
        if not args.cost:
            p.error("--bundle or --cost is required")
        report = cost()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        return
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
