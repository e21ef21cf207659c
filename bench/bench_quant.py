"""int8 variants of the item encoder side by side: gate figures, product overlap, size, speed, build time.

    cd /work/main && HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false nice .venv/bin/python \\
        bench/bench_quant.py --data movielens:../shared/data/movielens-latest-small \\
        --data amazon:../shared/data/amazon-office --data synthetic \\
        --json bench/results/quant.json --markdown bench/results/quant.md

The packaged all-MiniLM-L6-v2 is exported and fused once, as `lmrec export` does (max length 128).
Per dataset, samples as build_zero_shot_bundle draws them (seed 0): the parity gate's 512 texts
and, from the other items, 512 calibration texts (export.calibration_sample; the recipe's
statistics use the first 256); then 512 held-out texts that are neither (seed 2). Variants:

- dyn_today: the int8 lmrec shipped before (quantize_dynamic, per channel, every op type ORT knows);
- dyn_today_rr: the same with 7-bit weights (reduce_range);
- sq_only / split_only: the shipped recipe without the outlier split / without SmoothQuant, no fallback;
- ssq_8bit: the shipped recipe with 8-bit weights;
- ssq: the shipped recipe (lmrec.trainer.export.quantise_int8's defaults: split + SmoothQuant + 7-bit
  weights + greedy fp32 fallback);
- nbits8: reference, weight-only int8 (MatMulNBits, blocks of 32, accuracy level 4; attention fp32).

Figures: gate mean/min cosine and top-10 overlap = trainer/export.check_parity's protocol (each
graph against the torch encoder on the gate texts; overlap among them); `new gate` = the limits
int8 ships with (mean cosine >= 0.995, min cosine >= 0.98, top-10 overlap >= 0.93); product
top-10 = the held-out texts embedded by the variant as queries against the fp32 catalogue (the
item itself excluded), overlap with the fp32 query's top 10. Speed = fused fp32 time / variant
time, `lmrec bench embed`-style (TextEncoder.embed, one ONNX Runtime thread): batch 64 over 256
held-out texts (sorted by length, 4 batches) and batch 1 over 64 short queries (first 4 words of
held-out texts); every graph runs each batch in turn, in an order rotated per repeat; ratios per
repeat, medians over repeats, of the thread's CPU time (robust to other jobs on a shared host) and
of wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

MAX_LENGTH = 128
SAMPLE = 512
NEW_GATE = {"mean_cosine": 0.995, "min_cosine": 0.98, "top10_overlap": 0.93}
Builder = Callable[[Path, Path, list[str], Path], dict[str, Any]]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def dynamic(reduce_range: bool) -> Builder:
    """quantize_dynamic as lmrec called it before the calibrated recipe."""
    def build(src: Path, dst: Path, calibration: list[str], tokenizer: Path) -> dict[str, Any]:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(src), str(dst), per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return {}
    return build


def recipe(**options: Any) -> Builder:
    """lmrec's calibrated int8 (trainer/_quantise.py) with `options` changed from what ships."""
    def build(src: Path, dst: Path, calibration: list[str], tokenizer: Path) -> dict[str, Any]:
        from lmrec.trainer.export import quantise_int8

        report = quantise_int8(src, dst, calibration, tokenizer, MAX_LENGTH, lambda m: log("  " + m), threads=1,
                               **options)
        return {"report": dataclasses.asdict(report)}
    return build


def nbits8(src: Path, dst: Path, calibration: list[str], tokenizer: Path, block: int = 32) -> dict[str, Any]:
    """Every MatMul with a constant weight -> com.microsoft MatMulNBits: symmetric 8-bit weights per
    block of `block` rows of each column; accuracy_level 4 makes the CPU kernel quantise activations
    per block at run time. Written directly (ORT's MatMulNBitsQuantizer needs onnx_ir)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits:
            nodes.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)  # (K, N)
        k, n = w.shape
        blocks = -(-k // block)
        padded = np.zeros((blocks * block, n), np.float32)
        padded[:k] = w
        grouped = padded.reshape(blocks, block, n)
        scale = np.abs(grouped).max(axis=1) / 127.0  # (blocks, N)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(grouped / scale[:, None, :]), -127, 127).astype(np.int32) + 128
        blob, scales = node.input[1] + "_nbits", node.input[1] + "_nbits_scale"
        graph.initializer.extend([
            numpy_helper.from_array(np.ascontiguousarray(q.transpose(2, 0, 1)).astype(np.uint8), blob),
            numpy_helper.from_array(np.ascontiguousarray(scale.T).reshape(-1).astype(np.float32), scales)])
        nodes.append(helper.make_node("MatMulNBits", [node.input[0], blob, scales], list(node.output),
                                      name=node.name + "_nbits", domain="com.microsoft", K=k, N=n, bits=8,
                                      block_size=block, accuracy_level=4))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for node in graph.node for i in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(dst))
    return {}


VARIANTS: dict[str, tuple[str, Builder]] = {
    "dyn_today": ("dynamic int8 per channel, every op type (the int8 before this recipe)", dynamic(False)),
    "dyn_today_rr": ("dyn_today with 7-bit weights", dynamic(True)),
    "sq_only": ("SmoothQuant + 7-bit dynamic int8, no split, no fallback", recipe(outlier_channels=0, target=None)),
    "split_only": ("outlier split + 7-bit dynamic int8, no SmoothQuant, no fallback", recipe(alphas=(), target=None)),
    "ssq_8bit": ("the shipped recipe with 8-bit weights", recipe(reduce_range=False)),
    "ssq": ("shipped: split + SmoothQuant + 7-bit dynamic int8 + fp32 fallback", recipe()),
    "nbits8": ("reference: weight-only int8, MatMulNBits block 32", nbits8),
}


def samples(texts: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(gate indices, calibration texts, held-out indices) as `lmrec export` draws the first two
    (seed 0); the held-out texts are neither."""
    from lmrec.trainer.export import calibration_sample

    gate = np.sort(np.random.default_rng(0).choice(len(texts), min(SAMPLE, len(texts)), replace=False))
    calibration = calibration_sample(texts, gate, 0)
    used = set(calibration)
    rest = np.array([i for i in np.setdiff1d(np.arange(len(texts)), gate) if texts[i] not in used], dtype=np.int64)
    held = np.sort(np.random.default_rng(2).choice(rest, min(SAMPLE, len(rest)), replace=False))
    return gate, calibration, held


def top10(queries: np.ndarray, catalogue: np.ndarray, own: np.ndarray) -> list[set[int]]:
    scores = queries @ catalogue.T
    scores[np.arange(len(own)), own] = -np.inf
    return [set(row) for row in np.argpartition(-scores, 9, axis=1)[:, :10].tolist()]


def accuracy(path: Path, tokenizer: Path, texts: list[str], gate: np.ndarray, held: np.ndarray,
             reference: np.ndarray, catalogue: np.ndarray) -> dict[str, Any]:
    from lmrec import TextEncoder
    from lmrec.trainer.export import neighbour_overlap

    encoder = TextEncoder(path, tokenizer, MAX_LENGTH, threads=1)
    got = encoder.embed([texts[i] for i in gate])
    cosine = np.sum(got * reference, axis=1)
    figures = {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
               "top10_overlap": neighbour_overlap(reference, got)}
    queries = encoder.embed([texts[i] for i in held])
    mine, fp32 = top10(queries, catalogue, held), top10(catalogue[held], catalogue, held)
    product = float(np.mean([len(a & b) / 10 for a, b in zip(mine, fp32, strict=True)]))
    return {"gate": figures, "new_gate_passed": all(figures[k] >= v for k, v in NEW_GATE.items()),
            "product_top10_overlap": product, "mb": path.stat().st_size / 1e6}


def speed(paths: dict[str, Path], tokenizer: Path, batches: list[list[str]], queries: list[str],
          repeats: int) -> dict[str, dict[str, float]]:
    """Per graph: fp32 time / its time at batch 64 and 1, thread CPU and wall, medians over repeats."""
    from lmrec import TextEncoder

    encoders = {name: TextEncoder(path, tokenizer, MAX_LENGTH, threads=1) for name, path in paths.items()}
    names = list(encoders)
    for encoder in encoders.values():  # warm-up: allocator arenas, lazy initialisation
        encoder.embed(batches[0])
        encoder.embed(queries[:2], batch_size=1)
    out: dict[str, dict[str, float]] = {name: {} for name in names}
    for label, work in (("b64", [(b, 64) for b in batches]), ("b1", [([q], 1) for q in queries])):
        cpu = {name: np.zeros(repeats) for name in names}
        wall = {name: np.zeros(repeats) for name in names}
        for r in range(repeats):
            order = names[r % len(names):] + names[:r % len(names)]
            for texts, batch in work:
                for name in order:
                    c, w = time.thread_time(), time.perf_counter()
                    encoders[name].embed(texts, batch_size=batch)
                    cpu[name][r] += time.thread_time() - c
                    wall[name][r] += time.perf_counter() - w
        for name in names:
            out[name][f"speed_{label}"] = float(np.median(cpu["fp32"] / cpu[name]))
            out[name][f"wall_speed_{label}"] = float(np.median(wall["fp32"] / wall[name]))
            out[name][f"cpu_ms_{label}"] = float(np.median(cpu[name]) * 1000 / len(work))
    return out


def bench_dataset(spec: str, encoder: Any, fp32: Path, tokenizer: Path, work: Path, repeats: int) -> dict[str, Any]:
    from lmrec import TextEncoder, load_dataset

    data = load_dataset(spec)
    texts = list(data.item_texts)
    gate, calibration_texts, held = samples(texts)
    log(f"{data.name}: {len(texts)} items; torch reference on {len(gate)} gate texts")
    reference = encoder.encode([texts[i] for i in gate])
    catalogue = TextEncoder(fp32, tokenizer, MAX_LENGTH, threads=1).embed(texts)
    rows: dict[str, dict[str, Any]] = {"fp32": {"what": "fused fp32 (ORT transformer fusion)",
                                                **accuracy(fp32, tokenizer, texts, gate, held, reference, catalogue)}}
    paths = {"fp32": fp32}
    for name, (what, build) in VARIANTS.items():
        log(f"{data.name}: building {name}")
        start = time.perf_counter()
        path = work / f"{name}.onnx"
        try:
            info = build(fp32, path, calibration_texts, tokenizer)
        except Exception as e:  # a variant that cannot be built is a result too
            rows[name] = {"what": what, "error": f"{type(e).__name__}: {e}"[:300]}
            log(f"{data.name}: {name} FAILED: {rows[name]['error']}")
            continue
        rows[name] = {"what": what, "build_s": time.perf_counter() - start, **info,
                      **accuracy(path, tokenizer, texts, gate, held, reference, catalogue)}
        paths[name] = path
        gate_figures = rows[name]["gate"]
        log(f"{data.name}: {name} build {rows[name]['build_s']:.0f} s, gate " + ", ".join(
            f"{k} {v:.4f}" for k, v in gate_figures.items()) + f", product {rows[name]['product_top10_overlap']:.3f}")
    held_texts = [texts[i] for i in held]
    lengths = [len(e.ids) for e in TextEncoder(fp32, tokenizer, MAX_LENGTH).tokenizer.encode_batch(held_texts[:256])]
    ordered = [held_texts[i] for i in np.argsort(-np.asarray(lengths), kind="stable")]
    batches = [ordered[b:b + 64] for b in range(0, len(ordered), 64)]
    queries = [q for q in (" ".join(t.replace(".", " ").split()[:4]) for t in held_texts) if q][:64]
    log(f"{data.name}: speed, {len(batches)} batches of 64 and {len(queries)} queries, {repeats} repeats")
    load = os.getloadavg()[0]
    for name, figures in speed(paths, tokenizer, batches, queries, repeats).items():
        rows[name].update(figures)
    return {"spec": spec, "items": len(texts), "gate_texts": len(gate), "held_out_texts": len(held),
            "calibration_texts": len(calibration_texts),
            "load_average_1min": {"before": load, "after": os.getloadavg()[0]}, "variants": rows}


def markdown(results: dict[str, Any]) -> str:
    lines = ["# int8 variants of the item encoder (all-MiniLM-L6-v2, max length 128)", "",
             f"`{results['command']}` on {results['host']['cpu']}, one thread; see bench/bench_quant.py for the "
             "protocol. Speed: fused fp32 time / variant time (thread CPU; wall in brackets).", ""]
    for name, dataset in results["datasets"].items():
        lines += [f"## {name} ({dataset['items']} items)", "",
                  "| variant | gate cos mean | gate cos min | gate top-10 | new gate | product top-10 | MB "
                  "| speed b64 | speed b1 | build s | fp32 nodes | what |", "|---" * 12 + "|"]
        for variant, row in dataset["variants"].items():
            if "error" in row:
                lines.append(f"| {variant} | failed: {row['error']} |" + " |" * 10)
                continue
            gate = row["gate"]
            report = row.get("report") or {}
            lines.append(
                f"| {variant} | {gate['mean_cosine']:.4f} | {gate['min_cosine']:.4f} | {gate['top10_overlap']:.3f} "
                f"| {'pass' if row['new_gate_passed'] else 'FAIL'} | {row['product_top10_overlap']:.3f} "
                f"| {row['mb']:.1f} | {row['speed_b64']:.2f} ({row['wall_speed_b64']:.2f}) "
                f"| {row['speed_b1']:.2f} ({row['wall_speed_b1']:.2f}) | {_int(row.get('build_s'))} "
                f"| {len(report['kept_fp32']) if report else ''} | {report.get('variant') or row['what']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", action="append", required=True,
                   help="dataset spec, repeatable (movielens:PATH, amazon:PATH, synthetic)")
    p.add_argument("--json", required=True, type=Path, help="write the results here")
    p.add_argument("--markdown", type=Path, help="also write the table here")
    p.add_argument("--repeats", type=int, default=7, help="speed repeats (medians reported)")
    args = p.parse_args(argv)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # tokenise on the timed thread
    import torch
    from lmrec.trainer import TorchEncoder
    from lmrec.trainer.export import export_torch, optimise, save_tokenizer

    torch.set_num_threads(1)
    results: dict[str, Any] = {
        "command": "python bench/bench_quant.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "host": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "threads": 1, "max_length": MAX_LENGTH, "new_gate": NEW_GATE, "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="lmrec-bench-quant-") as tmp:
        work = Path(tmp)
        encoder = TorchEncoder(None, max_length=MAX_LENGTH, attn_implementation="eager")
        export_torch(encoder, work / "raw.onnx")
        results["fused_operators"] = optimise(work / "raw.onnx", work / "fp32.onnx", encoder.model.config)
        save_tokenizer(encoder, work / "tokenizer.json")
        for spec in args.data:
            spec = spec if ":" in spec else spec + ":"
            out = work / str(len(results["datasets"]))
            out.mkdir()
            dataset = bench_dataset(spec, encoder, work / "fp32.onnx", work / "tokenizer.json", out, args.repeats)
            results["datasets"][spec.split(":")[0]] = dataset
            args.json.write_text(json.dumps(results, indent=1, default=str))  # each dataset as it finishes
    table = markdown(results)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


def _int(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
