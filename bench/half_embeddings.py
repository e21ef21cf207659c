"""The int8 graph with its word-embedding table in fp16 (what quantise_int8 now writes) against the
same graph with the table in fp32 (what the bundles of round 3 ship), on trained bundles.

    cd /work/main && .venv/bin/python bench/half_embeddings.py out/quality/*-s0 \\
        --json bench/results/half-embeddings.json

Per bundle: file sizes; each graph's mean/min cosine and top-10 overlap against the bundle's fp32
graph on its last 512 item texts (the gate's figures, against the fp32 ONNX graph instead of torch,
which bundles do not carry); the two int8 graphs against each other; single-text embedding CPU
time (one thread, 64 texts, 15 alternating rounds, median of the per-round ratio).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from lmrec import TextEncoder
from lmrec.trainer.export import half_word_embeddings, neighbour_overlap


def _figures(got: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cosine = np.sum(got * reference, axis=1)
    return {"mean_cosine": round(float(cosine.mean()), 5), "min_cosine": round(float(cosine.min()), 5),
            "top10_overlap": round(neighbour_overlap(reference, got), 4)}


def _measure(bundle: Path, work: Path) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    texts = [t for t in (json.loads(line).get("text") for line in open(bundle / "items.jsonl")) if t][-512:]
    whole = bundle / "item_encoder.int8.onnx"
    model = onnx.load(str(whole))
    if not half_word_embeddings(model):
        raise SystemExit(f"{bundle}: no word-embedding table to halve")
    half = work / f"{bundle.name}.onnx"
    onnx.save(model, str(half))

    def encoder(path: Path) -> TextEncoder:
        return TextEncoder(path, bundle / "tokenizer.json", manifest["max_length"], threads=1)

    reference = encoder(bundle / "item_encoder.onnx").embed(texts)
    encoders = {"int8": encoder(whole), "int8_fp16_embeddings": encoder(half)}
    vectors = {name: e.embed(texts) for name, e in encoders.items()}
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for round_ in range(15):
        for name in (list(encoders) if round_ % 2 else list(reversed(encoders))):
            started = time.process_time()
            for text in texts[:64]:
                encoders[name].embed([text])
            times[name].append(time.process_time() - started)
    ratio = np.median(np.array(times["int8_fp16_embeddings"]) / np.array(times["int8"]))
    return {
        "mb": {"int8": round(whole.stat().st_size / 1e6, 1),
               "int8_fp16_embeddings": round(half.stat().st_size / 1e6, 1)},
        "vs_fp32_graph": {name: _figures(v, reference) for name, v in vectors.items()},
        "fp16_vs_fp32_table": _figures(vectors["int8_fp16_embeddings"], vectors["int8"]),
        "batch1_cpu_time_ratio": round(float(ratio), 3),
    }


def over_bundles(description: str, measure: Callable[[Path, Path], dict], key: Callable[[Path], str]) -> None:
    """The command line of a per-bundle bench: `measure(bundle, scratch folder)` for each bundle
    given, printed as it goes and written to --json under `key(bundle)`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("bundles", nargs="+", type=Path)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    report = {}
    with tempfile.TemporaryDirectory(prefix="lmrec-bench-") as tmp:
        for bundle in args.bundles:
            report[key(bundle)] = measure(bundle, Path(tmp))
            print(key(bundle), json.dumps(report[key(bundle)]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    over_bundles(__doc__.split("\n\n")[0], _measure, lambda bundle: bundle.name)
