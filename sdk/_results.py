"""What the SDK's queries return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np


class Recommendation(NamedTuple):
    """One result: unpacks as `item_id, score`. The score is the cosine similarity in [-1, 1]
    (for the popularity fallback of an empty history: the count scaled to [0, 1])."""

    item_id: str
    score: float


class ExplainedRecommendation(NamedTuple):
    """A result of `recommend(..., explain=True)`: unpacks as `item_id, score, because`, where
    `because` are the history items that contributed most to the score (best first)."""

    item_id: str
    score: float
    because: tuple[str, ...]


class Recommendations(list[Any]):
    """The results of `recommend`, best first, and `unknown_ids`: history ids that were skipped."""

    def __init__(self, results: Any = (), unknown_ids: tuple[str, ...] = ()) -> None:
        super().__init__(results)
        self.unknown_ids = unknown_ids


@dataclass(frozen=True)
class Item:
    """One catalogue item as `get_item` returns it."""

    item_id: str
    text: str | None
    metadata: dict[str, Any]
    vector: np.ndarray


@dataclass(frozen=True)
class UserSegment:
    """A group of users from `user_segments`: who is in it and the items that typify it."""

    members: list[int]  # positions in the `histories` given
    items: list[str]  # members' history items closest to the group centre, most central first
    centroid: np.ndarray


__all__ = ["Recommendation", "ExplainedRecommendation", "Recommendations", "Item", "UserSegment"]
