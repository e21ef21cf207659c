"""The canonical in-memory dataset every loader produces and every other part consumes."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LoadReport:
    """What a loader skipped or repaired, counted by reason, with the first place it happened."""

    counts: Counter[str] = field(default_factory=Counter)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        self.first.setdefault(reason, where)

    def lines(self) -> list[str]:
        return [f"{reason}: {n} (first at {self.first[reason]})" for reason, n in sorted(self.counts.items())]


@dataclass
class Dataset:
    """Items with text and per-user interaction sequences, ordered by time (ties keep file order).

    Every interaction is a positive; ratings are ignored. Sequences hold item indices into
    `item_ids`, so the catalogue order is the order of `item_ids`.
    """

    name: str
    item_ids: list[str]
    item_texts: list[str]
    item_meta: list[dict[str, Any]]
    user_ids: list[str]
    sequences: list[np.ndarray]
    timestamps: list[np.ndarray] | None = None
    report: LoadReport = field(default_factory=LoadReport)
    template: str = ""

    def __post_init__(self) -> None:
        self.item_index = {item: i for i, item in enumerate(self.item_ids)}
        if len(self.item_index) != len(self.item_ids):
            raise ValueError(f"{self.name}: duplicate item ids")
        if not (len(self.item_texts) == len(self.item_meta) == len(self.item_ids)):
            raise ValueError(f"{self.name}: item ids, texts and metadata differ in length")
        if len(self.user_ids) != len(self.sequences):
            raise ValueError(f"{self.name}: user ids and sequences differ in length")

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
        }

    def fingerprint(self) -> str:
        """sha256 over ids, texts and sequences: equal hashes mean the same training data."""
        h = hashlib.sha256()
        for item, text in zip(self.item_ids, self.item_texts, strict=True):
            h.update(item.encode() + b"\x00" + text.encode() + b"\x01")
        for user, seq in zip(self.user_ids, self.sequences, strict=True):
            h.update(user.encode() + b"\x02")
            h.update(np.ascontiguousarray(seq, dtype=np.int64).tobytes())
        return h.hexdigest()
