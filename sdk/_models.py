"""A bundle's models, opened together on one device: the item encoder and the user model."""

from __future__ import annotations

import logging
import os

from ._bundle import Bundle
from ._encoder import TextEncoder
from ._errors import LmrecError
from ._manifest import PRECISIONS as ENCODER_PRECISIONS
from ._runtime import choose_device
from ._user_encoder import UserEncoder

log = logging.getLogger("lmrec")

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", *ENCODER_PRECISIONS)


def open_models(
    bundle_dir: str | os.PathLike[str],
    device: str = "auto",
    precision: str = "auto",
    threads: int | None = None,
    verify: bool = True,
) -> tuple[Bundle, TextEncoder, UserEncoder | None, str]:
    """(bundle, item encoder, user model or None, device). With device "auto", a CUDA provider
    that fails to run the encoder means the CPU (logged); "cuda" raises instead."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    target = choose_device(device)
    runs = {precision} if precision != "auto" else {"int8", "fp32"} | ({"fp16"} if target == "cuda" else set())
    bundle = Bundle.open(bundle_dir, verify=verify, precisions=runs)
    try:
        encoder = TextEncoder.from_bundle(bundle, target, precision, threads)
    except LmrecError as e:
        if device != "auto" or target != "cuda":
            raise
        log.warning("device 'auto': CUDA unusable (%s); using the CPU", e)
        target = "cpu"
        encoder = TextEncoder.from_bundle(bundle, target, precision, threads)
    return bundle, encoder, UserEncoder.from_bundle(bundle, target, threads), target


__all__ = ["open_models", "DEVICES", "PRECISIONS"]
