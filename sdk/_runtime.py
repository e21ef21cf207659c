"""ONNX Runtime: the one place lmrec opens a model, and picks a device and precision for it.

Every caller — the SDK's item and user encoders, `lmrec embed` workers, Spark tasks, the server,
the trainer's checks — gets its session from `open_session`, so the same options and the same
provider checks apply everywhere. CUDA is never a silent fallback: asking for it and not getting
it raises, whether the provider is missing or ONNX Runtime dropped it while loading the model.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from ._errors import BundleError, LmrecError, require
from ._manifest import Manifest

if TYPE_CHECKING:
    from ._bundle import Bundle

log = logging.getLogger("lmrec")

DEVICES = ("cpu", "cuda")
CUDA = "CUDAExecutionProvider"
_preloaded = threading.Lock()
_preload_done = False


def _check_threads(threads: Any) -> int | None:
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"threads {threads!r}: must be None (all physical cores) or an integer >= 1")
    return threads


def _preload_cuda_libraries(ort: Any) -> None:
    """Load the CUDA and cuDNN libraries that pip packages (onnxruntime-gpu[cuda,cudnn]) or an
    already imported torch provide, so CUDA works without LD_LIBRARY_PATH (onnxruntime >= 1.21)."""
    global _preload_done
    with _preloaded:
        if _preload_done or not hasattr(ort, "preload_dlls"):
            return
        try:
            ort.preload_dlls()
        except Exception as e:  # noqa: BLE001 - the provider check below reports what is missing
            log.debug("onnxruntime.preload_dlls() failed: %s", e)
        _preload_done = True


def cuda_available() -> bool:
    """Whether this ONNX Runtime build offers the CUDA provider (a session may still fail)."""
    require("onnxruntime", "cpu", "ONNX Runtime")
    import onnxruntime as ort

    if CUDA not in ort.get_available_providers():
        return False
    _preload_cuda_libraries(ort)
    return True


def open_session(path: str | os.PathLike[str], device: str = "cpu", threads: int | None = None) -> Any:
    """An `onnxruntime.InferenceSession` for the model at `path` on `device` ("cpu" or "cuda").

    `threads` sets intra-op threads (None: ONNX Runtime's default, one per physical core); ops
    run sequentially. With "cuda", LmrecError unless the session really runs on CUDA.
    """
    require("onnxruntime", "cpu", "ONNX Runtime")
    import onnxruntime as ort

    if device not in DEVICES:
        raise ValueError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    _check_threads(threads)
    if not os.path.isfile(path):
        raise LmrecError(f"model {path}: no such file")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    providers: list[str] = ["CPUExecutionProvider"]
    if device == "cuda":
        if not cuda_available():
            raise LmrecError(
                f"device 'cuda': this ONNX Runtime has no {CUDA} (available: "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu instead of onnxruntime "
                "(pip install 'lmrec[gpu]'), or use device='cpu'")
        providers = [CUDA, *providers]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as e:  # ORT raises its own exception types for a damaged or foreign graph
        raise BundleError(f"model {path}: ONNX Runtime cannot load it ({e})") from None
    if device == "cuda" and session.get_providers()[0] != CUDA:
        raise LmrecError(
            f"device 'cuda': ONNX Runtime dropped {CUDA} when loading {os.path.basename(path)} "
            "(CUDA or cuDNN libraries missing or mismatched?); refusing to run on the CPU silently")
    return session


def choose_device(device: str) -> str:
    """"auto" → "cuda" when this ONNX Runtime offers it, else "cpu"; others are checked and kept."""
    if device not in ("auto", *DEVICES):
        raise ValueError(f"device must be one of {('auto', *DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def choose_precision(bundle: Bundle, device: str, precision: str = "auto") -> tuple[str, str]:
    """(precision, why) for running `bundle`'s item encoder on `device`.

    An explicit precision must be in the bundle (one that failed its gate is run, with a warning).
    "auto" takes fp16 on CUDA and int8 on the CPU when the bundle has them and their export gate
    did not fail, else fp32: it never picks a precision that failed.
    """
    if precision not in ("auto", *Manifest.ENCODER_FILES):
        raise ValueError(f"precision must be one of {('auto', *Manifest.ENCODER_FILES)}, got {precision!r}")
    gates = bundle.manifest.gates
    if precision != "auto":
        bundle.encoder_path(precision)  # BundleError when absent
        if precision in gates and not gates[precision].passed:
            log.warning("precision %s: asked for, although it %s", precision, gates[precision].summary())
        return precision, f"{precision}: asked for"
    preferred = "fp16" if device == "cuda" else "int8"
    if preferred not in bundle.precisions():
        return "fp32", f"fp32: the bundle has no {preferred} encoder"
    if preferred in gates and not gates[preferred].passed:
        return "fp32", f"fp32: {preferred} {gates[preferred].summary()}"
    if preferred in gates:
        return preferred, f"{preferred}: {gates[preferred].summary()}, the {device} default"
    return preferred, f"{preferred}: the {device} default"


__all__ = ["open_session", "choose_device", "choose_precision", "cuda_available", "DEVICES"]
