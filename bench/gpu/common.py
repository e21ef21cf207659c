"""What every GPU check shares: the run context (payload, budget, reference vectors), timing and
cosine helpers, and the targets. torch is imported before onnxruntime (see below)."""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path
from typing import Any

# torch before onnxruntime: on the GPU machine importing torch loads the CUDA 13 libraries
# (cuBLAS, cuRAND, cudart) that onnxruntime-gpu's CUDA provider links against.
try:
    import torch
except ImportError:  # the checks that need torch say so; the others still run
    torch = None  # type: ignore[assignment]

import numpy as np

TARGETS = {
    "min_cosine": 0.999,  # CUDA fp16 vs CPU fp32, every text
    "top10_overlap": 0.95,  # mean over queries / items
    "model_speedup_512x32": 1.3,  # ORT CUDA fp16 / torch fp16 SDPA, texts/s, model time
    "e2e_speedup_512x32": 1.2,  # same, from strings (tokenisation included)
    "batch1_latency_ms": 2.0,  # one text through the SDK (Recommender.embed_texts), median
    "train_steps": 200,  # optimizer steps on CUDA (estimated from the data and the manifest)
}


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(xs), q)) if xs else None


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.payload = Path(args.payload).resolve()
        self.work = Path(args.work).resolve()
        self.results = Path(args.results).resolve()
        self.device = args.device
        self.cuda = args.device == "cuda"
        self.dry = args.dry_run
        self.started = time.monotonic()
        self.deadline = self.started + args.budget
        self.tf4_site = args.tf4_site
        self.shared: dict[str, Any] = {}
        self.bundle = self.payload / "bundle"
        self.data = self.payload / "data"
        self.model16 = self.payload / "model16"
        ref_dir = self.payload / "reference"
        self.ref = json.loads((ref_dir / "reference.json").read_text())
        self.ref_vectors = np.load(ref_dir / "vectors.npy")
        rows = [json.loads(line) for line in open(self.data / "items.jsonl", encoding="utf-8")]
        self.item_ids = [r["id"] for r in rows]
        self.item_texts = [r["text"] for r in rows]
        if self.item_ids != self.ref["item_ids"]:
            raise ValueError("reference/reference.json lists other items than data/items.jsonl")
        # dry run: a small sample of the same texts
        self.n_items = 48 if self.dry else len(self.item_ids)
        self.n_long = 8 if self.dry else len(self.ref["long_texts"])
        self.n_queries = 12 if self.dry else len(self.ref["queries"])

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def texts(self) -> tuple[list[str], np.ndarray]:
        """(texts, CPU fp32 reference vectors): catalogue texts, then over-long texts."""
        n = len(self.item_ids)
        texts = self.item_texts[:self.n_items] + self.ref["long_texts"][:self.n_long]
        rows = np.r_[np.arange(self.n_items), n + np.arange(self.n_long)]
        return texts, self.ref_vectors[rows]

    def sync(self) -> None:
        if self.cuda and torch is not None:
            torch.cuda.synchronize()


def recommender(ctx: Ctx) -> Any:
    """The fp16 bundle on the checked device (shared by the checks; loaded once)."""
    if "rec" not in ctx.shared:
        from lmrec import Recommender

        ctx.shared["rec"] = Recommender.load(ctx.bundle, device=ctx.device, precision="fp16")
    return ctx.shared["rec"]


def ort_session(ctx: Ctx) -> Any:
    """The bundle's fp16 encoder as a bare ONNX Runtime session (for IOBinding), opened by lmrec's one
    loader: the same options and CUDA checks as the SDK."""
    if "session" not in ctx.shared:
        from lmrec import open_session

        ctx.shared["session"] = open_session(ctx.bundle / "item_encoder.fp16.onnx", ctx.device)
    return ctx.shared["session"]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def cos_summary(c: np.ndarray) -> dict[str, float]:
    return {"min": float(c.min()), "mean": float(c.mean()), "p0.1": float(np.quantile(c, 0.001))}
