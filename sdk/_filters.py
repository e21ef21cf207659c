"""Metadata filters: `{"field": value}` (equals), `{"field": [a, b]}` (in), or a callable."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Filter = Mapping[str, Any] | Callable[[str, Mapping[str, Any]], bool]
Metadata = Callable[[str], Mapping[str, Any]]  # item id -> its metadata

_MISSING = object()
_SCALARS = (str, int, float, bool, type(None))
_SETS = (list, tuple, set, frozenset)


def matches(value: Any, wanted: Any) -> bool:
    """Equals, or `in` when `wanted` is a list; a list-valued field matches when any element does."""
    values = value if isinstance(value, list) else [value]
    options = wanted if isinstance(wanted, _SETS) else [wanted]
    return any(v == w for v in values for w in options)


def predicate(filter: Filter | None, metadata: Metadata) -> Callable[[str], bool] | None:
    """Turn a metadata condition dict or a callable(item_id, metadata) into a predicate on ids."""
    if filter is None:
        return None
    if callable(filter):
        call = filter
        return lambda item: bool(call(item, metadata(item)))
    if not isinstance(filter, Mapping) or not filter:
        raise ValueError("filter: expected a non-empty dict of metadata conditions "
                         "({'field': value} or {'field': [v1, v2]}) or a callable(item_id, metadata)")
    for key, wanted in filter.items():
        if not isinstance(key, str):
            raise ValueError(f"filter: field names must be strings, got {key!r}")
        options = wanted if isinstance(wanted, _SETS) else [wanted]
        if not options or not all(isinstance(w, _SCALARS) for w in options):
            raise ValueError(f"filter[{key!r}]: expected a value or a non-empty list of values "
                             f"(str, int, float, bool, None), got {wanted!r}")
    conditions = list(filter.items())
    return lambda item: all(
        (value := metadata(item).get(key, _MISSING)) is not _MISSING and matches(value, wanted)
        for key, wanted in conditions)


__all__ = ["Filter", "predicate", "matches"]
