"""The user-model settings `lmrec train` chooses on validation when no --config fixes them.

The candidates are the settings the ablations found to matter (bench/RESULTS.md, "Quality" and
"Defaults on any data"): on a split without new items, the `cl` + `cooc` objectives or neither
(they helped Office, hurt MovieLens) and residual dropout; on one with new items (where residual
dropout is what teaches the user model to rank borrowed residuals, so it stays on), the
popularity prior, with `cl` + `cooc` off (beside borrowed residuals they tie on validation, place
new targets lower among warm items and double an epoch's time on Office: RESULTS, "cl and cooc
beside borrowed residuals"); and a longer history where the data has long histories. Each candidate is a
`Trainer` over the same item vectors; successive halving keeps the better half after each rung,
so four candidates cost about two full runs. The plan (candidates, rungs) depends on the data
and the settings only, never on the clock, so a run is deterministic for a seed; `--budget` is a
safety stop that, when it is reached, keeps the best candidate so far and says so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ._config import TrainConfig
from ._trainer import Trainer
from .search import TrainerRun, successive_halving

USER_OBJECTIVES = ("cl", "cooc")  # searched together: both on, or both off
LONG_HISTORY = 200  # a candidate history length when the 90th percentile of histories exceeds the default
RUNGS = (1, 3, 6)  # epochs every surviving candidate has trained before the next cut
SEARCH_PATIENCE = 3
KEYS = ("objectives", "residual_dropout", "popularity_prior", "max_history")  # what a candidate may vary


def _objectives(base: tuple[str, ...], on: bool) -> tuple[str, ...]:
    rest = tuple(o for o in base if o not in USER_OBJECTIVES)
    return rest + (USER_OBJECTIVES if on else ())


def for_split(base: TrainConfig, fixed: Collection[str], new_items: bool, log: Callable[[str], None]) -> TrainConfig:
    """`base` as the defaults stand on this split: where it holds new items, `cl` + `cooc` off
    unless the user fixed the objectives (searched or not, the same defaults)."""
    if not new_items or "objectives" in fixed:
        return base
    if off := [o for o in base.objectives if o in USER_OBJECTIVES]:
        log(f"objectives {','.join(off)} off beside borrowed residuals (the split holds new items)")
    return replace(base, objectives=_objectives(base.objectives, False))


def candidates(base: TrainConfig, train: Sequence[np.ndarray], fixed: Collection[str],
               new_items: bool, log: Callable[[str], None]) -> list[TrainConfig]:
    """The grid over the settings not in `fixed` (those the user set), from `base`; `new_items`:
    the split holds items out of training."""
    grid: dict[str, tuple[Any, ...]] = {}
    base = for_split(base, fixed, new_items, log)
    if "objectives" not in fixed and not new_items:
        grid["objectives"] = (_objectives(base.objectives, True), _objectives(base.objectives, False))
    if new_items and "popularity_prior" not in fixed:
        grid["popularity_prior"] = (1.0, 0.0)
    if not new_items and "residual_dropout" not in fixed:
        grid["residual_dropout"] = (0.3, 0.0)
    p90 = float(np.percentile([len(s) for s in train], 90)) if len(train) else 0.0
    if "max_history" not in fixed and p90 > base.max_history:
        grid["max_history"] = (base.max_history, LONG_HISTORY)
    configs = [replace(base, patience=min(base.patience, SEARCH_PATIENCE)) if "patience" not in fixed else base]
    for key, values in grid.items():
        configs = [replace(c, **{key: v}) for c in configs for v in values]
    return configs


def describe(cfg: TrainConfig, keys: Sequence[str]) -> str:
    def show(key: str) -> str:
        value = getattr(cfg, key)
        if key == "objectives":
            used = [o for o in value if o in USER_OBJECTIVES]
            return f"{'+'.join(used) if used else 'no cl/cooc'}"
        return f"{key} {value}"

    return ", ".join(show(k) for k in keys)


def choose(trainers: list[Trainer], deadline: float | None, log: Callable[[str], None],
           save: Callable[[], None]) -> tuple[Trainer, dict[str, Any]]:
    """The winning trainer (its user phase run to its end) and what the search did."""
    keys = [k for k in KEYS if len({repr(getattr(t.cfg, k)) for t in trainers}) > 1]
    for n, t in enumerate(trainers):
        t.label = f"[{n + 1}/{len(trainers)}] "
        log(f"candidate {n + 1}: {describe(t.cfg, keys) or 'the defaults'}")
    runs = [TrainerRun(t, save) for t in trainers]
    started = time.monotonic()
    winner, record = successive_halving(runs, RUNGS if len(runs) > 1 else (), deadline=deadline, log=log)
    assert isinstance(winner, TrainerRun)
    chosen = winner.trainer
    out_of_time = deadline is not None and time.monotonic() >= deadline
    if out_of_time:
        log("search: the --budget ran out; keeping the best candidate so far")
    chosen.label = ""
    summary = {
        "candidates": [{"settings": describe(t.cfg, keys), "best_valid_ndcg@10": r.best,
                        "epochs": sum(h["phase"] == "user" for h in t.history)}
                       for t, r in zip(trainers, runs, strict=True)],
        "chosen": describe(chosen.cfg, keys),
        "rungs": record,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "stopped_by_budget": out_of_time,
        "epochs": sum(sum(h["phase"] == "user" for h in t.history) for t in trainers),
    }
    log(f"search: chose {summary['chosen'] or 'the defaults'} (valid ndcg@10 {winner.best:.4f} at its best epoch) "
        f"after {summary['epochs']} epochs in {summary['minutes']} min")
    return chosen, summary


def rungs_cost(n: int) -> int:
    """Epochs the search trains before the winner's own run: n·r1 + n/2·(r2 - r1) + … (none for one)."""
    if n <= 1:
        return 0
    total, alive, done = 0, n, 0
    for rung in RUNGS:
        total += alive * (rung - done)
        done, alive = rung, max(1, math.ceil(alive / 2))
        if alive == 1:
            break
    return total


__all__ = ["candidates", "choose", "describe", "RUNGS", "rungs_cost"]
