"""What every GPU check shares: the run context (payload, budget, reference vectors), timing and
cosine helpers, the targets, the training inputs (fp32 base model, data) and the transformers
reference engine. torch is imported before onnxruntime (see below)."""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
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


def model32(ctx: Ctx) -> Path:
    """The fp16 base model widened back to fp32 (transformers 5 loads a checkpoint in its own dtype;
    training wants fp32 master weights)."""
    out = ctx.work / "model32"
    if (out / "model.safetensors").is_file():
        return out
    from safetensors.numpy import load_file, save_file

    tmp = ctx.work / "model32.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    w = load_file(str(ctx.model16 / "model.safetensors"))
    save_file({k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in w.items()},
              str(tmp / "model.safetensors"), metadata={"format": "pt"})
    for f in ctx.model16.iterdir():
        if f.name != "model.safetensors":
            shutil.copyfile(f, tmp / f.name)
    config = json.loads((tmp / "config.json").read_text())
    config["torch_dtype"] = "float32"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def train_data(ctx: Ctx, users: int = 40) -> Path:
    """The jsonl data to train on: all of it, or on a dry run the first `users` users and the items
    they touched."""
    if not ctx.dry:
        return ctx.data
    out = ctx.work / f"data-{users}"
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    items: set[str] = set()
    with open(ctx.data / "interactions.jsonl") as src, open(out / "interactions.jsonl", "w") as dst:
        for line in src:
            row = json.loads(line)
            seen.setdefault(row["user"], len(seen))
            if seen[row["user"]] < users:
                dst.write(line)
                items.add(row["item"])
    with open(ctx.data / "items.jsonl") as src, open(out / "items.jsonl", "w") as dst:
        dst.writelines(line for line in src if json.loads(line)["id"] in items)
    return out


class Tok:
    """Batch tokenisation with `tokenizers` (parallel encode_batch), padded to the batch's longest."""

    def __init__(self, path: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tk = Tokenizer.from_file(str(path))
        self.pad = self.tk.token_to_id("[PAD]") or 0
        self.tk.enable_truncation(max_length)
        self.tk.enable_padding(pad_id=self.pad, pad_token="[PAD]")

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        encs = self.tk.encode_batch(texts)
        b, n = len(encs), len(encs[0].ids)
        from itertools import chain

        ids = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=np.int64, count=b * n).reshape(b, n)
        mask = (ids != self.pad).astype(np.int64)
        mask[:, 0] = 1
        return ids, mask, np.zeros_like(ids)


def torch_model(ctx: Ctx) -> Any:
    """The base model in transformers (SDPA attention), fp16 on CUDA: the reference engine of the checks."""
    if "torch_model" not in ctx.shared:
        from transformers import AutoModel

        model = AutoModel.from_pretrained(str(ctx.model16), attn_implementation="sdpa")
        dtype = torch.float16 if ctx.cuda else torch.float32
        ctx.shared["torch_model"] = model.to(ctx.device, dtype=dtype).eval()
    return ctx.shared["torch_model"]


def torch_embed(model: Any, ids: Any, mask: Any, types: Any) -> Any:
    """Mean pooling and L2 normalisation, as the bundle's graph does."""
    h = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
    m = mask.unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled.float(), dim=-1)
