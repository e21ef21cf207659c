"""Progress bars: on a terminal only. A run logged to a file gets the log lines each step prints
(one per epoch or phase), not thousands of carriage-return frames."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **options: Any) -> Any:
    """A tqdm bar on stderr, shown when `enabled` and stderr is a terminal (tqdm's disable=None)."""
    from tqdm.auto import tqdm

    options.setdefault("file", sys.stderr)
    options.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=None if enabled else True, **options)


__all__ = ["progress_bar"]
