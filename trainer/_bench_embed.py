"""Embedding speed: lmrec int8 against sentence-transformers and FastEmbed on the same weights.

Every engine embeds the same item texts (truncated to the bundle's max length, batch 64) and the
same short queries one at a time (batch 1, the latency of a live request), interleaved repeat by
repeat so background load hits all of them alike; medians are reported. FastEmbed loads the fp32
ONNX export from a local directory as a custom model (its documented offline path). Each engine's
vectors are also compared with sentence-transformers', so a fast but wrong engine cannot win.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lmrec import Bundle, LmrecError, Manifest, progress_bar, require

TARGETS = {
    "speedup_vs_sentence_transformers_b64": 2.5,
    "speedup_vs_fastembed_b64": 1.3,
    "latency_speedup_vs_sentence_transformers_b1": 4.0,
}
BATCH = 64


def short_queries(texts: Sequence[str], n: int, words: int = 4) -> list[str]:
    """Search-box-like queries: the first few words of item texts (titles come first)."""
    out = []
    for text in texts:
        query = " ".join(text.replace(".", " ").split()[:words])
        if query:
            out.append(query)
        if len(out) == n:
            break
    return out


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fastembed_dir(bundle: Bundle, model_dir: str, out: Path) -> Path:
    """A FastEmbed model folder around the bundle's fp32 graph (which already pools and normalises)."""
    out.mkdir(parents=True, exist_ok=True)
    os.symlink(bundle.encoder_path("fp32"), out / "model.onnx")
    shutil.copyfile(bundle.file(Manifest.TOKENIZER), out / "tokenizer.json")
    for name in ("special_tokens_map.json", "config.json"):
        if (Path(model_dir) / name).is_file():
            shutil.copyfile(Path(model_dir) / name, out / name)
    config = json.loads((Path(model_dir) / "tokenizer_config.json").read_text())
    config["model_max_length"] = bundle.max_length
    (out / "tokenizer_config.json").write_text(json.dumps(config))
    return out


def _load_fastembed(bundle: Bundle, model_dir: str, workdir: Path,
                    threads: int | None) -> Callable[[list[str], int], np.ndarray]:
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    name = f"lmrec-bench/{bundle.path.name}-{os.getpid()}"
    TextEmbedding.add_custom_model(model=name, pooling=PoolingType.DISABLED, normalization=True,
                                   sources=ModelSource(hf=name), dim=bundle.manifest.encoder_dim or bundle.dim,
                                   model_file="model.onnx")
    model = TextEmbedding(model_name=name, specific_model_path=str(_fastembed_dir(bundle, model_dir, workdir)),
                          local_files_only=True, threads=threads)
    return lambda texts, batch: np.asarray(list(model.embed(texts, batch_size=batch)), dtype=np.float32)


def _load_sentence_transformers(model_dir: str, max_length: int) -> Callable[[list[str], int], np.ndarray]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    model.max_seq_length = max_length
    return lambda texts, batch: model.encode(texts, batch_size=batch, normalize_embeddings=True,
                                             convert_to_numpy=True, show_progress_bar=False)


def _load_lmrec(bundle: Bundle, precision: str, threads: int | None) -> Callable[[list[str], int], np.ndarray]:
    from lmrec import TextEncoder

    encoder = TextEncoder.from_bundle(bundle, "cpu", precision, threads)
    return lambda texts, batch: encoder.embed(texts, batch_size=batch)


def _time_engines(
    engines: dict[str, Callable[[list[str], int], np.ndarray]],
    texts: list[str],
    queries: list[str],
    repeats: int,
    progress: bool,
) -> tuple[dict[str, np.ndarray], dict[str, list[float]], dict[str, list[float]]]:
    """Interleaved timings: each repeat runs every engine once, so background load hits all alike."""

    for run in engines.values():  # warm-up: lazy initialisation, allocator arenas
        run(texts[:BATCH], BATCH)
        run(queries[:2], 1)
    b64: dict[str, list[float]] = {name: [] for name in engines}
    b1: dict[str, list[float]] = {name: [] for name in engines}
    vectors: dict[str, np.ndarray] = {}
    with progress_bar(total=repeats * len(engines), desc="bench embed", unit="run", enabled=progress) as bar:
        for _ in range(repeats):
            for name, run in engines.items():
                start = time.perf_counter()
                vectors[name] = run(texts, BATCH)
                b64[name].append(time.perf_counter() - start)
                for q in queries:
                    start = time.perf_counter()
                    run([q], 1)
                    b1[name].append(time.perf_counter() - start)
                bar.update(1)
    return vectors, b64, b1


def _count_truncated(bundle: Bundle, texts: list[str]) -> int:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(bundle.file(Manifest.TOKENIZER)))
    return sum(len(e.ids) > bundle.max_length for e in tokenizer.encode_batch(texts))


def bench_embed(data_spec: str, bundle_dir: str | None = None, repeats: int = 3, texts: int | None = None,
                queries: int = 64, threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the comparison and return the report (engines, medians, speed-ups, targets met).
    `threads` sets every engine's intra-op threads (default: each engine's own, all cores)."""
    require("sentence_transformers", "bench", "lmrec bench embed")
    require("fastembed", "bench", "lmrec bench embed")
    import torch
    from lmrec import load_dataset

    from ._encoder import default_model_path
    from .export import DEFAULT_BASE_MODEL_NAME

    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"--repeats {repeats!r}: must be an integer >= 1")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"--threads {threads!r}: must be an integer >= 1")
    if texts is not None and (not isinstance(texts, int) or texts < BATCH):
        raise ValueError(f"--texts {texts!r}: must be an integer >= {BATCH} (one full batch)")
    data = load_dataset(data_spec)
    rng = np.random.default_rng(0)
    pick = np.arange(data.n_items) if texts is None or texts >= data.n_items else \
        np.sort(rng.choice(data.n_items, texts, replace=False))
    item_texts = [data.item_texts[i] for i in pick]
    query_texts = short_queries([data.item_texts[i] for i in rng.permutation(data.n_items)], queries)

    label = bundle_dir or "temporary zero-shot export of the packaged base model"
    with tempfile.TemporaryDirectory(prefix="lmrec-bench-") as tmp:
        if bundle_dir is None:
            from .export import build_zero_shot_bundle

            bundle_dir = str(build_zero_shot_bundle(data_spec, Path(tmp) / "bundle", parity_texts=256))
        bundle = Bundle.open(bundle_dir)
        if bundle.manifest.projection:
            raise LmrecError(f"--bundle {bundle_dir}: has a projection; benchmark a full-dimension bundle")
        truncated = _count_truncated(bundle, item_texts)
        model_dir = default_model_path()
        # A trained bundle has other weights than the base model: same architecture and cost, so the
        # speed comparison holds, but comparing vectors does not.
        same_weights = bundle.manifest.base_model == DEFAULT_BASE_MODEL_NAME and not bundle.manifest.training
        engines: dict[str, Callable[[list[str], int], np.ndarray]] = {
            "sentence_transformers": _load_sentence_transformers(model_dir, bundle.max_length),
            "lmrec_int8": _load_lmrec(bundle, "int8", threads),
            "lmrec_fp32": _load_lmrec(bundle, "fp32", threads),
        }
        errors: dict[str, str] = {}
        try:
            engines["fastembed"] = _load_fastembed(bundle, model_dir, Path(tmp) / "fastembed", threads)
        except Exception as e:  # report why instead of failing the whole benchmark
            errors["fastembed"] = f"{type(e).__name__}: {e}"

        torch_threads = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        load_before = os.getloadavg()[0]
        try:
            vectors, b64, b1 = _time_engines(engines, item_texts, query_texts, repeats, progress)
        finally:
            torch.set_num_threads(torch_threads)
        load_after = os.getloadavg()[0]

    reference = vectors["sentence_transformers"]
    result: dict[str, Any] = {
        "data": data_spec,
        "bundle": label,
        "texts": len(item_texts),
        "max_length": bundle.max_length,
        "truncated_texts": truncated,
        "queries": len(query_texts),
        "batch": BATCH,
        "repeats": repeats,
        "threads": threads if threads is not None else "engine default (all cores)",
        "host": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                 # other processes competing for the cores skew absolute numbers (and torch most)
                 "load_average_1min": {"before": load_before, "after": load_after}},
        "same_weights": same_weights,
        "engines": {},
        "errors": errors,
    }
    for name in engines:
        median = statistics.median(b64[name])
        cosine = np.sum(vectors[name] * reference, axis=1) if same_weights else None
        result["engines"][name] = {
            "b64_seconds": median,
            "b64_texts_per_second": len(item_texts) / median,
            "b1_ms_p50": 1000 * statistics.median(b1[name]),
            "b1_ms_p90": 1000 * float(np.percentile(b1[name], 90)),
            "mean_cosine_to_sentence_transformers": None if cosine is None else float(cosine.mean()),
        }
    e = result["engines"]
    ours = e["lmrec_int8"]
    result["speedup_vs_sentence_transformers_b64"] = e["sentence_transformers"]["b64_seconds"] / ours["b64_seconds"]
    result["latency_speedup_vs_sentence_transformers_b1"] = e["sentence_transformers"]["b1_ms_p50"] / ours["b1_ms_p50"]
    result["speedup_vs_fastembed_b64"] = (
        (e["fastembed"]["b64_seconds"] / ours["b64_seconds"]) if "fastembed" in e else None
    )
    if "fastembed" in e:
        result["latency_speedup_vs_fastembed_b1"] = e["fastembed"]["b1_ms_p50"] / ours["b1_ms_p50"]
    result["targets"] = dict(TARGETS)
    result["met"] = {k: (result[k] is not None and result[k] >= v) for k, v in TARGETS.items()}
    return result


def format_table(result: dict[str, Any]) -> str:
    """The report as a Markdown table plus the speed-ups against their targets."""
    lines = ["| engine | batch 64: texts/s | batch 64: s | batch 1: p50 ms | batch 1: p90 ms | mean cosine to ST |",
             "|---|---|---|---|---|---|"]
    labels = {
        "sentence_transformers": "sentence-transformers (torch fp32)",
        "fastembed": "FastEmbed (fp32 ONNX export)",
        "lmrec_fp32": "lmrec fp32 (fused ONNX)",
        "lmrec_int8": "lmrec int8",
    }
    for name, row in result["engines"].items():
        lines.append(
            f"| {labels.get(name, name)} | {row['b64_texts_per_second']:.1f} | {row['b64_seconds']:.2f} | "
            f"{row['b1_ms_p50']:.2f} | {row['b1_ms_p90']:.2f} | {_fmt(row['mean_cosine_to_sentence_transformers'])} |"
        )
    for name, error in result["errors"].items():
        lines.append(f"| {labels.get(name, name)} | failed: {error} | | | | |")
    lines.append("")
    for key, target in result["targets"].items():
        value = result[key]
        shown = "n/a" if value is None else f"{value:.2f}x"
        lines.append(f"- `{key}`: {shown} (target >= {target}x: {'met' if result['met'][key] else 'MISSED'})")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a (other weights)" if value is None else f"{value:.4f}"


def write_report(result: dict[str, Any], path: str) -> None:
    try:
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
    except OSError as e:
        raise LmrecError(f"--json {path}: cannot write ({e})") from None
