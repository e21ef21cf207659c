"""Checks of the serving and training paths on the device: `lmrec serve` Embed at 32 clients, and
the trainer's loop (`lmrec train --device cuda`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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
from common import TARGETS, Ctx, cos_summary, cosines, median, model32, pct, recommender, tail, train_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_server(ctx: Ctx) -> dict[str, Any]:
    """`lmrec serve --device cuda`: Embed at 32 concurrent one-text clients, vs in-process batches of 32."""
    from lmrec.client import RecommenderClient

    clients, per_client = (4, 5) if ctx.dry else (32, 150)
    max_s = 5 if ctx.dry else 20
    port = _free_port()
    state = ctx.work / "serve-state"
    shutil.rmtree(state, ignore_errors=True)
    log = ctx.work / "serve.log"
    cmd = [sys.executable, "-m", "lmrec", "serve", "--bundle", str(ctx.bundle), "--state-dir", str(state),
           "--port", str(port), "--device", ctx.device, "--precision", "fp16", "--max-batch", "32"]
    r: dict[str, Any] = {"command": " ".join(cmd[1:]), "clients": clients}
    logf = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        t = time.perf_counter()
        with RecommenderClient(address, timeout=5, max_attempts=1) as c:
            status = None
            while time.perf_counter() - t < min(90, ctx.left() - 10):
                if proc.poll() is not None:
                    break
                try:
                    status = c.health()
                    if status == "SERVING":
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
                time.sleep(0.2)
            r["ready_seconds"] = round(time.perf_counter() - t, 2)
            if status != "SERVING":
                r.update(passed=False, error=f"server not SERVING (status {status}, exit {proc.poll()})",
                         log_tail=tail(log))
                return r
            info = c.model_info()
            keys = ("device", "precision", "dim", "catalogue_size", "lmrec_version")
            r["model_info"] = {k: info.get(k) for k in keys}
            c.embed_texts(ctx.item_texts[:8])  # warm-up
        texts = ctx.item_texts
        latencies: list[list[float]] = [[] for _ in range(clients)]
        errors: list[str] = []
        sample: dict[int, np.ndarray] = {}
        stop = time.monotonic() + max_s

        def client(k: int) -> None:
            with RecommenderClient(address, timeout=10) as cl:
                for i in range(per_client):
                    j = (k * per_client + i) % len(texts)
                    t0 = time.perf_counter()
                    try:
                        v = cl.embed_texts([texts[j]])
                    except Exception as e:  # noqa: BLE001
                        errors.append(f"{type(e).__name__}: {e}"[:200])
                        continue
                    latencies[k].append(time.perf_counter() - t0)
                    if i < 4:
                        sample[j] = v[0]
                    if time.monotonic() > stop:
                        break

        t = time.perf_counter()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - t
        flat = [x for lat in latencies for x in lat]
        rows = sorted(sample)
        cos = cosines(np.stack([sample[j] for j in rows]), ctx.ref_vectors[rows]) if rows else np.array([0.0])
        r["grpc"] = {"calls": len(flat), "errors": len(errors), "first_errors": errors[:3], "seconds": round(wall, 3),
                     "texts_per_s": round(len(flat) / wall, 1),
                     "p50_ms": round(1000 * median(flat), 3) if flat else None,
                     "p99_ms": round(1000 * pct(flat, 99), 3) if flat else None,
                     "cosine_vs_cpu_fp32": cos_summary(cos)}
        # in-process: the same number of texts through the SDK, in batches of 32
        rec = recommender(ctx)
        n = max(len(flat), 32)
        chunk = [texts[i % len(texts)] for i in range(n)]
        rec.embed_texts(chunk[:64], batch_size=32)
        t = time.perf_counter()
        for i in range(0, n, 32):
            rec.embed_texts(chunk[i:i + 32], batch_size=32)
        r["in_process_batches_of_32"] = {"texts": n, "texts_per_s": round(n / (time.perf_counter() - t), 1)}
        r["grpc_vs_in_process"] = round(r["grpc"]["texts_per_s"] / r["in_process_batches_of_32"]["texts_per_s"], 3)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        logf.close()
    r["exit"] = proc.returncode
    r["target"] = ("no failed call, served on the device, vectors match CPU fp32 (min cosine >= 0.999), "
                   "clean SIGTERM exit")
    r["passed"] = bool(r["grpc"]["errors"] == 0 and r["grpc"]["calls"] > 0
                       and r["model_info"]["device"] == ctx.device
                       and r["grpc"]["cosine_vs_cpu_fp32"]["min"] >= TARGETS["min_cosine"] and proc.returncode == 0)
    return r


# -- training -------------------------------------------------------------------------------------
def _steps_estimate(data: Path, manifest: dict[str, Any]) -> int | None:
    """Optimizer steps of the user phases: epochs x ceil(training windows / batch size), the
    windows being each user's sequence less its last two items (warm split), cut every
    max_history items; plus the encoder steps of objective `next`."""
    training = manifest.get("training") or {}
    cfg = training.get("config") or {}
    hist = training.get("history") or []
    seqs: dict[str, int] = {}
    for line in open(data / "interactions.jsonl"):
        u = json.loads(line)["user"]
        seqs[u] = seqs.get(u, 0) + 1
    m = int(cfg.get("max_history", 50))
    windows = sum(math.ceil((n - 2 - 1) / m) for n in seqs.values() if n - 2 >= 2)
    epochs = sum(1 for h in hist if h.get("phase") in ("user", "user2"))
    encoder = sum(1 for h in hist if h.get("phase") == "encoder")
    steps = epochs * math.ceil(windows / max(int(cfg.get("batch_size", 128)), 1))
    if encoder:
        steps += int(cfg.get("encoder_steps", 0))
    return steps


def _train(ctx: Ctx, name: str, tf4: bool, epochs: int, objectives: str, encoder_steps: int,
           limit: float) -> dict[str, Any]:
    data = train_data(ctx)
    out = ctx.work / name
    log = ctx.results / f"{name}.log"
    cmd = [sys.executable, "-m", "lmrec", "train", "--data", f"jsonl:{data}", "--out", str(out),
           "--device", ctx.device, "--split", "warm", "--seed", "0", "--epochs", str(epochs),
           "--objectives", objectives, "--base-model", str(model32(ctx)), "--set", "patience=1000",
           "--set", f"encoder_steps={encoder_steps}", "--set", "encoder_batch=32", "--overwrite", "--quiet"]
    env = dict(os.environ, LMREC_CACHE_DIR=str(ctx.work / f"cache-{name}"))
    if tf4 and ctx.tf4_site:
        env["PYTHONPATH"] = ctx.tf4_site + os.pathsep + env.get("PYTHONPATH", "")
    r: dict[str, Any] = {"command": " ".join(cmd[1:]), "transformers_site": ctx.tf4_site if tf4 else "the machine's"}
    t = time.perf_counter()
    try:
        with open(log, "w") as f:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=max(limit, 5))
        r["exit"] = p.returncode
    except subprocess.TimeoutExpired:
        r["exit"] = "timeout"
    r["seconds"] = round(time.perf_counter() - t, 1)
    tver = subprocess.run([sys.executable, "-c", "import transformers; print(transformers.__version__)"],
                          env=env, capture_output=True, text=True).stdout.strip()
    r["transformers"] = tver
    text = log.read_text(errors="replace") if log.is_file() else ""
    r["epoch_lines"] = [line for line in text.splitlines() if " epoch " in line][:40]
    if r["exit"] != 0 or not (out / "manifest.json").is_file():
        r.update(passed=False, log_tail=tail(log, 40))
        return r
    manifest = json.loads((out / "manifest.json").read_text())
    training = manifest.get("training") or {}
    r.update(device=training.get("device"), training_seconds=training.get("seconds"),
             seconds_per_epoch=training.get("seconds_per_epoch"), best=training.get("best"),
             epochs=[{k: h.get(k) for k in ("phase", "epoch", "seconds", "valid_seconds", "valid_ndcg@10")}
                     for h in training.get("history") or []],
             steps_estimate=_steps_estimate(data, manifest), parity=manifest.get("parity"))
    from lmrec import Recommender

    rec = Recommender.load(out, device=ctx.device)
    first = []
    for line in open(data / "interactions.jsonl"):
        row = json.loads(line)
        if first and row["user"] != first[0][0]:
            break
        first.append((row["user"], row["item"]))
    recs = rec.recommend(history=[i for _, i in first], k=10)
    r["trained_bundle"] = {"device": rec.device, "precision": rec.precision, "recommendations": len(recs),
                           "user_model": bool(manifest.get("user_model"))}
    rec.close()
    steps_ok = ctx.dry or (r["steps_estimate"] or 0) >= TARGETS["train_steps"]
    r["target"] = {"device": ctx.device, "steps_estimate": TARGETS["train_steps"], "exit": 0}
    r["passed"] = bool(r["device"] == ctx.device and steps_ok and len(recs) == 10
                       and r["trained_bundle"]["user_model"])
    return r


def check_train(ctx: Ctx) -> dict[str, Any]:
    """`lmrec train --device cuda` on the jsonl catalogue: the user-model loop (objective cl) and a
    short encoder fine-tune (objective next), export on the CPU, the bundle loaded back on the device.
    Uses the transformers lmrec's train extra pins (carried: 4.57.x) when run.sh installed it."""
    if ctx.dry:
        return _train(ctx, "train", True, 1, "cl", 2, max(10, ctx.left() - 5))
    return _train(ctx, "train", True, 6, "cl,next", 30, max(10, min(170, ctx.left() - 5)))


def check_train_host_transformers(ctx: Ctx) -> dict[str, Any]:
    """Informational: the same with the machine's own transformers (5.x there), one epoch, if time is left."""
    if not ctx.tf4_site:
        return {"passed": None, "skipped": "no carried transformers: check_train already used the machine's"}
    if ctx.left() < (20 if ctx.dry else 75):
        return {"passed": None, "skipped": f"{ctx.left():.0f} s left"}
    r = _train(ctx, "train-host-transformers", False, 1, "cl", 0, max(10, ctx.left() - 5))
    r["gating"] = False
    return r
