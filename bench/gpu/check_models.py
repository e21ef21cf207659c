"""Checks of the encoder on the device: environment, CUDA fp16 vs CPU fp32, the CUDA guard, top-10
overlap, and `lmrec embed` on the device."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
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
from common import (
    TARGETS,
    Ctx,
    Tok,
    cos_summary,
    cosines,
    ort_session,
    recommender,
    tail,
    torch,
    torch_embed,
    torch_model,
)


def check_environment(ctx: Ctx) -> dict[str, Any]:
    r: dict[str, Any] = {"python": platform.python_version(), "executable": sys.executable,
                         "host": platform.node(), "cpus": os.cpu_count()}
    if torch is not None:
        r["torch"] = {"version": torch.__version__, "cuda": torch.version.cuda,
                      "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            r["torch"].update(gpu=p.name, capability=f"{p.major}.{p.minor}",
                              memory_gib=round(p.total_memory / 2**30, 1))
    import onnxruntime as ort

    r["onnxruntime"] = {"version": ort.__version__, "path": str(Path(ort.__file__).parent),
                        "available_providers": ort.get_available_providers(), "device": ort.get_device()}
    import lmrec

    r["lmrec"] = {"version": lmrec.__version__, "path": str(Path(lmrec.__file__).parent)}
    versions = {}
    for mod in ("transformers", "tokenizers", "numpy", "hnswlib", "grpc", "google.protobuf", "safetensors"):
        try:
            m = __import__(mod, fromlist=["_"])
            versions[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # noqa: BLE001
            versions[mod] = f"missing ({type(e).__name__}: {e})"
    r["packages"] = versions
    if shutil.which("nvidia-smi"):
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        r["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
    setup = ctx.results / "setup.json"
    if setup.is_file():
        r["setup"] = json.loads(setup.read_text())
    r["staged"] = json.loads((ctx.payload / "meta.json").read_text()) if (ctx.payload / "meta.json").is_file() else None
    want = "CUDAExecutionProvider" in r["onnxruntime"]["available_providers"] and bool(
        r.get("torch", {}).get("cuda_available"))
    r["passed"] = want if ctx.cuda else None
    return r


def check_encoder_parity(ctx: Ctx) -> dict[str, Any]:
    """The SDK's encoder on the device at fp16 vs CPU fp32 (computed at prepare) on the same texts."""
    texts, ref = ctx.texts()
    free0 = torch.cuda.mem_get_info()[0] if ctx.cuda and torch is not None else None
    t = time.perf_counter()
    rec = recommender(ctx)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    v64 = rec.embed_texts(texts)
    embed_s = time.perf_counter() - t
    v512 = rec.embed_texts(texts, batch_size=512)
    free1 = torch.cuda.mem_get_info()[0] if ctx.cuda and torch is not None else None
    ctx.shared["device_vectors"] = v64
    c64, c512 = cosines(v64, ref), cosines(v512, ref)
    session = ort_session(ctx)
    r = {
        "texts": len(texts), "long_texts": ctx.n_long, "truncated_texts": int(rec.truncated_texts),
        "rec_device": rec.device, "rec_precision": rec.precision,
        "rec_providers": getattr(rec, "providers", None),  # if the SDK exposes them
        "ort_session_providers": session.get_providers(),
        "gpu_memory_taken_mb": None if free0 is None else round((free0 - free1) / 2**20, 1),
        "load_seconds": round(load_s, 3), "embed_seconds": round(embed_s, 3),
        "cosine_batch64": cos_summary(c64), "cosine_batch512": cos_summary(c512),
        "target": {"min_cosine": TARGETS["min_cosine"]},
    }
    r["worst"] = _worst(ctx, texts, ref, c64)
    ok_cos = min(c64.min(), c512.min()) >= TARGETS["min_cosine"]
    on_device = rec.device == ctx.device and rec.precision == "fp16"
    if ctx.cuda:
        on_device = on_device and session.get_providers()[0] == "CUDAExecutionProvider"
    r["passed"] = bool(ok_cos and on_device)
    return r


def _worst(ctx: Ctx, texts: list[str], ref: np.ndarray, cos: np.ndarray, n: int = 5) -> list[dict[str, Any]]:
    """The texts furthest from CPU fp32, each also through transformers at the device's precision
    (fp16 on CUDA, same weights): low there too means fp16 itself, not ONNX Runtime's graph."""
    tok = Tok(ctx.bundle / "tokenizer.json", 128)
    rows = [int(i) for i in np.argsort(cos)[:n]]
    out = []
    for i in rows:
        ids, mask, types = tok([texts[i]])
        with torch.inference_mode():
            v = torch_embed(torch_model(ctx), *(torch.from_numpy(a).to(ctx.device) for a in (ids, mask, types)))
        torch_cos = float(cosines(v.float().cpu().numpy(), ref[i:i + 1])[0])
        out.append({"row": i, "tokens": int(mask.sum()), "chars": len(texts[i]), "text": texts[i][:160],
                    "cosine_sdk": float(cos[i]), "cosine_torch": torch_cos})
    return out


_PROBE = r"""
import json, sys, time
if sys.argv[2] == "1":
    import torch
from lmrec import Recommender
out = {}
for device in sys.argv[3].split(","):
    t = time.perf_counter()
    try:
        rec = Recommender.load(sys.argv[1], device=device, precision="fp16")
        v = rec.embed_texts(["blue gel pens, pack of 12"])
        out[device] = {"raised": None, "device": rec.device, "precision": rec.precision, "dim": int(v.shape[1])}
    except BaseException as e:
        out[device] = {"raised": type(e).__name__, "message": str(e)[:400]}
    out[device]["seconds"] = round(time.perf_counter() - t, 2)
print("PROBE " + json.dumps(out))
"""


def _probe(ctx: Ctx, env: dict[str, str], import_torch: bool, devices: str, timeout: float) -> dict[str, Any]:
    p = subprocess.run([sys.executable, "-c", _PROBE, str(ctx.bundle), "1" if import_torch else "0", devices],
                       env=env, capture_output=True, text=True, timeout=timeout)
    for line in p.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    return {"error": f"exit {p.returncode}", "stderr": p.stderr[-1500:]}


def check_cuda_guard(ctx: Ctx) -> dict[str, Any]:
    """device="cuda" must raise, never fall back, where CUDA is unusable (here: CUDA_VISIBLE_DEVICES
    hides the GPU); device="auto" then runs on the CPU. Also records whether the CUDA path works in
    a fresh process that imports no torch and has no extra library path (`lmrec serve` does so)."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    hidden = _probe(ctx, env, False, "cuda,auto", min(90, ctx.left()))
    bare_env = dict(os.environ)
    orig = os.environ.get("LMREC_GPU_ORIG_LD_LIBRARY_PATH")
    if orig is not None:
        bare_env["LD_LIBRARY_PATH"] = orig
    bare = _probe(ctx, bare_env, False, ctx.device, min(90, ctx.left())) if ctx.left() > 20 else {"skipped": "time"}
    raised = (hidden.get("cuda") or {}).get("raised")
    r = {"hidden_gpu": hidden, "no_torch_no_library_path": bare,
         "target": "device='cuda' raises when CUDA is unusable (no silent CPU fallback)"}
    r["passed"] = raised is not None
    return r


def _topk_sets(q: np.ndarray, items: np.ndarray, k: int, exclude_self: bool) -> list[set[int]]:
    s = q @ items.T
    if exclude_self:
        np.fill_diagonal(s, -np.inf)
    top = np.argpartition(-s, k, axis=1)[:, :k]
    return [set(row.tolist()) for row in top]


def check_top10_overlap(ctx: Ctx) -> dict[str, Any]:
    """Top-10 lists from device fp16 vectors vs CPU fp32 ones: item-to-item over the catalogue
    embedded on each, and the SDK's search() for title queries vs the CPU fp32 results."""
    n = ctx.n_items
    ref = ctx.ref_vectors[:n]
    dev = ctx.shared.get("device_vectors")
    dev = dev[:n] if dev is not None else recommender(ctx).embed_texts(ctx.item_texts[:n])
    k = min(10, n - 1)
    a, b = _topk_sets(dev, dev, k, True), _topk_sets(ref, ref, k, True)
    item = np.array([len(x & y) / k for x, y in zip(a, b, strict=True)])
    c = _topk_sets(dev, ref, k, True)  # device queries against the CPU catalogue (a CPU-built index)
    cross = np.array([len(x & y) / k for x, y in zip(c, b, strict=True)])
    rec = recommender(ctx)
    overlaps, started = [], time.perf_counter()
    for q, want in list(zip(ctx.ref["queries"], ctx.ref["search_top10"], strict=True))[:ctx.n_queries]:
        if ctx.left() < 5:
            break
        got = [x[0] for x in rec.search(q, k=10)]
        overlaps.append(len(set(got) & set(want)) / 10)
    r = {
        "items": n, "k": k,
        "item_to_item": {"mean": float(item.mean()), "min": float(item.min()),
                         "share_identical": float((item == 1).mean())},
        "device_query_vs_cpu_catalogue": {"mean": float(cross.mean()), "min": float(cross.min())},
        "search": {"queries": len(overlaps), "mean": float(np.mean(overlaps)) if overlaps else None,
                   "min": min(overlaps) if overlaps else None,
                   "ms_per_query": round(1000 * (time.perf_counter() - started) / max(len(overlaps), 1), 3)},
        "target": {"mean_overlap": TARGETS["top10_overlap"]},
    }
    r["passed"] = bool(item.mean() >= TARGETS["top10_overlap"] and overlaps
                       and np.mean(overlaps) >= TARGETS["top10_overlap"])
    return r


def check_embed_cli(ctx: Ctx) -> dict[str, Any]:
    """`lmrec embed --device cuda` over the catalogue file, vectors vs CPU fp32."""
    items = ctx.data / "items.jsonl"
    if ctx.dry:
        items = ctx.work / "items-small.jsonl"
        with open(items, "w", encoding="utf-8") as f:
            for i, t in zip(ctx.item_ids[:ctx.n_items], ctx.item_texts[:ctx.n_items], strict=True):
                f.write(json.dumps({"id": i, "text": t}) + "\n")
    out, report = ctx.work / "embed.npy", ctx.work / "embed.json"
    log = ctx.work / "embed.log"
    cmd = [sys.executable, "-m", "lmrec", "embed", "--bundle", str(ctx.bundle), "--items", str(items),
           "--out", str(out), "--device", ctx.device, "--precision", "fp16", "--overwrite", "--quiet",
           "--json", str(report)]
    t = time.perf_counter()
    with open(log, "w") as f:
        p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=max(10, min(120, ctx.left())))
    r: dict[str, Any] = {"command": " ".join(cmd[1:]), "exit": p.returncode,
                         "seconds": round(time.perf_counter() - t, 2)}
    if p.returncode != 0:
        r.update(passed=False, log_tail=tail(log))
        return r
    vectors = np.load(out)
    ids = Path(str(out)[:-4] + ".ids.txt").read_text().split("\n")[:len(vectors)]
    row = {item: i for i, item in enumerate(ctx.item_ids)}
    ref = ctx.ref_vectors[[row[i] for i in ids]]
    c = cosines(vectors, ref)
    r.update(report=json.loads(report.read_text()) if report.is_file() else None, items=len(ids),
             cosine=cos_summary(c), target={"min_cosine": TARGETS["min_cosine"]})
    r["passed"] = bool(c.min() >= TARGETS["min_cosine"] and len(ids) == (ctx.n_items if ctx.dry else len(ctx.item_ids)))
    return r


# -- speed ----------------------------------------------------------------------------------------
