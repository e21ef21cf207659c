"""The server's thread budget: how many threads each pool in its process may use, and why.

A server process holds four thread pools that each default to "one thread per core": the BLAS
library under numpy, ONNX Runtime's intra-op pool, the tokenizer's (rayon) pool, and gRPC's
workers. Each is right alone; together, under concurrent calls, they oversubscribe the cores.
Measured on a 2-core host (`lmrec bench server`, demo bundle): with the defaults, `Recommend`
(history 20, k 10) used 1.4 cores at 50 requests/s and timed out on 54 % of the calls at 100/s
(every concurrent call's exact-search product woke, and spun, OpenBLAS's own threads); with
this budget it uses 0.18 cores at 50/s and holds 200/s.

The server's concurrency comes from its calls, so each call runs on one thread:

- BLAS: one thread for the whole process (threadpoolctl).
  The SDK's single-query searches already avoid BLAS threads; this covers the rest.
- ONNX Runtime: `threads` intra-op threads per session (default 1, so a run executes on the
  calling thread and never hands off to, or spins in, a pool), and the micro-batcher runs
  `cores // threads` model runs side by side instead: one core per batch, batches formed while
  others run.
- Tokenizer: no rayon pool (TOKENIZERS_PARALLELISM=false unless the environment says otherwise);
  each batch is tokenized on its batcher thread.
- gRPC: the worker threads of `ServerConfig.workers`; of those, `compute_slots` (one per core)
  compute Recommend/SimilarItems at once, so that the thread accepting new calls is not starved
  of the interpreter lock; calls beyond `max_in_progress` are refused.

The process-wide settings (BLAS, tokenizer) are the server's because a server owns its process;
`restore()` puts them back when an embedded server stops.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

TOKENIZERS_ENV = "TOKENIZERS_PARALLELISM"


def cores() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class BlasLimit:
    """BLAS limited to `threads` threads process-wide (threadpoolctl: OpenBLAS, MKL, BLIS,
    Accelerate); `restore()` undoes it."""

    def __init__(self, threads: int) -> None:
        from threadpoolctl import threadpool_info, threadpool_limits

        self.threads = threads
        self._limiter = threadpool_limits(threads, user_api="blas")
        self.libraries = sorted({i["internal_api"] for i in threadpool_info() if i["user_api"] == "blas"})

    def restore(self) -> None:
        self._limiter.restore_original_limits()

    def describe(self) -> str:
        if not self.libraries:
            return "BLAS not limited (no BLAS library found to control)"
        return f"BLAS {self.threads} thread ({', '.join(self.libraries)})"


class _ProcessBudget:
    """One BLAS thread and a serial tokenizer for the whole process (servers share it)."""

    def __init__(self) -> None:
        self.blas = BlasLimit(1)
        self.set_env = TOKENIZERS_ENV not in os.environ  # an operator's explicit setting wins
        if self.set_env:
            os.environ[TOKENIZERS_ENV] = "false"

    def restore(self) -> None:
        self.blas.restore()
        if self.set_env:
            os.environ.pop(TOKENIZERS_ENV, None)


_process_lock = threading.Lock()
_process: _ProcessBudget | None = None
_servers = 0  # running servers that applied their budget


@dataclass
class ThreadBudget:
    """The thread counts one server uses; `apply()` sets the process-wide ones."""

    device: str
    onnx_threads: int | None  # intra-op threads per ONNX Runtime session (None: its own default, for CUDA)
    batch_workers: int  # model runs the micro-batcher keeps side by side
    grpc_workers: int
    max_in_progress: int
    compute_slots: int  # Recommend/SimilarItems calls computing at once
    _applied: bool = field(default=False, repr=False)

    @classmethod
    def plan(cls, device: str, threads: int | None, grpc_workers: int, max_in_progress: int,
             compute_slots: int | None = None) -> ThreadBudget:
        """The budget for `device` ("cpu" or "cuda") given the configured ONNX Runtime `threads`
        (None: 1 on the CPU) and `compute_slots` (None: one per core)."""
        slots = compute_slots or cores()
        if device == "cuda":  # one stream of batches feeds the GPU; the CPU side only tokenizes
            return cls(device, threads, 1, grpc_workers, max_in_progress, slots)
        onnx = threads or 1
        return cls(device, onnx, max(1, cores() // onnx), grpc_workers, max_in_progress, slots)

    def apply(self) -> None:
        """Set the process-wide budget (BLAS, tokenizer); kept while any server of the process runs."""
        global _process, _servers
        with _process_lock:
            if self._applied:
                return
            if _servers == 0:
                _process = _ProcessBudget()
            _servers += 1
            self._applied = True

    def restore(self) -> None:
        """Undo `apply` once the last running server of the process stops."""
        global _process, _servers
        with _process_lock:
            if not self._applied:
                return
            self._applied = False
            _servers -= 1
            if _servers == 0 and _process is not None:
                _process.restore()
                _process = None

    def describe(self) -> str:
        blas = _process.blas.describe() if _process is not None else "BLAS not limited"
        onnx = "ONNX Runtime default" if self.onnx_threads is None else f"ONNX Runtime {self.onnx_threads} intra-op"
        tokenizer = "parallel" if os.environ.get(TOKENIZERS_ENV, "true").lower() not in ("0", "false", "off", "no") \
            else "1 thread"
        return (f"{cores()} cores; {blas}; {onnx} x {self.batch_workers} batch workers ({self.device}); "
                f"tokenizer {tokenizer}; {self.grpc_workers} gRPC workers; {self.compute_slots} Recommend/"
                f"SimilarItems computing at once; at most {self.max_in_progress} calls in progress")


__all__ = ["ThreadBudget", "BlasLimit", "cores"]
