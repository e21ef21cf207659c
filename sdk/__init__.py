"""lmrec: text-first recommendations from a quantized ONNX encoder and an HNSW index.

The SDK imports only numpy, tokenizers, hnswlib and an ONNX Runtime build (never torch):
`from lmrec import Recommender`. Everything public is exported here; batch jobs (embed a
catalogue, build an index, pack a bundle) are in `lmrec.offline`, data and evaluation in
`lmrec.data` and `lmrec.evaluation`, training in `lmrec.trainer` (extra `train`), the gRPC
server and client in `lmrec.server` and `lmrec.client` (extra `server`).
"""

from __future__ import annotations

import importlib
import importlib.util as _util
import warnings as _warnings
from typing import TYPE_CHECKING, Any

from ._bundle import Bundle, BundleWriter, verify_bundle
from ._errors import BundleError, DataError, LmrecError, MissingDependencyError, StateError, UnknownItemError, require
from ._filters import Filter
from ._manifest import FORMAT_VERSION, DataInfo, FileEntry, Manifest, NewItemsInfo, PrecisionGate, UserModelInfo
from ._progress import progress_bar
from ._residuals import ResidualTable
from ._results import ExplainedRecommendation, Item, Recommendation, Recommendations, UserSegment
from ._runtime import choose_precision, cuda_available, open_session
from .data import Dataset, load_dataset

__version__ = "0.1.0"

RUNTIME_HINT = (
    "lmrec needs an ONNX Runtime build to embed and recommend: "
    "pip install 'lmrec[cpu]' (CPU) or 'lmrec[gpu]' (CUDA); never both"
)
if _util.find_spec("onnxruntime") is None:
    _warnings.warn(RUNTIME_HINT, stacklevel=2)

if TYPE_CHECKING:
    from ._catalogue import Catalogue
    from ._encoder import TextEncoder
    from ._index import VectorIndex, build_index
    from ._recommender import Recommender
    from ._user_encoder import UserEncoder

# Loaded on first use, so that `import lmrec` stays fast (no tokenizers or hnswlib) and data and
# evaluation work without a runtime installed.
_LAZY = {"Recommender": "_recommender", "Catalogue": "_catalogue", "TextEncoder": "_encoder",
         "UserEncoder": "_user_encoder", "VectorIndex": "_index", "build_index": "_index"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        if name in ("Recommender", "TextEncoder") and _util.find_spec("onnxruntime") is None:
            raise MissingDependencyError(RUNTIME_HINT)
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'lmrec' has no attribute {name!r}")


__all__ = [
    "Recommender", "Catalogue", "Recommendation", "ExplainedRecommendation", "Recommendations", "Item",
    "UserSegment", "Filter", "Bundle", "BundleWriter", "verify_bundle", "Manifest", "FileEntry", "DataInfo",
    "UserModelInfo", "NewItemsInfo", "ResidualTable", "PrecisionGate", "FORMAT_VERSION", "TextEncoder", "UserEncoder",
    "VectorIndex", "build_index",
    "open_session", "choose_precision", "cuda_available", "Dataset", "load_dataset", "LmrecError", "DataError",
    "BundleError", "StateError", "MissingDependencyError", "UnknownItemError", "require", "progress_bar", "__version__",
]
