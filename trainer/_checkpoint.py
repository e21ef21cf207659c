"""Checkpoints of a training run: `OUT.ckpt/state.pt`, written atomically after every epoch, so
`lmrec train --resume` continues an interrupted run exactly and a failed export keeps the model."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from lmrec import LmrecError

from ._trainer import Trainer

CHECKPOINT = "state.pt"


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoints of a run writing `out` live: a sibling `OUT.ckpt/`."""
    out = Path(out).expanduser().absolute()
    return out.parent / f"{out.name}.ckpt"


def save_checkpoint(path: Path, trainer: Trainer, meta: dict[str, Any]) -> None:
    import torch

    path.mkdir(parents=True, exist_ok=True)
    tmp = path / (CHECKPOINT + ".tmp")
    buffer = io.BytesIO()
    torch.save({"meta": meta, "state": trainer.state_dict()}, buffer)
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path / CHECKPOINT)


def load_checkpoint(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    import torch

    file = path / CHECKPOINT
    if not file.is_file():
        raise LmrecError(f"--resume: no checkpoint at {file} (nothing to resume; run without --resume)")
    try:
        saved = torch.load(file, weights_only=False, map_location="cpu")
    except Exception as e:  # a torn or foreign file: say which, never a traceback
        raise LmrecError(f"--resume: checkpoint {file} cannot be read ({e})") from None
    for key in ("fingerprint", "split", "seed", "cold_share", "config"):
        if saved["meta"].get(key) != meta[key]:
            raise LmrecError(f"--resume: the checkpoint in {path} was made with another {key} "
                             f"({saved['meta'].get(key)!r} vs now {meta[key]!r}); run without --resume to start over")
    return saved["state"]


__all__ = ["checkpoint_dir", "save_checkpoint", "load_checkpoint", "CHECKPOINT"]
