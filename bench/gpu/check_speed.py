"""Embedding speed: ORT CUDA fp16 against torch fp16 (SDPA) on the same weights, model time and end
to end from strings, at batch 512 and batch 1."""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Callable
from typing import Any

# torch before onnxruntime: on the GPU machine importing torch loads the CUDA 13 libraries
# (cuBLAS, cuRAND, cudart) that onnxruntime-gpu's CUDA provider links against.
try:
    import torch
except ImportError:  # the checks that need torch say so; the others still run
    torch = None  # type: ignore[assignment]

import numpy as np
from common import TARGETS, Ctx, Tok, cosines, median, ort_session, pct, recommender, torch, torch_embed, torch_model


def _texts_of_length(tok: Tok, corpus: list[str], n_tokens: int, count: int) -> list[str]:
    """`count` strings of about `n_tokens` tokens ([CLS] and [SEP] included), cut from catalogue text."""
    tk = tok.tk
    tk.no_padding()
    tk.no_truncation()
    ids: list[int] = []
    for e in tk.encode_batch(corpus[:2000], add_special_tokens=False):
        ids.extend(e.ids)
    w = n_tokens - 2
    out = []
    for i in range(count):
        start = (i * w) % max(len(ids) - w, 1)
        out.append(tk.decode(ids[start:start + w]))
    tk.enable_padding(pad_id=tok.pad, pad_token="[PAD]")
    tk.enable_truncation(128)
    return out


def _time(fn: Callable[[], Any], reps: int, warm: int, ctx: Ctx, max_s: float) -> list[float]:
    for _ in range(warm):
        fn()
    times: list[float] = []
    stop = time.monotonic() + max_s
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if time.monotonic() > stop or ctx.left() < 5:
            break
    return times


def _ort_model(ctx: Ctx, inputs: tuple[np.ndarray, ...]) -> tuple[Callable[[], Any], Callable[[], np.ndarray]]:
    """One model run with inputs already on the device (IOBinding over device OrtValues)."""
    import onnxruntime as ort

    sess = ort_session(ctx)
    dev = "cuda" if ctx.cuda else "cpu"
    feeds = dict(zip(("input_ids", "attention_mask", "token_type_ids"), inputs, strict=True))
    io = sess.io_binding()
    keep = []
    for i in sess.get_inputs():
        v = ort.OrtValue.ortvalue_from_numpy(feeds[i.name], dev, 0)
        keep.append(v)
        io.bind_ortvalue_input(i.name, v)
    out_meta = sess.get_outputs()[0]
    out = ort.OrtValue.ortvalue_from_shape_and_type([inputs[0].shape[0], out_meta.shape[-1]], np.float32, dev, 0)
    io.bind_ortvalue_output(out_meta.name, out)

    def run() -> None:
        sess.run_with_iobinding(io)
        io.synchronize_outputs()

    return run, lambda: out.numpy()


def _torch_run(ctx: Ctx, inputs: tuple[np.ndarray, ...]) -> tuple[Callable[[], Any], Callable[[], np.ndarray]]:
    model = torch_model(ctx)
    t = [torch.from_numpy(a).to(ctx.device) for a in inputs]
    box: dict[str, Any] = {}

    def run() -> None:
        with torch.inference_mode():
            box["out"] = torch_embed(model, *t)
        ctx.sync()

    return run, lambda: box["out"].cpu().numpy()


def _e2e(ctx: Ctx, engine: str, tok: Tok, texts: list[str], batch: int, workers: int) -> np.ndarray:
    """Strings in, host vectors out: tokenisation in `workers` threads ahead of the model (0: inline)."""
    if engine == "ort":
        sess = ort_session(ctx)
        names = [i.name for i in sess.get_inputs()]

        def model(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
            feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            return sess.run(None, {n: feeds[n] for n in names})[0]
    else:
        tm = torch_model(ctx)

        def model(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                t = [torch.from_numpy(a).to(ctx.device, non_blocking=True) for a in (ids, mask, types)]
                return torch_embed(tm, *t).cpu().numpy()

    batches = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    out = []
    if workers == 0:
        for b in batches:
            out.append(model(*tok(b)))
        return np.concatenate(out)
    with cf.ThreadPoolExecutor(workers) as ex:
        futures = [ex.submit(tok, b) for b in batches[:workers + 1]]
        for i in range(len(batches)):
            arrays = futures[i].result()
            if i + workers + 1 < len(batches):
                futures.append(ex.submit(tok, batches[i + workers + 1]))
            out.append(model(*arrays))
    return np.concatenate(out)


def check_speed(ctx: Ctx) -> dict[str, Any]:
    """Embedding speed, ORT CUDA fp16 (the bundle's graph) vs torch fp16 SDPA on the same weights."""
    if torch is None:
        return {"passed": False, "error": "torch is not installed"}
    import transformers

    rec = recommender(ctx)
    tok = Tok(ctx.bundle / "tokenizer.json", 128)
    big = 16 if ctx.dry else 512
    count = 4 * big if ctx.dry else 16 * big
    reps, reps1, e2e_reps = (3, 5, 1) if ctx.dry else (20, 200, 3)
    max_s = 3 if ctx.dry else 8
    r: dict[str, Any] = {"transformers": transformers.__version__, "batch": big, "texts_per_e2e_run": count,
                         "ort_providers": ort_session(ctx).get_providers(), "model_time": {}, "e2e": {},
                         "target": {k: TARGETS[k] for k in ("model_speedup_512x32", "e2e_speedup_512x32",
                                                            "batch1_latency_ms")}}
    texts = {n: _texts_of_length(tok, ctx.item_texts, n, count) for n in (32, 128)}
    # model time: fixed [batch, n] inputs already on the device
    for n in (32, 128):
        if ctx.left() < 20:
            break
        # exactly n tokens: decoded windows can re-tokenise a token longer
        ids, mask, types = (np.ascontiguousarray(x[:, :n]) for x in tok(texts[n][:big]))
        row: dict[str, Any] = {"shape": list(ids.shape)}
        outs = {}
        for engine, make in (("ort", _ort_model), ("torch", _torch_run)):
            run, result = make(ctx, (ids, mask, types))
            t = _time(run, reps, 3, ctx, max_s)
            row[engine] = {"median_ms": round(1000 * median(t), 3), "texts_per_s": round(big / median(t), 1),
                           "reps": len(t)}
            outs[engine] = result()
        row["speedup"] = round(row["ort"]["texts_per_s"] / row["torch"]["texts_per_s"], 3)
        row["ort_vs_torch_cosine_min"] = float(cosines(outs["ort"], outs["torch"]).min())
        r["model_time"][f"{big}x{n}"] = row
    # end to end from strings (both engines tokenise the same way), and the SDK's own path
    for n in (32, 128):
        if ctx.left() < 20:
            break
        row = {}
        for engine in ("ort", "torch"):
            best = None
            for workers in (0, 2):
                _e2e(ctx, engine, tok, texts[n][:2 * big], big, workers)  # warm-up
                t = _time(lambda e=engine, n=n, w=workers: _e2e(ctx, e, tok, texts[n], big, w), e2e_reps, 0, ctx,
                          max_s)
                tps = count / median(t)
                row[f"{engine}_workers{workers}_texts_per_s"] = round(tps, 1)
                best = max(best or 0.0, tps)
            row[f"{engine}_texts_per_s"] = round(best, 1)
        t = _time(lambda n=n: tok(texts[n][:big]), 5, 1, ctx, max_s)
        row["tokenise_only_texts_per_s"] = round(big / median(t), 1)
        t = _time(lambda n=n: rec.embed_texts(texts[n], batch_size=big), e2e_reps, 1, ctx, max_s)
        row["sdk_embed_texts_per_s"] = round(count / median(t), 1)
        row["speedup"] = round(row["ort_texts_per_s"] / row["torch_texts_per_s"], 3)
        r["e2e"][f"{big}x{n}"] = row
    # batch 1: one 32-token text
    one = texts[32][:1]
    b1: dict[str, Any] = {}
    if ctx.left() > 15:
        ids, mask, types = tok(one)
        for engine, make in (("ort", _ort_model), ("torch", _torch_run)):
            run, _ = make(ctx, (ids, mask, types))
            t = _time(run, reps1, 10, ctx, max_s)
            b1[f"{engine}_model_ms"] = round(1000 * median(t), 3)
            t = _time(lambda e=engine: _e2e(ctx, e, tok, one, 1, 0), reps1, 10, ctx, max_s)
            b1[f"{engine}_e2e_ms"] = round(1000 * median(t), 3)
            b1[f"{engine}_e2e_p99_ms"] = round(1000 * pct(t, 99), 3)
        t = _time(lambda: rec.embed_texts(one), reps1, 10, ctx, max_s)
        b1["sdk_embed_texts_ms"] = round(1000 * median(t), 3)
        b1["sdk_embed_texts_p99_ms"] = round(1000 * pct(t, 99), 3)
    r["batch1"] = b1
    m = r["model_time"].get(f"{big}x32", {}).get("speedup")
    e = r["e2e"].get(f"{big}x32", {}).get("speedup")
    lat = b1.get("sdk_embed_texts_ms")
    r["meets"] = {"model_speedup_512x32": None if m is None else m >= TARGETS["model_speedup_512x32"],
                  "e2e_speedup_512x32": None if e is None else e >= TARGETS["e2e_speedup_512x32"],
                  "batch1_latency_ms": None if lat is None else lat <= TARGETS["batch1_latency_ms"]}
    same = [row.get("ort_vs_torch_cosine_min", 1.0) for row in r["model_time"].values()]
    r["same_model"] = bool(same and min(same) >= TARGETS["min_cosine"])
    r["passed"] = (all(v is True for v in r["meets"].values()) and r["same_model"]) if ctx.cuda else None
    return r


# -- server ---------------------------------------------------------------------------------------
