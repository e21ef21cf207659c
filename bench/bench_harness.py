"""Speed of the evaluation harness and of the synthetic generator.

Usage: python bench/bench_harness.py
"""

from __future__ import annotations

import time

import numpy as np
from lmrec.data import synthetic
from lmrec.evaluation import Cases, evaluate


def main() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 5000, 10_000
    cases = Cases(np.arange(n_users), [rng.integers(0, n_items, 20) for _ in range(n_users)],
                  rng.integers(0, n_items, n_users))
    scores = rng.random((512, n_items), dtype=np.float32)
    start = time.perf_counter()
    result = evaluate(lambda h: scores[:len(h)], cases, n_items)
    ranked = time.perf_counter() - start
    start = time.perf_counter()
    result.summary()
    summarised = time.perf_counter() - start
    print(
        f"full ranking, {n_users} users x {n_items} items: {ranked:.2f} s; "
        f"1000-resample bootstrap of 8 metrics: {summarised:.2f} s"
    )
    start = time.perf_counter()
    data = synthetic(items=1_000_000, users=1000, seed=0)
    print(f"synthetic catalogue of {data.n_items} items: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
