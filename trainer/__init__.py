"""Training and export for lmrec (extra `train`: torch, transformers, optimum).

Heavy imports stay inside the modules that need them, so `import lmrec.trainer` is cheap and
says which extra is missing when a feature is used without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._budget import DEFAULT_BUDGET, TEST_LIKE_SHARE, TEXT_SHARE, TRAIN_SHARE
from ._config import OBJECTIVES, TEXT_TEMPERATURES, TrainConfig, load_config, parse_objectives

if TYPE_CHECKING:
    from ._bench_embed import bench_embed
    from ._bench_embed import format_table as format_bench_table
    from ._bench_embed import write_report as write_bench_report
    from ._checkpoint import checkpoint_dir
    from ._demo import demo
    from ._encoder import TorchEncoder, cached_item_vectors, set_torch_threads
    from ._finetune import PartialEncoder
    from ._text_finetune import TextFinetuneResult, finetune_text
    from ._train import TrainResult, train
    from ._trainer import Trainer, text_rule

# torch is imported only when training (or the torch encoder) is asked for
_LAZY = {
    "train": ("_train", "train"),
    "TrainResult": ("_train", "TrainResult"),
    "Trainer": ("_trainer", "Trainer"),
    "text_rule": ("_trainer", "text_rule"),
    "checkpoint_dir": ("_checkpoint", "checkpoint_dir"),
    "demo": ("_demo", "demo"),
    "TorchEncoder": ("_encoder", "TorchEncoder"),
    "cached_item_vectors": ("_encoder", "cached_item_vectors"),
    "set_torch_threads": ("_encoder", "set_torch_threads"),
    "PartialEncoder": ("_finetune", "PartialEncoder"),
    "finetune_text": ("_text_finetune", "finetune_text"),
    "TextFinetuneResult": ("_text_finetune", "TextFinetuneResult"),
    "bench_embed": ("_bench_embed", "bench_embed"),
    "format_bench_table": ("_bench_embed", "format_table"),
    "write_bench_report": ("_bench_embed", "write_report"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    raise AttributeError(f"module 'lmrec.trainer' has no attribute {name!r}")


__all__ = [
    "train",
    "TrainResult",
    "Trainer",
    "text_rule",
    "checkpoint_dir",
    "TrainConfig",
    "OBJECTIVES",
    "TEXT_TEMPERATURES",
    "load_config",
    "parse_objectives",
    "DEFAULT_BUDGET",
    "TEST_LIKE_SHARE",
    "TEXT_SHARE",
    "TRAIN_SHARE",
    "demo",
    "TorchEncoder",
    "cached_item_vectors",
    "set_torch_threads",
    "PartialEncoder",
    "finetune_text",
    "TextFinetuneResult",
    "bench_embed",
    "format_bench_table",
    "write_bench_report",
]
