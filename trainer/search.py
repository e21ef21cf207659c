"""Successive halving: choose among a few settings on validation for the cost of a few full runs.

Every candidate trains a little, the better half (by best validation NDCG@10 so far) trains on,
and so on until one is left, which trains to its own early stop (Jamieson & Talwalkar 2016;
the elimination step of Hyperband, Li et al. 2018). Runs keep their state between rungs, so no
epoch is trained twice; a deadline ends the elimination early and keeps the best so far.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol


class Run(Protocol):
    """A training run that can be advanced epoch by epoch and says how good it is on validation."""

    best: float  # best validation NDCG@10 so far (-1 before the first epoch)
    finished: bool  # early-stopped, or out of epochs

    def advance(self, epochs: int) -> None: ...


def successive_halving(runs: Sequence[Run], rungs: Sequence[int], keep: float = 0.5, deadline: float | None = None,
                       log: Callable[[str], None] | None = None) -> tuple[Run, list[dict[str, float | int]]]:
    """The winning run, trained to its end, and one record per rung (candidates left, best value).

    `rungs` are cumulative epoch counts: every surviving run has trained that many epochs (or
    finished) before the next cut. `deadline` is a time.monotonic() value."""
    if not runs:
        raise ValueError("successive_halving: no candidates")
    alive, done, record = list(runs), 0, []
    for rung in rungs:
        for run in alive:
            if not run.finished and (deadline is None or time.monotonic() < deadline):
                run.advance(rung - done)
        done = rung
        alive.sort(key=lambda r: -r.best)
        record.append({"epochs": rung, "candidates": len(alive), "best": alive[0].best})
        if log is not None:
            log(f"search: after {rung} epoch(s), best validation NDCG@10 {alive[0].best:.4f} of {len(alive)}")
        alive = alive[:max(1, math.ceil(len(alive) * keep))]
        if len(alive) == 1 or (deadline is not None and time.monotonic() >= deadline):
            break
    winner = alive[0]
    while not winner.finished and (deadline is None or time.monotonic() < deadline):
        winner.advance(1)
    return winner, record


__all__ = ["successive_halving", "Run"]
