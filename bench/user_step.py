"""Time of one user-model training step on a large catalogue: the full softmax, the sampled
softmax with the item tower over the whole catalogue (stop 22), and the sampled softmax with the
tower over the step's items only (what `lmrec train` does now). Same Trainer, same batches, the
three variants interleaved per repeat; the medians and their ratios to the full softmax go to
`--json`. Base vectors are random (the step's cost does not depend on them), so no encoding runs.

    HF_HUB_OFFLINE=1 taskset -c 0 .venv/bin/python bench/user_step.py \\
        --data synthetic:items=50000,users=20000,seed=0,words=150 --steps 12 --repeats 3 \\
        --json bench/results/user-step-50k.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="synthetic:items=50000,users=20000,seed=0,words=150")
    parser.add_argument("--steps", type=int, default=12, help="steps per timed epoch slice")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--softmax-items", type=int, help="the sample's size (default: TrainConfig's)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import lmrec
    from lmrec.evaluation import make_split
    from lmrec.trainer import TrainConfig, Trainer, set_torch_threads

    set_torch_threads(args.threads)
    data = lmrec.load_dataset(args.data)
    split = make_split(data, "warm", 0)
    sample = {} if args.softmax_items is None else {"softmax_items": args.softmax_items}
    cfg = TrainConfig(objectives=("cl", "cooc"), **sample)
    base = np.random.default_rng(0).standard_normal((data.n_items, 384)).astype(np.float32)
    trainer = Trainer(data, split, cfg, 0, "cpu", False, base, log=lambda message: None)
    steps_per_epoch = -(-len(trainer.rows) // cfg.batch_size)
    trainer.rows = trainer.rows[: args.steps * cfg.batch_size]
    pool, tower = trainer.sample_pool, trainer.tower
    if pool is None:
        parser.error(f"--data: {int(trainer.seen.sum())} training items, not above softmax_items "
                     f"{cfg.softmax_items}: nothing is sampled (lower --softmax-items)")
    variants: dict[str, Any] = {
        "full softmax": lambda: setattr(trainer, "sample_pool", None),
        "sampled, tower over all items": lambda: (setattr(trainer, "sample_pool", pool),
                                                  setattr(tower, "subset", lambda items, keep: tower(keep)[items])),
        "sampled, tower over the step's items": lambda: (setattr(trainer, "sample_pool", pool),
                                                         tower.__dict__.pop("subset", None)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for use in variants.values():  # warm-up: allocations, first-call paths
        use()
        trainer.user_epoch()
    for _ in range(args.repeats):
        for name, use in variants.items():
            use()
            start = time.perf_counter()
            trainer.user_epoch()
            seconds[name].append((time.perf_counter() - start) / args.steps)
    full = statistics.median(seconds["full softmax"])
    rows = {name: {"seconds_per_step": round(statistics.median(s), 4), "repeats": [round(x, 4) for x in s],
                   "vs_full_softmax": round(statistics.median(s) / full, 3),
                   "epoch_seconds_estimate": round(statistics.median(s) * steps_per_epoch)}
            for name, s in seconds.items()}
    report = {
        "data": args.data, "items": data.n_items, "training_items": int(trainer.seen.sum()),
        "softmax_items": cfg.softmax_items, "batch_size": cfg.batch_size, "objectives": list(cfg.objectives),
        "residual_dropout": cfg.residual_dropout, "steps_per_epoch": steps_per_epoch, "steps": args.steps,
        "repeats": args.repeats,
        "threads": args.threads, "machine": platform.processor() or platform.machine(), "variants": rows,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
