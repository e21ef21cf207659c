"""lmrec: text-first recommendations from a quantized ONNX encoder and an HNSW index.

The SDK imports only numpy, tokenizers, hnswlib and an ONNX Runtime build (never torch):
`from lmrec import Recommender`. Training lives in `lmrec.trainer` (extra `train`), the gRPC
server in `lmrec.server` (extra `server`).
"""

from __future__ import annotations

import importlib.util as _util
import warnings as _warnings
from typing import TYPE_CHECKING, Any

from ._errors import BundleError, DataError, LmrecError, MissingDependencyError, UnknownItemError
from .data import Dataset, load_dataset

__version__ = "0.1.0"

RUNTIME_HINT = (
    "lmrec needs an ONNX Runtime build to embed and recommend: "
    "pip install 'lmrec[cpu]' (CPU) or 'lmrec[gpu]' (CUDA); never both"
)
if _util.find_spec("onnxruntime") is None:
    _warnings.warn(RUNTIME_HINT, stacklevel=2)

if TYPE_CHECKING:
    from ._recommender import Recommender


def __getattr__(name: str) -> Any:
    # Lazy so that `import lmrec` stays fast and data/eval work without a runtime installed.
    if name == "Recommender":
        if _util.find_spec("onnxruntime") is None:
            raise MissingDependencyError(RUNTIME_HINT)
        from ._recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'lmrec' has no attribute {name!r}")


__all__ = [
    "Recommender", "Dataset", "load_dataset",
    "LmrecError", "DataError", "BundleError", "MissingDependencyError", "UnknownItemError", "__version__",
]
