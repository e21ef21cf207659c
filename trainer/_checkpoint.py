"""Checkpoints of a training run: `OUT.ckpt/state.pt`, written atomically after every epoch, and
`OUT.ckpt/stage-<name>.pt` after each stage before the user phase, so `lmrec train --resume`
continues an interrupted run exactly and a failed export keeps the model."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from lmrec import LmrecError

from ._trainer import Trainer

CHECKPOINT = "state.pt"
STAGE_PREFIX = "stage-"
META_KEYS = ("fingerprint", "split", "seed", "cold_share", "config", "search", "fixed")


def checkpoint_dir(out: str | Path) -> Path:
    """Where the checkpoints of a run writing `out` live: a sibling `OUT.ckpt/`."""
    out = Path(out).expanduser().absolute()
    return out.parent / f"{out.name}.ckpt"


def _write(file: Path, payload: dict[str, Any]) -> None:
    import torch

    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(file)


def _read(file: Path, meta: dict[str, Any], path: Path) -> dict[str, Any]:
    import torch

    try:
        saved = torch.load(file, weights_only=False, map_location="cpu")
    except Exception as e:  # a torn or foreign file: say which, never a traceback
        raise LmrecError(f"--resume: checkpoint {file} cannot be read ({e})") from None
    for key in META_KEYS:
        if saved["meta"].get(key) != meta[key]:
            raise LmrecError(f"--resume: the checkpoint in {path} was made with another {key} "
                             f"({saved['meta'].get(key)!r} vs now {meta[key]!r}); run without --resume to start over")
    return saved


def save_checkpoint(path: Path, trainer: Trainer, meta: dict[str, Any], extra: dict[str, Any]) -> None:
    """The trainer's state after an epoch, with `extra` (its config, the stages' reports)."""
    _write(path / CHECKPOINT, {"meta": meta, "state": trainer.state_dict(), **extra})


def load_checkpoint(path: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """{"state", "config", "reports"} of the last epoch; None when only earlier stages finished."""
    file = path / CHECKPOINT
    if not file.is_file():
        if any(path.glob(f"{STAGE_PREFIX}*.pt")):
            return None
        raise LmrecError(f"--resume: no checkpoint at {file} (nothing to resume; run without --resume)")
    return _read(file, meta, path)


def save_stage(path: Path, name: str, meta: dict[str, Any], payload: dict[str, Any]) -> None:
    """What a stage before the user phase produced (`text`, `mlm`): a resumed run skips it."""
    _write(path / f"{STAGE_PREFIX}{name}.pt", {"meta": meta, **payload})


def load_stage(path: Path, name: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    file = path / f"{STAGE_PREFIX}{name}.pt"
    return _read(file, meta, path) if file.is_file() else None


__all__ = ["checkpoint_dir", "save_checkpoint", "load_checkpoint", "save_stage", "load_stage", "CHECKPOINT"]
