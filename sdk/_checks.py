"""Argument checks shared by the SDK's public calls: each error names the argument and the limit."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SEARCH_MODES = ("auto", "exact", "ann")


def check_k(k: Any, name: str = "k", mode: str = "auto") -> int:
    """A result count: an integer >= 1 (more than there is simply returns what there is); and the
    search mode that goes with it."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {k!r}")
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, got {mode!r}")
    return k


def one_user(history: Any, user_vector: Any, positive: Any, negative: Any) -> None:
    """A query names its user exactly one way: a history, a vector, or positive (+ negative) examples."""
    given = [
        n for n, v in (("history", history), ("user_vector", user_vector), ("positive", positive)) if v is not None
    ]
    if negative is not None and positive is None:
        raise ValueError("negative: needs positive examples too (Qdrant's average_vector strategy)")
    if len(given) != 1:
        raise ValueError("recommend: give exactly one of history, user_vector or positive/negative"
                         + (f" (got {', '.join(given)})" if given else ""))


def id_list(ids: Any, name: str) -> list[str]:
    """A list of item ids (strings) from any iterable but a single string."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise ValueError(f"{name}: expected a list of item ids, got {type(ids).__name__}")
    ids = list(ids)
    for i in ids:
        if not isinstance(i, str):
            raise ValueError(f"{name}: item ids must be strings, got {i!r}")
    return ids


def histories(values: Any, name: str = "histories") -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name}: expected a list of histories (lists of item ids)")
    return list(values)


def metadata_list(metadata: Sequence[Mapping[str, Any]] | None, n: int) -> list[dict[str, Any]]:
    """`n` JSON-serialisable metadata dicts (empty ones when None), copied."""
    if metadata is None:
        return [{} for _ in range(n)]
    if isinstance(metadata, Mapping) or not isinstance(metadata, Sequence) or len(metadata) != n:
        raise ValueError(f"metadata: expected a list of {n} dicts (one per id)")
    out = []
    for i, m in enumerate(metadata):
        if not isinstance(m, Mapping) or not all(isinstance(k, str) for k in m):
            raise ValueError(f"metadata[{i}]: expected a dict with string keys, got {type(m).__name__}")
        try:
            out.append(json.loads(json.dumps(dict(m), allow_nan=False)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"metadata[{i}]: not JSON-serialisable ({e})") from None
    return out


__all__ = ["check_k", "one_user", "id_list", "histories", "metadata_list", "SEARCH_MODES"]
