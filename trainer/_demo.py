"""`lmrec demo`: the main job end to end on the embedded synthetic data, in a few minutes on a CPU.

Trains briefly on the warm split's training part, exports the bundle (encoder, item vectors,
index, user model), then scores the test cases through the SDK (int8, what users get) next to
the untrained encoder and popularity, and shows a few users' histories beside their
recommendations with the history items that explain them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmrec.data import DEFAULT_SPEC

from ._config import TrainConfig

# Brief but real: the synthetic default learns most of what it can in a few epochs.
DEMO_CONFIG = {"epochs": 12, "patience": 3}
SHOWN_USERS = 3


def _print(message: str = "") -> None:
    print(message, flush=True)


def demo(out: str | Path = "out/demo", data: str = DEFAULT_SPEC, seed: int = 0, progress: bool = True,
         config: TrainConfig | None = None, show: Callable[[str], None] = _print) -> dict[str, Any]:
    """Train, export, evaluate and show; returns the evaluation report (also written to OUT.eval.json)."""
    from lmrec import Recommender, load_dataset
    from lmrec.evaluation import (
        BundleScorer,
        FitContext,
        build_report,
        format_table,
        make_split,
        run_methods,
        write_json,
    )

    from ._train import train
    from .baselines import Pop, ZeroShot

    started = time.perf_counter()
    out = Path(out)
    cfg = config or TrainConfig(**DEMO_CONFIG)
    show(f"lmrec demo: training on {data} (warm split, seed {seed}); the bundle goes to {out}")
    train(data, out, split="warm", seed=seed, config=cfg, overwrite=True, progress=progress)
    trained_in = time.perf_counter() - started

    dataset = load_dataset(data)
    split = make_split(dataset, "warm", seed)
    ctx = FitContext(dataset, split, seed=seed, progress=progress)
    scorers = [
        Pop(),
        ZeroShot(base_model=cfg.base_model, max_length=cfg.max_length),
        BundleScorer(str(out), name="lmrec"),
    ]
    results, raw = run_methods(dataset, split, scorers, ctx, log=lambda line: None)
    report = build_report(dataset, split, results, raw, "zeroshot", seed)
    report["train_seconds"] = round(trained_in, 1)
    eval_path = out.parent / f"{out.name}.eval.json"
    write_json(report, eval_path)

    show("")
    show("Test metrics (full ranking over the catalogue; lmrec = the trained int8 bundle through the SDK):")
    show(format_table(report))
    zs, lm = results["zeroshot"]["ndcg@10"], results["lmrec"]["ndcg@10"]
    if zs > 0:
        show(f"trained vs zero-shot NDCG@10: {lm:.4f} vs {zs:.4f} ({lm / zs:.2f}x)")

    rec = Recommender.load(out)
    show("")
    show("A few test users: their latest history, then the top 5 (* = the item they chose next)")
    for case in range(min(SHOWN_USERS, len(split.test))):
        history = [dataset.item_ids[i] for i in split.test.histories[case]]
        target = dataset.item_ids[split.test.targets[case]]
        show("")
        show(f"user {dataset.user_ids[split.test.users[case]]} ({len(history)} items), latest:")
        for item in history[-5:]:
            show(f"    {rec.title(item)}")
        show("  recommended:")
        for n, r in enumerate(rec.recommend(history, k=5, explain=True), 1):
            mark = "*" if r.item_id == target else " "
            because = "; ".join(rec.title(b) for b in r.because[:2])
            show(f"  {mark}{n}. {rec.title(r.item_id)}  ({r.score:.3f})")
            if because:
                show(f"        because you liked: {because}")
    show("")
    show(f"bundle: {out} (manifest.json; `lmrec recommend --bundle {out} --history ID,...`); "
         f"report: {eval_path}; {(time.perf_counter() - started) / 60:.1f} min in all")
    return report
