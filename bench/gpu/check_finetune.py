"""Issue 12's run on the device: objective `text` through every encoder layer on whole texts, the
fine-tuning the 2-core host cannot afford, on three seeds of the cold split side by side; each
bundle is then paired against the zero-shot encoder on the cold and mixed splits by
bench/paired_bundles.py (per seed and pooled over the seeds' users)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import Ctx, model32, tail, train_data

SEEDS = tuple(int(s) for s in os.environ.get("LMREC_GPU_FINETUNE_SEEDS", "0,1,2").split(","))
# the served length (128 tokens), twice the host's epochs of the stage; and every layer (below)
SETTINGS = ("text_max_length=null", "text_epochs=40")
DRY_SETTINGS = ("text_max_length=null", "text_epochs=2")
EXPORT_S = 240  # after --budget: the exports on the CPU (ONNX, int8 and its gate, index), side by side;
# an encoder fine-tuned on every layer may need the int8 gate's fp32 search (stop 52: > 150 s, 3 at once)
PAIRING_S = 100  # the two paired_bundles runs side by side (the rest of the checks get what is left)
# the trainings' --budget: what the time left allows, within these bounds
MINUTES = (1.0, float(os.environ.get("LMREC_GPU_FINETUNE_MINUTES", "3")))
PAIRED = Path(__file__).resolve().parents[1] / "paired_bundles.py"
TEXT_KEYS = ("layers", "temperature", "best_epoch", "epochs", "steps", "stopped", "valid_ndcg@10", "new_targets",
             "seconds", "cache_seconds", "seconds_per_step", "seconds_per_epoch", "bf16")


def _env(ctx: Ctx, threads: int, cache: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), LMREC_CACHE_DIR=str(ctx.work / cache))
    if ctx.tf4_site:  # lmrec's train extra pins transformers < 4.58: the carried one
        env["PYTHONPATH"] = ctx.tf4_site + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _wait(procs: dict[Any, subprocess.Popen], until: float) -> dict[Any, int | str]:
    """Each process's exit status, or "timeout" (killed) for those still running at `until`."""
    codes: dict[Any, int | str] = {}
    for key, p in procs.items():
        try:
            codes[key] = p.wait(timeout=max(until - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes[key] = "timeout"
    return codes


def _summary(out: Path) -> dict[str, Any]:
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["training"]
    return {"device": t.get("device"), "encoder": t.get("encoder"), "encoder_fine_tuned": t.get("encoder_fine_tuned"),
            "text": {k: (t.get("text") or {}).get(k) for k in TEXT_KEYS}, "budget": t.get("budget"),
            "search": {k: (t.get("search") or {}).get(k) for k in ("chosen", "epochs", "minutes", "stopped_by_budget")},
            "best": t.get("best"), "training_seconds": t.get("seconds"),
            "seconds_per_epoch": t.get("seconds_per_epoch"),
            "new_item_bonus": (t.get("new_items") or {}).get("bonus"),
            "int8_gate": (manifest.get("gates") or {}).get("int8")}


def check_finetune(ctx: Ctx) -> dict[str, Any]:
    """`lmrec train --split cold --device cuda` with the text stage on every layer, the seeds (0-2 by
    default) side by side, then each bundle against the zero-shot encoder, paired (cold and mixed)."""
    data = train_data(ctx, users=300)
    model = model32(ctx)
    layers = json.loads((model / "config.json").read_text())["num_hidden_layers"]
    settings = (f"finetune_layers={layers}", *(DRY_SETTINGS if ctx.dry else SETTINGS))
    minutes = min(MINUTES[1], (ctx.left() - EXPORT_S - PAIRING_S) / 60)
    if ctx.dry:
        minutes = 0.5
    elif minutes < MINUTES[0]:
        return {"passed": False, "skipped": f"{ctx.left():.0f} s left: too little for a training"}
    threads = 1 if ctx.dry else max(1, min(8, (os.cpu_count() or 4) // len(SEEDS)))  # the trainings side by side
    r: dict[str, Any] = {"settings": list(settings), "budget_minutes": round(minutes, 2), "seeds": {}}
    procs, outs, logs = {}, {}, []
    started = time.monotonic()
    for seed in SEEDS:
        outs[seed] = ctx.work / f"finetune-s{seed}"
        cmd = [sys.executable, "-m", "lmrec", "train", "--data", f"jsonl:{data}", "--out", str(outs[seed]),
               "--split", "cold", "--seed", str(seed), "--device", ctx.device, "--budget", f"{minutes:.2f}",
               "--threads", str(threads), "--base-model", str(model), "--overwrite", "--quiet"]
        cmd += [x for s in settings for x in ("--set", s)]
        r["command"] = " ".join(cmd[1:])
        logs.append(open(ctx.work / f"finetune-s{seed}.log", "w"))  # noqa: SIM115 - closed after the wait
        procs[seed] = subprocess.Popen(cmd, stdout=logs[-1], stderr=subprocess.STDOUT,
                                       env=_env(ctx, threads, f"cache-finetune-s{seed}"))
    codes = _wait(procs, started + minutes * 60 + EXPORT_S)
    r["training_wall_seconds"] = round(time.monotonic() - started, 1)
    with open(ctx.results / "finetune.log", "w") as joined:  # one file: a device call returns at most 8
        for seed in SEEDS:
            text = (ctx.work / f"finetune-s{seed}.log").read_text(errors="replace")
            joined.write(f"===== seed {seed}: exit {codes[seed]} =====\n{text}\n")
    for seed in SEEDS:
        done = codes[seed] == 0 and (outs[seed] / "manifest.json").is_file()
        r["seeds"][seed] = {"exit": codes[seed], **(_summary(outs[seed]) if done else
                                                    {"log_tail": tail(ctx.work / f"finetune-s{seed}.log", 30)})}
    trained = [s for s in SEEDS if "device" in r["seeds"][s]]
    if trained:
        pairs = [x for s in trained for x in ("--pair", f"{s}:{outs[s]}:zeroshot")]
        runs = {}
        for split in ("cold", "mixed"):
            logs.append(open(ctx.work / f"paired-{split}.log", "w"))  # noqa: SIM115 - closed after the wait
            runs[split] = subprocess.Popen(
                [sys.executable, str(PAIRED), "--data", f"jsonl:{data}", "--split", split, *pairs,
                 "--base-model", str(model), "--json", str(ctx.work / f"paired-{split}.json")],
                stdout=logs[-1], stderr=subprocess.STDOUT,
                env=_env(ctx, threads if ctx.dry else 6, f"cache-paired-{split}"))
        paired_codes = _wait(runs, time.monotonic() + max(min(ctx.left() - 5, 1.5 * PAIRING_S), 10))
        r["paired"] = {}
        for split in runs:
            path = ctx.work / f"paired-{split}.json"
            failed = {"exit": paired_codes[split], "log_tail": tail(ctx.work / f"paired-{split}.log")}
            r["paired"][split] = (json.loads(path.read_text()) if paired_codes[split] == 0 and path.is_file()
                                  else failed)
    for f in logs:
        f.close()
    # whether the stage kept its fine-tuned encoder is a result (on validation), not a failure
    on_device = [s for s in trained if r["seeds"][s]["device"] == ctx.device]
    r["passed"] = bool(len(on_device) == len(SEEDS) and r.get("paired")
                       and all("pooled" in (v.get("test") or {}) for v in r["paired"].values()))
    return r
