"""A trained bundle's user model (`user_encoder.onnx`): a history of item vectors → a user vector."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._errors import BundleError
from ._manifest import Manifest
from ._runtime import open_session

if TYPE_CHECKING:
    from ._bundle import Bundle


class UserEncoder:
    """Runs the user model on left-padded histories (most recent last), as the trainer exported it."""

    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None) -> None:
        path = bundle.file(Manifest.USER_ENCODER)
        self.session = open_session(path, device, threads)
        names = {i.name for i in self.session.get_inputs()}
        if names != {"history", "mask"}:
            raise BundleError(f"bundle {bundle.path}: {Manifest.USER_ENCODER} inputs are {sorted(names)}, "
                              "expected history and mask")
        info = bundle.manifest.user_model
        self.max_history = info.max_history if info is not None else 50
        self.dim = bundle.dim

    @classmethod
    def from_bundle(cls, bundle: Bundle, device: str = "cpu", threads: int | None = None) -> UserEncoder | None:
        """The bundle's user model, or None for a bundle without one (a zero-shot export)."""
        return cls(bundle, device, threads) if bundle.has(Manifest.USER_ENCODER) else None

    def __call__(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """(b, dim) float32 user vectors for histories given as (n_i, dim) item vector arrays."""
        length = self.max_history
        batch = np.zeros((len(histories), length, self.dim), dtype=np.float32)
        mask = np.zeros((len(histories), length), dtype=np.float32)
        for row, vectors in enumerate(histories):
            vectors = vectors[-length:]
            batch[row, length - len(vectors):] = vectors
            mask[row, length - len(vectors):] = 1.0
        return np.asarray(self.session.run(None, {"history": batch, "mask": mask})[0], dtype=np.float32)


__all__ = ["UserEncoder"]
