"""Training and export for lmrec (extra `train`: torch, transformers, optimum).

Heavy imports stay inside the modules that need them, so `import lmrec.trainer` is cheap and
says which extra is missing when a feature is used without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._config import OBJECTIVES, TrainConfig, load_config, parse_objectives

if TYPE_CHECKING:
    from ._train import TrainResult, train


def __getattr__(name: str) -> Any:
    # torch is imported only when training is asked for
    if name in ("train", "TrainResult"):
        from . import _train

        return getattr(_train, name)
    raise AttributeError(f"module 'lmrec.trainer' has no attribute {name!r}")


__all__ = ["train", "TrainResult", "TrainConfig", "OBJECTIVES", "load_config", "parse_objectives"]
