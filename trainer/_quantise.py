"""int8 item encoders that keep the catalogue's neighbours: outlier split, SmoothQuant, dynamic int8.

Plain dynamic int8 (weights int8 per output channel, activations uint8 with one range per tensor
and batch) moved MiniLM's top-10 neighbours on short title texts too much (overlap 0.87 on
MovieLens). The loss is the activation range: a few channels dwarf the rest — the FFN's GELU
output on the [CLS] token (max |x| 14-25 where 99.9 % of values are below 2), the LayerNorm
outputs feeding attention and the FFN — so one range per tensor leaves most values a handful of
levels. Fixed (static) ranges are worse still. The recipe, measured on MovieLens, Amazon and
synthetic catalogues (bench/bench_quant.py):

1. statistics: the per-channel max |x| of every MatMul/Attention input on calibration texts, run
   by the SDK's own TextEncoder, so tokenisation and batches (64, sorted by length) are production's;
2. outlier split: per FFN, the k GELU channels with the largest max leave the int8 path — their
   FFN-in weight columns and bias are zeroed (GELU(0) = 0) and a small fp32 side branch
   MatMul(d -> k) -> BiasGelu -> MatMul(k -> d) adds them back through the next
   SkipLayerNormalization's skip input;
3. SmoothQuant (Xiao et al. 2023) on the Attention, attention-output and FFN-in inputs:
   x W = (x / s)(s W) moves the outliers into the weights; alpha is the one with the least mean
   (1 - cosine) to the fp32 graph on the calibration texts;
4. quantize_dynamic per channel with 7-bit weights (reduce_range): a uint8 x int7 pair cannot
   saturate AVX2's int16 VPMADDUBSW sums, so the vectors are the same on CPUs with and without VNNI;
5. when the calibration texts still miss the target, nodes stay fp32 one at a time, the most
   damaging first (each node's damage measured alone, on the statistics texts that fit in
   SENSITIVITY_TOKENS tokens);
6. the word-embedding table (its 30 k x 384 floats are 47 of the 59 MB otherwise) is stored in
   fp16 behind a Cast, which ONNX Runtime folds back into an fp32 constant when it loads the graph:
   23 MB less, the same speed, vectors at cosine >= 0.999 to the fp32 table's (top-10 overlap
   against the fp32 graph moved by -0.004 to +0.004 on the four trained bundles of round 3).

Steps 2 and 3 are exact in fp32, and checked so on the calibration texts before quantising (a
rewrite that is not is dropped). A graph whose FFN is not MatMul -> BiasGelu -> MatMul ->
SkipLayerNormalization keeps its FFNs whole, and one without fused attention gets neither
rewrite: step 5 then does the work.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._agreement import neighbour_overlap  # the gate's own measure

if TYPE_CHECKING:
    import onnx

OUTLIER_CHANNELS = 8  # per FFN; 4-16 measured alike on MiniLM
ALPHAS = (0.5, 0.6, 0.7, 0.8)
# What the calibration texts must reach, with a margin over the export gate (mean cosine 0.995,
# top-10 overlap 0.93), which compares other texts with torch.
CALIBRATION_TARGET = {"mean_cosine": 0.996, "top10_overlap": 0.94}
STATISTICS_TEXTS = 256  # statistics and alpha trials use the first calibration texts
# The per-node sensitivities (one build and run per node: the fallback's cost) use those of them that
# fit in this many tokens, at least MIN_SENSITIVITY_TEXTS: 256 Office product texts (93 tokens on
# average) made the pass two thirds of a 6-min build; 89-91 of them keep the same nodes fp32 in 40 %
# less time, and MovieLens' short titles (14 tokens) keep all 256 (bench/int8_sensitivity.py)
SENSITIVITY_TOKENS = 8192
MIN_SENSITIVITY_TEXTS = 64
EXACT = 1e-4  # the most an fp32 rewrite may move a component of a unit vector
_QUANTISED_OPS = ("MatMul", "Attention")
_SMOOTHED_ROLES = ("qkv", "attn_out", "ffn_in")
_GELU = ("BiasGelu", "Gelu", "FastGelu")


@dataclass
class QuantReport:
    """What `quantise_int8` built and how it measured on the calibration texts (against the fp32 graph).

    `calibration`: mean_cosine, min_cosine, top10_overlap, damage (mean 1 - cosine) of the int8
    graph; `alpha_damage`: the damage of each SmoothQuant alpha tried (statistics texts only);
    `fp32_error`: rewrite -> the most it moved a vector component in fp32 (exact: ~1e-7);
    `sensitivity`: node -> damage with that node alone quantised, on the first `sensitivity_texts`
    calibration texts (empty and 0 when the fallback did not run).
    """

    variant: str
    alpha: float | None
    outlier_channels: int
    split_ffns: int
    kept_fp32: list[str]
    calibration: dict[str, float]
    target_met: bool | None  # None: no target given
    alpha_damage: dict[float, float]
    fp32_error: dict[str, float]
    sensitivity: dict[str, float]
    sensitivity_texts: int
    calibration_texts: int
    build_seconds: float


def quantise_int8(src: Path, dst: Path, calibration_texts: Sequence[str], tokenizer: Path, max_length: int,
                  log: Callable[[str], None] = lambda message: None, *, threads: int | None = None,
                  outlier_channels: int = OUTLIER_CHANNELS, alphas: Sequence[float] = ALPHAS,
                  reduce_range: bool = True, half_embeddings: bool = True,
                  target: Mapping[str, float] | None = CALIBRATION_TARGET,
                  sensitivity_tokens: int = SENSITIVITY_TOKENS) -> QuantReport:
    """Write the int8 graph of the fused fp32 graph `src` to `dst`, calibrated on catalogue texts.

    `calibration_texts` should be item texts the parity gate does not use (512 is what was
    measured; the first `STATISTICS_TEXTS` give the statistics); `tokenizer` and `max_length` are
    the bundle's. `threads`: ONNX Runtime intra-op threads for the calibration runs (None: its
    default). The other options are the recipe's steps: `outlier_channels` 0 skips the split,
    empty `alphas` skip SmoothQuant, `reduce_range` False keeps 8-bit weights, `half_embeddings`
    False keeps the word embeddings fp32, `target` None skips the greedy fallback,
    `sensitivity_tokens` bounds the texts its per-node pass runs (the defaults are what ships).
    """
    import onnx

    texts = list(calibration_texts)
    if len(texts) < 2:
        raise ValueError(f"calibration_texts: need at least 2, got {len(texts)}")
    if target is not None and not set(target) <= {"mean_cosine", "min_cosine", "top10_overlap"}:
        raise ValueError(f"target {dict(target)}: figures are mean_cosine, min_cosine, top10_overlap")
    if not isinstance(sensitivity_tokens, int) or isinstance(sensitivity_tokens, bool) or sensitivity_tokens < 1:
        raise ValueError(f"sensitivity_tokens {sensitivity_tokens!r}: must be a positive integer")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lmrec-int8-") as tmp:
        work = Path(tmp)
        model = onnx.load(str(src))
        _name_nodes(model)
        roles = _roles(model)
        calibration = _Calibration(texts, tokenizer, max_length, threads, work, src)
        absmax = calibration.absmax(model, sorted({n.input[0] for n in model.graph.node if n.name in roles}))
        log(f"int8 calibration: {len(texts)} texts, statistics on {min(len(texts), STATISTICS_TEXTS)}, "
            f"{len(roles)} MatMul/Attention nodes")
        fp32_error: dict[str, float] = {}
        side: list[str] = []
        if outlier_channels:
            rewritten, side = _split_outliers(model, roles, absmax, outlier_channels)
            if side and _exact("split", rewritten, calibration, fp32_error, log):
                model = rewritten
            else:
                side = []
        ffns = sum(role == "ffn_out" for role in roles.values())
        split = len(side) // 2
        log(f"outlier split: {outlier_channels} channels in {split} of {ffns} FFNs" if split
            else "outlier split: off" if not outlier_channels
            else "outlier split: none (no FFN is MatMul -> BiasGelu -> MatMul -> SkipLayerNormalization)")

        alpha: float | None = None
        alpha_damage: dict[float, float] = {}
        fp32 = work / "rewritten.onnx"
        if alphas and any(role in _SMOOTHED_ROLES for role in roles.values()):
            for a in alphas:  # each alpha's int8 graph, measured
                trial = _smooth(model, roles, absmax, a)
                if half_embeddings:
                    half_word_embeddings(trial)
                onnx.save(trial, str(fp32))
                _quantize(fp32, dst, reduce_range, exclude=side)
                alpha_damage[a] = calibration.score(dst, STATISTICS_TEXTS)["damage"]
            best = min(alphas, key=lambda a: (round(alpha_damage[a], 6), a))  # ties: the smaller alpha
            log("SmoothQuant alpha: " + ", ".join(f"{a:g} damage {d:.5f}" for a, d in alpha_damage.items())
                + f" -> {best:g}")
            rewritten = _smooth(model, roles, absmax, best)
            if _exact("smoothing", rewritten, calibration, fp32_error, log):
                model, alpha = rewritten, best
        # quantize_dynamic leaves the table as it finds it: halved once here, in every graph below
        halved = half_embeddings and half_word_embeddings(model)
        onnx.save(model, str(fp32))

        _quantize(fp32, dst, reduce_range, exclude=side)
        figures = calibration.score(dst)
        kept: list[str] = []
        sensitivity: dict[str, float] = {}
        sensitivity_texts = 0
        if target is not None and not _met(figures, target):
            sensitivity_texts = calibration.within(sensitivity_tokens)
            log(f"calibration {_show(figures)} misses {_show(target)}: keeping nodes fp32, most damaging first "
                f"(each alone on {sensitivity_texts} texts)")
            for name in roles:
                _quantize(fp32, dst, reduce_range, exclude=side, only=[name])
                sensitivity[name] = calibration.score(dst, sensitivity_texts)["damage"]
            order = sorted(roles, key=lambda name: -sensitivity[name])  # ties: graph order
            while not _met(figures, target) and len(kept) < len(order):
                kept.append(order[len(kept)])
                _quantize(fp32, dst, reduce_range, exclude=side + kept)
                figures = calibration.score(dst)
                log(f"  {len(kept)} kept fp32 (last {kept[-1]}, {roles[kept[-1]]}): {_show(figures)}")
    met = None if target is None else _met(figures, target)
    variant = ", ".join(["dynamic int8 per channel", "7-bit weights" if reduce_range else "8-bit weights"]
                        + (["word embeddings in fp16"] if halved else [])
                        + ([f"SmoothQuant alpha {alpha:g}"] if alpha is not None else [])
                        + ([f"{outlier_channels} outlier FFN channels per layer in fp32"
                            + ("" if split == ffns else f" ({split} of {ffns} FFNs)")] if split else [])
                        + ([f"{len(kept)} node{'s' if len(kept) > 1 else ''} kept fp32"] if kept else []))
    report = QuantReport(variant, alpha, outlier_channels if split else 0, split, kept, figures, met, alpha_damage,
                         fp32_error, sensitivity, sensitivity_texts, len(texts), time.perf_counter() - start)
    log(f"int8: {variant}; calibration {_show(figures)}"
        + ("" if met is None else " (target met)" if met else f" (misses {_show(target or {})})")
        + f"; {report.build_seconds:.0f} s")
    return report


def _exact(rewrite: str, model: onnx.ModelProto, calibration: _Calibration, fp32_error: dict[str, float],
           log: Callable[[str], None]) -> bool:
    """Whether the fp32 rewrite `model` gives the original's vectors on the calibration texts (recorded
    in `fp32_error`): a graph this module misreads costs that rewrite, not the int8 graph."""
    fp32_error[rewrite] = calibration.deviation(model)
    if fp32_error[rewrite] > EXACT:
        log(f"warning: the {rewrite} moved fp32 vectors by {fp32_error[rewrite]:.2e}; not used")
    return fp32_error[rewrite] <= EXACT


class _Calibration:
    """The calibration texts run by the SDK's TextEncoder, compared with the fp32 graph's vectors."""

    def __init__(self, texts: list[str], tokenizer: Path, max_length: int, threads: int | None, work: Path,
                 fp32: Path) -> None:
        self.texts, self.tokenizer, self.max_length = texts, tokenizer, max_length
        self.threads, self.work = threads, work
        encoder = self._encoder(fp32)
        self.reference = encoder.embed(texts)
        self._tokenizer = encoder.tokenizer  # truncates as every encoder here does

    def _save(self, model: onnx.ModelProto, name: str) -> Path:
        import onnx

        path = self.work / name
        onnx.save(model, str(path))
        return path

    def _encoder(self, path: Path) -> Any:
        from lmrec import TextEncoder

        return TextEncoder(path, self.tokenizer, self.max_length, threads=self.threads)

    def _embed(self, path: Path, n: int) -> np.ndarray:
        return self._encoder(path).embed(self.texts[:n])

    def absmax(self, model: onnx.ModelProto, tensors: list[str]) -> dict[str, np.ndarray]:
        """Per-channel max |x| of `tensors` over the statistics texts, padding included (a dynamic
        range covers it too): the graph with the tensors as extra outputs, run by a TextEncoder
        whose session records them."""
        import onnx

        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                                  for t in tensors)
        encoder = self._encoder(self._save(probe, "probe.onnx"))
        recorder = _Recorder(encoder.session, tensors)
        encoder.session = recorder
        encoder.embed(self.texts[:STATISTICS_TEXTS])
        return recorder.absmax

    def within(self, tokens: int) -> int:
        """How many of the first statistics texts fit in `tokens` tokens (truncated as the encoder
        truncates them), at least MIN_SENSITIVITY_TEXTS: a pass's cost follows its tokens."""
        texts = self.texts[:STATISTICS_TEXTS]
        used = np.cumsum([len(e.ids) for e in self._tokenizer.encode_batch(texts)])
        return min(len(texts), max(MIN_SENSITIVITY_TEXTS, int(np.sum(used <= tokens))))

    def score(self, path: Path, n: int | None = None) -> dict[str, float]:
        """The graph at `path` against the fp32 vectors on the first `n` texts (all: None)."""
        n = len(self.texts) if n is None else min(n, len(self.texts))
        got, reference = self._embed(path, n), self.reference[:n]
        cosine = np.sum(got * reference, axis=1)
        return {"mean_cosine": float(cosine.mean()), "min_cosine": float(cosine.min()),
                "top10_overlap": neighbour_overlap(reference, got), "damage": float(np.mean(1 - cosine))}

    def deviation(self, model: onnx.ModelProto) -> float:
        """The most `model` (an fp32 rewrite) moves a vector component on the calibration texts."""
        got = self._embed(self._save(model, "check.onnx"), len(self.texts))
        return float(np.abs(got - self.reference).max())


class _Recorder:
    """Stands in for a TextEncoder's session: runs the probe graph, keeps the running per-channel
    max |x| of its extra outputs, and hands the encoder the sentence vectors."""

    def __init__(self, session: Any, tensors: list[str]) -> None:
        self.session, self.tensors = session, tensors
        self.absmax: dict[str, np.ndarray] = {}

    def run(self, output_names: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        outputs = self.session.run(None, feeds)
        for name, x in zip(self.tensors, outputs[1:], strict=True):
            m = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0)
            self.absmax[name] = np.maximum(self.absmax[name], m) if name in self.absmax else m
        return list(outputs)


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed or duplicate nodes unique names: quantize_dynamic includes and excludes by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}_lmrec"
        seen.add(node.name)


def _roles(model: onnx.ModelProto) -> dict[str, str]:
    """name -> role of every node quantize_dynamic quantises here (Attention, MatMul with a constant
    weight), in graph order, from the graph's structure rather than its names: qkv (fused
    Attention), attn_out (MatMul fed by Attention), ffn_in (MatMul feeding a GELU), ffn_out
    (MatMul fed by a GELU), other."""
    graph = _Graph(model)
    roles = {}
    for node in model.graph.node:
        if node.op_type == "Attention":
            roles[node.name] = "qkv"
        elif node.op_type == "MatMul" and node.input[1] in graph.inits:
            fed_by = graph.producer.get(node.input[0])
            feeds = {c.op_type for c in graph.consumers[node.output[0]]}
            roles[node.name] = ("attn_out" if fed_by is not None and fed_by.op_type == "Attention"
                                else "ffn_out" if fed_by is not None and fed_by.op_type in _GELU
                                else "ffn_in" if feeds & set(_GELU) else "other")
    return roles


class _Graph:
    """Lookups over a graph being rewritten, and initializer writes that never touch a shared one."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.inits = {i.name: i for i in model.graph.initializer}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.consumers: dict[str, list[Any]] = defaultdict(list)
        for node in model.graph.node:
            for name in node.input:
                self.consumers[name].append(node)

    def array(self, name: str) -> np.ndarray:
        from onnx import numpy_helper

        return numpy_helper.to_array(self.inits[name]).astype(np.float32)

    def add(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        self.graph.initializer.append(self.inits[name])
        return name

    def write(self, node: Any, position: int, value: np.ndarray) -> None:
        """Set input `position` of `node` (an initializer) to `value`; other users of the same
        initializer (deduplicated zero biases, say) keep the old one."""
        from onnx import numpy_helper

        name = node.input[position]
        if len(self.consumers[name]) > 1:
            self.consumers[name].remove(node)
            node.input[position] = self.add(f"{name}/{node.name}", value)
            self.consumers[node.input[position]].append(node)
        else:
            self.inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))

    def insert_before(self, anchor: Any, nodes: list[Any]) -> None:
        position = list(self.graph.node).index(anchor)
        for offset, node in enumerate(nodes):
            self.graph.node.insert(position + offset, node)
            for name in node.input:
                self.consumers[name].append(node)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _split_outliers(model: onnx.ModelProto, roles: Mapping[str, str], absmax: Mapping[str, np.ndarray],
                    k: int) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` with the k GELU channels of largest max |x| of every FFN computed in an fp32
    side branch (see the module docstring); returns it and the side MatMuls' names (to keep fp32).
    FFNs not shaped MatMul -> BiasGelu -> MatMul -> SkipLayerNormalization are left as they are."""
    from onnx import helper

    model = _copy(model)
    graph = _Graph(model)
    side: list[str] = []
    for node in list(model.graph.node):
        if roles.get(node.name) != "ffn_out":
            continue
        gelu = graph.producer[node.input[0]]
        ffn_in = graph.producer.get(gelu.input[0])
        after = graph.consumers[node.output[0]]
        if (gelu.op_type != "BiasGelu" or ffn_in is None or roles.get(ffn_in.name) != "ffn_in"
                or gelu.input[1] not in graph.inits or len(graph.consumers[gelu.output[0]]) != 1
                or len(graph.consumers[ffn_in.output[0]]) != 1 or len(after) != 1
                or after[0].op_type != "SkipLayerNormalization" or node.output[0] not in after[0].input[:2]):
            continue
        skip_ln = after[0]
        w_in, bias, w_out = graph.array(ffn_in.input[1]), graph.array(gelu.input[1]), graph.array(node.input[1])
        channels = np.sort(np.argsort(-absmax[node.input[0]], kind="stable")[:min(k, len(bias))])
        base = f"{node.name}/side"
        skip_at = 1 if skip_ln.input[0] == node.output[0] else 0
        nodes = [
            helper.make_node("MatMul", [ffn_in.input[0], graph.add(f"{base}/w_in", w_in[:, channels])],
                             [f"{base}/h"], name=f"{base}/in"),
            helper.make_node("BiasGelu", [f"{base}/h", graph.add(f"{base}/bias", bias[channels])], [f"{base}/g"],
                             name=f"{base}/gelu", domain="com.microsoft"),
            helper.make_node("MatMul", [f"{base}/g", graph.add(f"{base}/w_out", w_out[channels])], [f"{base}/y"],
                             name=f"{base}/out"),
            helper.make_node("Add", [skip_ln.input[skip_at], f"{base}/y"], [f"{base}/skip"], name=f"{base}/add"),
        ]
        w_in[:, channels] = 0.0
        bias[channels] = 0.0
        graph.write(ffn_in, 1, w_in)
        graph.write(gelu, 1, bias)
        graph.insert_before(skip_ln, nodes)
        skip_ln.input[skip_at] = f"{base}/skip"
        side += [f"{base}/in", f"{base}/out"]
    return model, side


def _smooth(model: onnx.ModelProto, roles: Mapping[str, str], absmax: Mapping[str, np.ndarray],
            alpha: float) -> onnx.ModelProto:
    """A copy of `model` with SmoothQuant on every qkv, attn_out and ffn_in node: weight rows times
    s = max|x|^alpha / max|W|^(1 - alpha), the input divided by s — by the V columns of the
    Attention before an attention-output MatMul (no extra op), else by a Mul inserted in front."""
    from onnx import helper

    model = _copy(model)
    graph = _Graph(model)
    for node in list(model.graph.node):
        if roles.get(node.name) not in _SMOOTHED_ROLES:
            continue
        weight = graph.array(node.input[1])
        s = (np.maximum(absmax[node.input[0]], 1e-5) ** alpha
             / np.maximum(np.abs(weight).max(axis=1), 1e-5) ** (1 - alpha)).clip(1e-3, 1e3).astype(np.float32)
        graph.write(node, 1, weight * s[:, None])
        attention = graph.producer.get(node.input[0])
        if roles[node.name] == "attn_out" and len(graph.consumers[node.input[0]]) == 1 and attention is not None:
            qkv = graph.array(attention.input[1])
            columns = _v_columns(attention, qkv.shape[1])
            qkv[:, columns] /= s
            graph.write(attention, 1, qkv)
            if len(attention.input) > 2 and attention.input[2]:
                bias = graph.array(attention.input[2])
                bias[columns] /= s
                graph.write(attention, 2, bias)
            continue
        scaled = f"{node.input[0]}/smoothed/{node.name}"
        mul = helper.make_node("Mul", [node.input[0], graph.add(f"{node.name}/smooth_scale", 1 / s)], [scaled],
                               name=f"{node.name}/smooth")
        graph.insert_before(node, [mul])
        graph.consumers[node.input[0]].remove(node)
        node.input[0] = scaled
    return model


def _v_columns(attention: Any, width: int) -> slice:
    """Where V sits in a fused Attention's packed QKV weight (Q | K | V, sizes from qkv_hidden_sizes)."""
    sizes = next((list(a.ints) for a in attention.attribute if a.name == "qkv_hidden_sizes"), [width // 3] * 3)
    return slice(sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2])


def _quantize(src: Path, dst: Path, reduce_range: bool, exclude: Sequence[str],
              only: Sequence[str] | None = None) -> None:
    """ONNX Runtime's dynamic int8 on MatMul and Attention: weights int8 per output channel."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic warns "consider pre-processing" on the root logger every call
    try:
        quantize_dynamic(str(src), str(dst), op_types_to_quantize=list(_QUANTISED_OPS), per_channel=True,
                         reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_quantize=list(only or []),
                         nodes_to_exclude=list(exclude),
                         # fused contrib ops have no ONNX shape inference: their outputs are float32
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    finally:
        root.setLevel(level)


def half_word_embeddings(model: onnx.ModelProto) -> bool:
    """Store the word-embedding table (EmbedLayerNormalization's, or the largest table a Gather
    reads) in fp16, cast back to fp32 in the graph; False when there is none to halve."""
    from onnx import TensorProto, helper, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    fused = [n.input[2] for n in model.graph.node if n.op_type == "EmbedLayerNormalization"]
    gathered = [n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in initializers]
    tables = [name for name in fused or gathered if initializers[name].data_type == TensorProto.FLOAT
              and len(initializers[name].dims) == 2]
    if not tables:
        return False
    name = max(tables, key=lambda t: int(np.prod(initializers[t].dims)))
    table = numpy_helper.to_array(initializers[name])
    if np.abs(table).max() >= np.finfo(np.float16).max:
        return False
    model.graph.initializer.remove(initializers[name])
    model.graph.initializer.append(numpy_helper.from_array(table.astype(np.float16), f"{name}/fp16"))
    model.graph.node.insert(0, helper.make_node("Cast", [f"{name}/fp16"], [name], to=TensorProto.FLOAT,
                                                name=f"{name}/to_fp32"))
    return True


def _met(figures: Mapping[str, float], target: Mapping[str, float]) -> bool:
    return all(figures[k] >= v for k, v in target.items())


def _show(figures: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in figures.items() if k != "damage")
