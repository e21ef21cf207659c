"""The SDK's text encoder: a bundle's ONNX graph run by ONNX Runtime over its `tokenizer.json`.

No torch, transformers or optimum: `tokenizers` does the tokenisation (in Rust, in parallel) and the
graph already does mean pooling and L2 normalisation. Texts are sorted by token length and padded
per batch, so a batch of short texts never pays for one long text.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import BundleError, LmrecError
from ._manifest import Manifest
from ._runtime import DEVICES, choose_precision, open_session

if TYPE_CHECKING:
    from ._bundle import Bundle
# Texts tokenised per call to the Rust tokenizer: big enough to use its thread pool, small enough
# that a million texts never sit in memory as Encoding objects at once.
_TOKENIZE_CHUNK = 8192


class TextEncoder:
    """float32 L2-normalised sentence vectors from an exported encoder graph.

    `device="cuda"` uses ONNX Runtime's CUDAExecutionProvider and raises when it is not available
    instead of running on the CPU behind the caller's back. Safe to call from many threads.
    """

    def __init__(self, onnx_path: str | os.PathLike[str], tokenizer_path: str | os.PathLike[str],
                 max_length: int, device: str = "cpu", threads: int | None = None) -> None:
        from tokenizers import Tokenizer

        if device not in DEVICES:
            raise ValueError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 2:
            raise ValueError(f"max_length {max_length!r}: must be an integer >= 2")
        for what, p in (("onnx_path", onnx_path), ("tokenizer_path", tokenizer_path)):
            if not Path(p).is_file():
                raise LmrecError(f"{what} {p}: no such file")

        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._pad_id = _pad_id(self.tokenizer)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length)
        self.max_length = max_length

        self.session = open_session(onnx_path, device, threads)
        self.device = device
        self.providers: list[str] = list(self.session.get_providers())
        self._inputs = [i.name for i in self.session.get_inputs()]
        unknown = set(self._inputs) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self._inputs:
            raise LmrecError(f"onnx_path {onnx_path}: unexpected graph inputs {self._inputs} "
                             "(expected input_ids, attention_mask[, token_type_ids])")
        out_shape = self.session.get_outputs()[0].shape
        if not isinstance(out_shape[-1], int):
            raise LmrecError(f"onnx_path {onnx_path}: output dimension is not fixed ({out_shape})")
        self.dim = int(out_shape[-1])
        self.truncated = 0
        self.precision: str | None = None  # set by from_bundle
        self.precision_reason = ""
        self._lock = threading.Lock()

    @classmethod
    def from_bundle(cls, bundle: Bundle, device: str = "cpu", precision: str = "auto",
                    threads: int | None = None) -> TextEncoder:
        """The bundle's item encoder at `precision` ("auto": see `choose_precision`) on `device`."""
        chosen, why = choose_precision(bundle, device, precision)
        encoder = cls(bundle.encoder_path(chosen), bundle.file(Manifest.TOKENIZER), bundle.max_length, device, threads)
        if encoder.dim != bundle.dim:
            raise BundleError(f"bundle {bundle.path}: the {chosen} encoder outputs dim {encoder.dim}, "
                              f"manifest dim is {bundle.dim}")
        encoder.precision, encoder.precision_reason = chosen, why
        return encoder

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """float32 (len(texts), dim), L2-normalised, in the order given. Texts longer than
        max_length tokens are truncated and counted in `self.truncated`."""
        if isinstance(texts, (str, bytes)):
            raise ValueError("texts: expected a sequence of strings, got a single string")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size {batch_size!r}: must be an integer >= 1")
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}]: expected a string, got {type(t).__name__}")
            if not t.strip():
                raise ValueError(f"texts[{i}]: empty text (nothing to embed)")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            chunk = texts[start:start + _TOKENIZE_CHUNK]
            encodings = self._encode(chunk)
            with self._lock:
                self.truncated += sum(1 for e in encodings if e.overflowing)
            lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
            order = np.argsort(-lengths, kind="stable")
            for b in range(0, len(order), batch_size):
                idx = order[b:b + batch_size]
                out[start + idx] = self._run([encodings[i] for i in idx], int(lengths[idx[0]]))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, np.maximum(norms, 1e-12), out=out)
        return out

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many of `texts` exceed max_length tokens (tokenised only, nothing embedded)."""
        return sum(sum(1 for e in self._encode(list(texts[start:start + _TOKENIZE_CHUNK])) if e.overflowing)
                   for start in range(0, len(texts), _TOKENIZE_CHUNK))

    def _encode(self, texts: list[str]) -> list[Any]:
        fast = getattr(self.tokenizer, "encode_batch_fast", None)  # no offsets: faster (tokenizers >= 0.20)
        return (fast or self.tokenizer.encode_batch)(texts, add_special_tokens=True)

    def _run(self, encodings: list[Any], length: int) -> np.ndarray:
        ids = np.full((len(encodings), length), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), length), dtype=np.int64)
        types = np.zeros((len(encodings), length), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return self.session.run(None, {name: feeds[name] for name in self._inputs})[0]

    def __repr__(self) -> str:
        return f"TextEncoder(dim={self.dim}, device={self.device!r}, max_length={self.max_length})"


def _pad_id(tokenizer: Any) -> int:
    """The tokenizer's pad id (masked out by the graph, so only its validity matters)."""
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"])
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return int(token_id)
    return 0


__all__ = ["TextEncoder"]
