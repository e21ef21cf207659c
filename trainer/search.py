"""Choosing settings on validation for the cost of a few full runs.

`successive_halving`: every candidate trains a little, the better half (by the best validation
NDCG@10 of its trained epochs) trains on, and so on until one is left, which trains to its own early stop
(Jamieson & Talwalkar 2016; the elimination step of Hyperband, Li et al. 2018). Runs keep their
state between rungs, so no epoch is trained twice; a deadline ends the elimination early and
keeps the best so far. It suits settings whose ranking shows early.

`coordinate_search`: one setting at a time, every candidate trained to its own early stop. It
suits settings that converge late (strong dropout), where an early cut picks wrongly, and costs
1 + sum(len(values) - 1) runs instead of the grid's product.

`TrainerRun` makes a `Trainer`'s user phase such a run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from ._trainer import Trainer


class Run(Protocol):
    """A training run that can be advanced epoch by epoch and says how good it is on validation."""

    best: float  # best validation NDCG@10 of the epochs it has trained so far (-1 before the first)
    finished: bool  # early-stopped, or out of epochs

    def advance(self, epochs: int) -> None: ...


class TrainerRun:
    """A Trainer as a run of the search: advanced epoch by epoch, judged by its best trained epoch.

    Not by `trainer.best`, which counts the untrained start: every candidate shares that score, so
    where no candidate beats it yet they would all tie at it and the first listed would go on,
    however little it learns (MovieLens cold, seed 0 at text temperature 0.1: the kept candidate
    stalled below the untrained score, which then shipped). The winner still ships the untrained
    model if none of its epochs beats it."""

    def __init__(self, trainer: Trainer, save: Callable[[], None]) -> None:
        self.trainer, self.save = trainer, save

    @property
    def best(self) -> float:
        return float(self.trainer.phase_best)

    @property
    def finished(self) -> bool:
        return self.trainer.phase_done

    def advance(self, epochs: int) -> None:
        self.trainer.advance_user(epochs, "user", self.save)


def successive_halving(runs: Sequence[Run], rungs: Sequence[int], keep: float = 0.5, deadline: float | None = None,
                       log: Callable[[str], None] | None = None) -> tuple[Run, list[dict[str, float | int]]]:
    """The winning run, trained to its end, and one record per rung (candidates left, best value).

    `rungs` are cumulative epoch counts: every surviving run has trained that many epochs (or
    finished) before the next cut. `deadline` is a time.monotonic() value; the first rung (with no
    rungs, the winner's first epoch) runs even past it, so that the winner has trained (a large
    catalogue's passes can spend the budget before training starts)."""
    if not runs:
        raise ValueError("successive_halving: no candidates")
    alive, done, record = list(runs), 0, []
    for rung in rungs:
        for run in alive:
            if not run.finished and (deadline is None or time.monotonic() < deadline or done == 0):
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
    while not winner.finished and (deadline is None or time.monotonic() < deadline or done == 0):
        winner.advance(1)
        done = max(done, 1)
    return winner, record


C = TypeVar("C")
R = TypeVar("R", bound=Run)


def coordinate_search(base: C, grid: Mapping[str, Sequence[Any]], start: Callable[[C], R],
                      log: Callable[[str], None] | None = None) -> tuple[R, list[R], list[dict[str, Any]]]:
    """The best run, every run trained, and one record per setting searched.

    `base` is a dataclass of settings; `grid` maps its fields to the values to try, in the order
    they are searched: each field's values are tried with the fields before it at their best and
    the fields after it at `base`. `start(settings)` makes a run, trained here to its own end;
    settings met twice are trained once. Ties keep the earlier value."""
    runs: dict[tuple[Any, ...], R] = {}

    def trained(settings: C) -> R:
        key = astuple(cast(Any, settings))
        if key not in runs:
            run = runs[key] = start(settings)
            while not run.finished:
                run.advance(1)
        return runs[key]

    best = base
    record = []
    for key, values in grid.items():
        stage = []
        for value in values:
            settings = cast(C, replace(cast(Any, best), **{key: value}))
            stage.append((value, settings, trained(settings)))
        value, best, _ = max(stage, key=lambda s: s[2].best)
        record.append({"setting": key, "chosen": value,
                       "valid_ndcg@10": {str(v): r.best for v, _, r in stage}})
        if log is not None:
            log(f"search: {key} {value} (validation NDCG@10 "
                + ", ".join(f"{v}: {r.best:.4f}" for v, _, r in stage) + ")")
    return trained(best), list(runs.values()), record  # trains `base` here when nothing was searched


__all__ = ["successive_halving", "coordinate_search", "Run"]
