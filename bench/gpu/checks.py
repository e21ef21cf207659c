"""The GPU checks of lmrec's CUDA path, through its public API and CLI only.

    python3 bench/gpu/checks.py --payload P --work W --results R [--device cuda] [--budget 210]
    python3 bench/gpu/checks.py --payload P --work W --results R --device cpu --dry-run   # same code, tiny sizes

`P` is the unpacked payload of prepare.sh (bundle/, data/, model16/, reference/). Each check
records its numbers, its targets and `passed` (true / false; null where a target does not apply,
e.g. every speed target on the CPU); one failing check never stops the others; every loop is
bounded by a count and by the time left of `--budget` seconds. R/results.json is rewritten after
every check, so a run cut short still leaves what it measured. bench/gpu/README.md explains
every key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

# torch before onnxruntime: on the GPU machine importing torch loads the CUDA 13 libraries
# (cuBLAS, cuRAND, cudart) that onnxruntime-gpu's CUDA provider links against.
try:
    import torch
except ImportError:  # the checks that need torch say so; the others still run
    torch = None  # type: ignore[assignment]


from check_finetune import check_finetune
from check_models import check_cuda_guard, check_embed_cli, check_encoder_parity, check_environment, check_top10_overlap
from check_serving import check_server, check_train, check_train_host_transformers
from check_speed import check_speed
from common import TARGETS, Ctx, now, torch


def _digest(name: str, r: dict[str, Any]) -> str:
    """The few numbers of a check worth a line of output (the output tail may be all that comes back)."""
    g = r.get
    try:
        if name == "environment":
            return f"{(g('torch') or {}).get('gpu')} torch {(g('torch') or {}).get('version')} ort " \
                   f"{(g('onnxruntime') or {}).get('version')} {(g('onnxruntime') or {}).get('available_providers')}"
        if name == "encoder_parity":
            return f"{g('rec_device')}/{g('rec_precision')} {g('ort_session_providers')} min cosine " \
                   f"{g('cosine_batch64')['min']:.5f}/{g('cosine_batch512')['min']:.5f}, {g('gpu_memory_taken_mb')} MB"
        if name == "cuda_guard":
            return f"hidden GPU: {g('hidden_gpu')}; no torch, no library path: {g('no_torch_no_library_path')}"[:400]
        if name == "top10_overlap":
            return f"item-to-item {g('item_to_item')['mean']:.4f}, search {g('search')['mean']}"
        if name == "embed_cli":
            return f"exit {g('exit')}, min cosine {(g('cosine') or {}).get('min')}, " \
                   f"{(g('report') or {}).get('items_per_s')} items/s"
        if name == "speed":
            m = {k: v["speedup"] for k, v in g("model_time").items()}
            e = {k: v["speedup"] for k, v in g("e2e").items()}
            return f"model speedup {m}, e2e speedup {e}, batch1 {g('batch1')}, meets {g('meets')}"
        if name == "server":
            return f"{g('model_info')}, {g('grpc')['texts_per_s']} texts/s p50 {g('grpc')['p50_ms']} ms p99 " \
                   f"{g('grpc')['p99_ms']} ms, errors {g('grpc')['errors']}; in-process " \
                   f"{g('in_process_batches_of_32')['texts_per_s']} texts/s"
        if name == "finetune":
            seeds = {s: (v.get("exit"), (v.get("text") or {}).get("valid_ndcg@10"), v.get("training_seconds"))
                     for s, v in g("seeds").items()}
            pooled = {split: {part: {grp: (round(x["a"], 4), round(x["b"], 4), round(x["ratio"] or 0, 3),
                                           [round(c, 3) for c in x["ratio_ci95"] or []])
                                     for grp, x in v[part]["pooled"].items()} for part in ("valid", "test")}
                      for split, v in (g("paired") or {}).items() if "test" in v}
            return f"{g('budget_minutes')} min: seeds {seeds}; pooled vs zero-shot {pooled}"
        if name.startswith("train"):
            return f"exit {g('exit')}, device {g('device')}, transformers {g('transformers')}, " \
                   f"{g('seconds_per_epoch')} s/epoch, ~{g('steps_estimate')} steps, {g('training_seconds')} s"
    except (KeyError, TypeError, AttributeError):
        pass
    return ""


CHECKS: list[tuple[str, Callable[[Ctx], dict[str, Any]], float, bool]] = [
    # name, function, seconds it needs at least to start, counts towards all_passed
    ("environment", check_environment, 1, True),
    # issue 12's fine-tuning first: it sizes its trainings by the time left and leaves the rest
    ("finetune", check_finetune, 60, True),
    ("encoder_parity", check_encoder_parity, 5, True),
    ("cuda_guard", check_cuda_guard, 10, True),
    ("top10_overlap", check_top10_overlap, 5, True),
    ("embed_cli", check_embed_cli, 10, True),
    ("speed", check_speed, 20, True),
    ("server", check_server, 15, True),
    ("train", check_train, 30, True),
    ("train_host_transformers", check_train_host_transformers, 20, False),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payload", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes (for a CPU run of the same code)")
    ap.add_argument("--budget", type=float, default=210.0, help="seconds for all checks (default %(default)s)")
    ap.add_argument("--only", default=None, help="comma-separated check names")
    ap.add_argument("--tf4-site", default=os.environ.get("LMREC_GPU_TF4_SITE") or None,
                    help="a folder with the carried transformers, put first on PYTHONPATH for lmrec train")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = Ctx(args)
    ctx.work.mkdir(parents=True, exist_ok=True)
    ctx.results.mkdir(parents=True, exist_ok=True)
    if ctx.cuda and torch is not None and torch.cuda.is_available():
        torch.cuda.init()
    only = set(args.only.split(",")) if args.only else None
    results: dict[str, Any] = {"started": now(), "device": ctx.device, "dry_run": ctx.dry, "budget_s": args.budget,
                               "targets": TARGETS, "checks": {}}
    path = ctx.results / "results.json"

    def save() -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
        tmp.replace(path)

    for name, fn, need, gating in CHECKS:
        if only and name not in only:
            continue
        if ctx.left() < need:
            results["checks"][name] = {"passed": False if gating else None,
                                       "skipped": f"out of time ({ctx.left():.0f} s left)"}
            save()
            continue
        t = time.perf_counter()
        print(f"[checks] {name} …", file=sys.stderr, flush=True)
        try:
            r = fn(ctx)
        except Exception as e:  # noqa: BLE001 - one failing check must not stop the others
            r = {"passed": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        r["seconds"] = round(time.perf_counter() - t, 2)
        r.setdefault("gating", gating)
        results["checks"][name] = r
        print(f"[checks] {name}: passed={r.get('passed')} ({r['seconds']} s) "
              + (r["error"] if r.get("error") else _digest(name, r)), file=sys.stderr, flush=True)
        save()
    rec = ctx.shared.get("rec")
    if rec is not None:
        rec.close()
    gating = {k: v for k, v in results["checks"].items() if v.get("gating", True)}
    results["summary"] = {
        "passed": [k for k, v in gating.items() if v.get("passed") is True],
        "failed": [k for k, v in gating.items() if v.get("passed") is False],
        "not_applicable": [k for k, v in gating.items() if v.get("passed") is None],
        "all_passed": all(v.get("passed") is True for v in gating.values()) if ctx.cuda else None,
        "seconds": round(time.monotonic() - ctx.started, 1),
    }
    results["finished"] = now()
    save()
    s = results["summary"]
    print(f"lmrec-gpu: {len(s['passed'])} passed, {len(s['failed'])} failed"
          + (f" ({', '.join(s['failed'])})" if s["failed"] else "")
          + (f", {len(s['not_applicable'])} not applicable on {ctx.device}" if s["not_applicable"] else "")
          + f"; {path}")
    return 0 if not s["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
