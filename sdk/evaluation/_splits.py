"""Deterministic train / validation / test splits following ../shared/data/README.md.

- `warm`: leave-one-out by order. Users with >= 3 interactions; last item = test target,
  second-to-last = validation target; training = the rest. The validation item is part of the
  history when predicting the test item.
- `cold`: as `warm`, but a seeded share of items never appears in any training sequence; only
  users whose target is such an item are evaluated, with their full prefix (cold items included).
- `mixed`: the cold split's held-out items (same seed, same items) and training part, but every
  user is evaluated whatever the target: a catalogue where some items are new, as in production.
- `temporal`: one global cut in time; each user's first interaction after the cut is the test
  target (history = everything before it); validation uses a second cut inside the training part.

`drop_last` (leave-one-out kinds) splits the data without each user's last interactions: with 1,
its test cases are the full split's validation cases, one step beyond a history item its training
never saw, as test is to a model trained on the full split (lmrec.trainer's test-like validation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .._errors import DataError
from ..data import Dataset

SPLITS = ("warm", "cold", "mixed", "temporal")
HELD_OUT = ("cold", "mixed")  # splits that hold items out of training; they train alike
MIN_INTERACTIONS = 3


@dataclass
class Cases:
    """Evaluation cases: for each user, a history (item indices, oldest first) and one target."""

    users: np.ndarray
    histories: list[np.ndarray]
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


@dataclass
class Split:
    kind: str
    seed: int
    n_items: int
    train: list[np.ndarray]
    train_users: np.ndarray
    valid: Cases
    test: Cases
    cold_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    params: dict = field(default_factory=dict)

    def new_targets(self, cases: Cases) -> np.ndarray:
        """Boolean mask of the cases whose target is an item held out of training."""
        return np.isin(cases.targets, self.cold_items)

    def train_counts(self) -> np.ndarray:
        """Interactions per item in the training sequences (popularity)."""
        counts = np.zeros(self.n_items, dtype=np.int64)
        for seq in self.train:
            np.add.at(counts, seq, 1)
        return counts

    def describe(self) -> dict:
        return {"kind": self.kind, "seed": self.seed, "train_users": len(self.train),
                "train_interactions": int(sum(len(s) for s in self.train)),
                "valid_users": len(self.valid), "test_users": len(self.test),
                "cold_items": int(len(self.cold_items)), **self.params}


def _cases(users: list[int], histories: list[np.ndarray], targets: list[int]) -> Cases:
    return Cases(np.asarray(users, dtype=np.int64), histories, np.asarray(targets, dtype=np.int64))


def make_split(data: Dataset, kind: str = "warm", seed: int = 0, cold_share: float = 0.2,
               temporal_quantile: float = 0.9, drop_last: int = 0) -> Split:
    if kind not in SPLITS:
        raise DataError(f"split {kind!r}: expected one of {', '.join(SPLITS)}")
    if not 0.0 < cold_share < 1.0:
        raise DataError(f"cold_share must be in (0, 1), got {cold_share}")
    if not isinstance(drop_last, int) or isinstance(drop_last, bool) or drop_last < 0:
        raise ValueError(f"drop_last must be an integer >= 0, got {drop_last!r}")
    if kind == "temporal":
        if drop_last:
            raise DataError("split 'temporal': drop_last applies to the leave-one-out splits only")
        return _temporal(data, seed, temporal_quantile)
    sequences = [s[:len(s) - drop_last] for s in data.sequences] if drop_last else data.sequences
    eligible = [u for u, s in enumerate(sequences) if len(s) >= MIN_INTERACTIONS]
    if not eligible:
        raise DataError(f"{data.name}: no user has {MIN_INTERACTIONS} or more interactions")
    cold = np.zeros(data.n_items, dtype=bool)
    if kind in HELD_OUT:
        rng = np.random.default_rng(seed)
        n_cold = max(1, int(round(cold_share * data.n_items)))
        cold[rng.choice(data.n_items, size=n_cold, replace=False)] = True
    train, train_users = [], []
    valid: tuple[list, list, list] = ([], [], [])
    test: tuple[list, list, list] = ([], [], [])
    for u in eligible:
        seq = sequences[u]
        head = seq[:-2]
        head = head[~cold[head]]
        if len(head):
            train.append(head)
            train_users.append(u)
        if kind in ("warm", "mixed") or cold[seq[-2]]:
            valid[0].append(u)
            valid[1].append(seq[:-2])
            valid[2].append(int(seq[-2]))
        if kind in ("warm", "mixed") or cold[seq[-1]]:
            test[0].append(u)
            test[1].append(seq[:-1])
            test[2].append(int(seq[-1]))
    return Split(kind, seed, data.n_items, train, np.asarray(train_users, dtype=np.int64),
                 _cases(*valid), _cases(*test), np.flatnonzero(cold),
                 {"cold_share": cold_share} if kind in HELD_OUT else {})


def _temporal(data: Dataset, seed: int, quantile: float) -> Split:
    if data.timestamps is None:
        raise DataError(f"{data.name}: the temporal split needs timestamps, and this data has order only")
    every = np.concatenate(data.timestamps) if data.timestamps else np.zeros(0)
    if len(every) == 0:
        raise DataError(f"{data.name}: no interactions")
    test_cut = float(np.quantile(every, quantile))
    valid_cut = float(np.quantile(every[every <= test_cut], quantile))
    train, train_users = [], []
    valid: tuple[list, list, list] = ([], [], [])
    test: tuple[list, list, list] = ([], [], [])
    for u, (seq, ts) in enumerate(zip(data.sequences, data.timestamps, strict=True)):
        n_train = int(np.searchsorted(ts, valid_cut, side="right"))
        n_test_hist = int(np.searchsorted(ts, test_cut, side="right"))
        if n_train:
            train.append(seq[:n_train])
            train_users.append(u)
        if n_train and n_train < n_test_hist:
            valid[0].append(u)
            valid[1].append(seq[:n_train])
            valid[2].append(int(seq[n_train]))
        if n_test_hist and n_test_hist < len(seq):
            test[0].append(u)
            test[1].append(seq[:n_test_hist])
            test[2].append(int(seq[n_test_hist]))
    return Split("temporal", seed, data.n_items, train, np.asarray(train_users, dtype=np.int64),
                 _cases(*valid), _cases(*test), params={"valid_cut": valid_cut, "test_cut": test_cut})


def training_items(split: Split) -> np.ndarray:
    """Boolean mask of items that occur in any training sequence."""
    seen = np.zeros(split.n_items, dtype=bool)
    for seq in split.train:
        seen[seq] = True
    return seen


def flatten(histories: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) of every (case, history item) pair: a sparse history matrix's coordinates."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    items = np.concatenate(histories) if len(histories) else np.zeros(0, dtype=np.int64)
    return rows, items.astype(np.int64)
