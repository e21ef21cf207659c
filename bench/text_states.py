"""The text stage's cached states in memory against the same states in a temporary file (what
`PartialEncoder` does past 1 GiB), on a synthetic catalogue of long descriptions.

    cd /work/main && .venv/bin/python bench/text_states.py --items 10000 --words 150 \\
        --json bench/results/text-states.json

Each variant runs in its own process (one torch thread): the cache pass (layer-4 states of every
text, 64 tokens), 40 training steps of 64 items through the top 2 layers (forward, backward,
AdamW), and one re-encoding of the catalogue; per phase the wall time and the process's resident
memory, split into anonymous memory (what the kernel cannot drop) and file pages (the memory map,
which it can). Variants alternate over `--rounds`; the table gives medians.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

STEPS, BATCH = 40, 64


def _memory() -> dict[str, float]:
    """Resident memory now, MB: anonymous, file-backed, and the peak of the whole (VmHWM)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return fields


def _child(items: int, words: int, on_disk: bool) -> dict:
    import lmrec
    import torch
    from lmrec.trainer import PartialEncoder, TorchEncoder, set_torch_threads

    set_torch_threads(1)
    texts = lmrec.load_dataset(f"synthetic:items={items},users=100,seed=0,words={words}").item_texts
    encoder = TorchEncoder(None, max_length=128)
    report: dict = {"variant": "disk" if on_disk else "memory", "start": _memory()}
    with tempfile.TemporaryDirectory() as spill:
        started = time.perf_counter()
        top = PartialEncoder(encoder, texts, 2, progress=False, max_length=64, spill_dir=spill,
                                 memory_limit=0 if on_disk else 1 << 40)
        report["cache_s"] = round(time.perf_counter() - started, 2)
        report["states_mb"] = round(top.states.nbytes / 2**20, 1)
        report["after_cache"] = _memory()
        opt = torch.optim.AdamW(list(top.top.parameters()), lr=1e-5)
        rng = np.random.default_rng(0)
        top.train()
        started = time.perf_counter()
        for _ in range(STEPS):
            loss = top(rng.choice(len(texts), BATCH, replace=False).tolist()).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        report["step_s"] = round((time.perf_counter() - started) / STEPS, 4)
        report["after_steps"] = _memory()
        started = time.perf_counter()
        top.encode_all(progress=False)
        report["encode_all_s"] = round(time.perf_counter() - started, 2)
        report["after_encode_all"] = _memory()
    return report


def _median(rows: list[dict], get: Callable[[dict], float]) -> float:
    return float(np.median([get(r) for r in rows]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--words", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("memory", "disk"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.items, args.words, args.child == "disk")))
        return
    runs = []
    for _ in range(args.rounds):
        for variant in ("memory", "disk"):
            out = subprocess.run([sys.executable, __file__, "--items", str(args.items), "--words", str(args.words),
                                  "--child", variant], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    print(f"\n{args.items} items x {args.words} words, states cut at 64 tokens, 2 top layers, one thread")
    print("| variant | states MB | cache pass s | s/step | re-encode s | anon MB after cache | "
          "file MB after cache | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in ("memory", "disk"):
        rows = [r for r in runs if r["variant"] == variant]
        med = partial(_median, rows)
        print(f"| {variant} | {med(lambda r: r['states_mb']):.0f} | {med(lambda r: r['cache_s']):.1f} | "
              f"{med(lambda r: r['step_s']):.3f} | {med(lambda r: r['encode_all_s']):.1f} | "
              f"{med(lambda r: r['after_cache']['RssAnon']):.0f} | {med(lambda r: r['after_cache']['RssFile']):.0f} | "
              f"{med(lambda r: r['after_encode_all']['VmHWM']):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"items": args.items, "words": args.words, "steps": STEPS, "batch": BATCH,
                                         "runs": runs}, indent=1) + "\n")


if __name__ == "__main__":
    main()
