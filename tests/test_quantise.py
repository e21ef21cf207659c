"""Calibrated int8 (outlier split, SmoothQuant, dynamic int8, greedy fp32 fallback) on tiny random BERTs.

The exactness tests use an unreachable calibration target and keep the word embeddings fp32: the
fallback then keeps every node fp32, so the written graph is the fp32 rewrite itself, compared here
with the graph it came from.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="int8 quantisation tests need the train extra (torch)")
pytest.importorskip("onnx", reason="int8 quantisation tests need the train extra (onnx)")

import lmrec  # noqa: E402
import onnx  # noqa: E402
from conftest import TINY_DATA  # noqa: E402
from lmrec import TextEncoder  # noqa: E402
from lmrec.trainer import TorchEncoder  # noqa: E402
from lmrec.trainer.export import export_torch, optimise, quantise_int8, save_tokenizer  # noqa: E402
from onnx import numpy_helper  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MAX_LENGTH = 64
CALIBRATION = 128  # of TINY_DATA's 200 item texts; the other 72 are held out
UNREACHABLE = {"top10_overlap": 1.01}
SHIPPED = ("dynamic int8 per channel, 7-bit weights, word embeddings in fp16, SmoothQuant alpha {alpha:g}, "
           "8 outlier FFN channels per layer in fp32")


def _export(model_dir: Path, out: Path, fuse: bool = True) -> Path:
    """The pooled graph of `model_dir` (fused by ORT unless `fuse` is False) and its tokenizer.json."""
    encoder = TorchEncoder(str(model_dir), max_length=MAX_LENGTH)
    out.mkdir(parents=True, exist_ok=True)
    export_torch(encoder, out / "raw.onnx")
    save_tokenizer(encoder, out / "tokenizer.json")
    if not fuse:
        return out / "raw.onnx"
    optimise(out / "raw.onnx", out / "fused.onnx", encoder.model.config)
    return out / "fused.onnx"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return lmrec.load_dataset(TINY_DATA).item_texts


@pytest.fixture(scope="module")
def fused(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT's fused fp32 graph (Attention, BiasGelu and SkipLayerNormalization in both
    layers), with random biases and LayerNorm weights (a fresh BERT's are zeros and ones, which would
    hide a rewrite that forgets them) and one FFN-in bias shared by both layers, as the exporter
    shares identical initializers."""
    import torch
    from transformers import BertModel

    out = tmp_path_factory.mktemp("fused")
    shutil.copytree(tiny_bert_dir, out / "bert")
    model = BertModel.from_pretrained(out / "bert")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or name.endswith("LayerNorm.weight"):
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
        layers = model.encoder.layer
        layers[1].intermediate.dense.bias.copy_(layers[0].intermediate.dense.bias)
    model.save_pretrained(out / "bert")
    fused = _export(out / "bert", out)
    biases = [n.input[1] for n in onnx.load(str(fused)).graph.node if n.op_type == "BiasGelu"]
    assert len(biases) == 2 and biases[0] == biases[1]
    return fused


def _build(src: Path, dst: Path, texts: list[str], lines: list[str] | None = None, **options: Any) -> Any:
    """quantise_int8 on the first CALIBRATION texts; its QuantReport, its last log line checked
    (the log goes into `lines` when given)."""
    lines = [] if lines is None else lines
    report = quantise_int8(src, dst, texts[:CALIBRATION], src.parent / "tokenizer.json", MAX_LENGTH, lines.append,
                           threads=1, **options)
    assert lines and lines[-1].startswith("int8: " + report.variant)
    return report


def _vectors(path: Path, source: Path, texts: list[str]) -> np.ndarray:
    """The held-out texts' vectors from the graph at `path`, tokenised as for its `source` graph."""
    return TextEncoder(path, source.parent / "tokenizer.json", MAX_LENGTH, threads=1).embed(texts[CALIBRATION:])


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


def test_the_shipped_recipe_splits_smooths_and_quantises_close_to_fp32(fused: Path, texts: list[str],
                                                                      tmp_path: Path) -> None:
    report = _build(fused, tmp_path / "int8.onnx", texts)
    assert report.split_ffns == 2 and report.outlier_channels == 8 and report.calibration_texts == 128
    assert set(report.alpha_damage) == {0.5, 0.6, 0.7, 0.8}
    # the least damage, alphas within 1e-6 of each other tied (the smaller one wins, as the recipe says)
    assert round(report.alpha_damage[report.alpha], 6) == min(round(d, 6) for d in report.alpha_damage.values())
    assert max(report.fp32_error.values()) < 1e-5 and set(report.fp32_error) == {"split", "smoothing"}
    # the tiny model's calibration overlap is near the target: the fallback may keep a node or two fp32
    assert report.target_met and report.calibration["top10_overlap"] >= 0.94 and len(report.kept_fp32) < 4
    kept = f", {len(report.kept_fp32)} node{'s' if len(report.kept_fp32) > 1 else ''} kept fp32"
    assert report.variant == SHIPPED.format(alpha=report.alpha) + (kept if report.kept_fp32 else "")
    ops = _ops(tmp_path / "int8.onnx")
    assert ops.count("QAttention") + ops.count("MatMulInteger") == 8 - len(report.kept_fp32)
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    # the float MatMuls left: the side branches (d -> 8 and 8 -> d in each layer) and the nodes kept fp32
    side = [n.name for n in graph.node if n.op_type == "MatMul" and n.name not in report.kept_fp32]
    assert len(side) == 4 and all("/side/" in name for name in side)
    cosine = np.sum(_vectors(tmp_path / "int8.onnx", fused, texts) * _vectors(fused, fused, texts), axis=1)
    assert cosine.mean() >= 0.999 and cosine.min() >= 0.99


def test_the_outlier_split_alone_is_exact_in_fp32(fused: Path, texts: list[str], tmp_path: Path) -> None:
    report = _build(fused, tmp_path / "split.onnx", texts, alphas=(), half_embeddings=False, target=UNREACHABLE)
    assert report.split_ffns == 2 and report.alpha is None and set(report.fp32_error) == {"split"}
    assert len(report.kept_fp32) == 8 and not report.target_met  # the fallback ran to its end
    assert report.variant == ("dynamic int8 per channel, 7-bit weights, 8 outlier FFN channels per layer in fp32, "
                              "8 nodes kept fp32")
    ops = _ops(tmp_path / "split.onnx")
    assert ops.count("BiasGelu") == 4 and "MatMulInteger" not in ops and "QAttention" not in ops
    model = onnx.load(str(tmp_path / "split.onnx"))
    weights = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ffn_in = [n for n in model.graph.node if n.name.endswith("intermediate/dense/MatMul")]
    assert len(ffn_in) == 2
    for node in ffn_in:  # the 8 outlier channels left the main FFN
        assert int(np.sum(np.all(weights[node.input[1]] == 0, axis=0))) == 8
    np.testing.assert_allclose(_vectors(tmp_path / "split.onnx", fused, texts), _vectors(fused, fused, texts),
                               rtol=0, atol=1e-5)


def test_smoothing_alone_is_exact_in_fp32(fused: Path, texts: list[str], tmp_path: Path) -> None:
    report = _build(fused, tmp_path / "smooth.onnx", texts, outlier_channels=0, alphas=(0.7,), half_embeddings=False,
                    target=UNREACHABLE)
    assert report.split_ffns == 0 and report.alpha == 0.7 and set(report.fp32_error) == {"smoothing"}
    assert len(report.kept_fp32) == 8 and "outlier" not in report.variant
    graph = onnx.load(str(tmp_path / "smooth.onnx")).graph
    # a Mul in front of each Attention and FFN-in; the attention output's 1/s is folded into V
    muls = [n.output[0] for n in graph.node if n.op_type == "Mul" and n.name.endswith("/smooth")]
    smoothed = sorted(c.name for c in graph.node for m in muls if m in c.input)
    ffn_in = [n.name for n in graph.node if n.name.endswith("intermediate/dense/MatMul")]
    assert len(muls) == 4 and smoothed == sorted(["Attention_0", "Attention_1", *ffn_in]) and len(ffn_in) == 2
    np.testing.assert_allclose(_vectors(tmp_path / "smooth.onnx", fused, texts), _vectors(fused, fused, texts),
                               rtol=0, atol=1e-5)


def test_the_fallback_keeps_nodes_fp32_until_the_target_is_met(fused: Path, texts: list[str], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    first = _build(fused, tmp_path / "int8.onnx", texts, target=None)
    assert first.target_met is None and first.kept_fp32 == []
    target = {"top10_overlap": first.calibration["top10_overlap"] + 1e-3}
    embedded: list[int] = []  # texts per TextEncoder.embed call
    embed = TextEncoder.embed

    def counting(self: TextEncoder, batch: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        embedded.append(len(batch))
        return embed(self, batch, *args, **kwargs)

    monkeypatch.setattr(TextEncoder, "embed", counting)
    tokenizer = Tokenizer.from_file(str(fused.parent / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_LENGTH)
    tokens = sum(len(e.ids) for e in tokenizer.encode_batch(texts[:100]))
    lines: list[str] = []
    report = _build(fused, tmp_path / "int8.onnx", texts, lines, target=target, sensitivity_tokens=tokens)
    # each node's damage alone is measured once, on the first calibration texts within the token budget
    assert report.sensitivity_texts == 100 and embedded.count(100) == len(report.sensitivity)
    assert report.target_met and report.calibration["top10_overlap"] >= target["top10_overlap"]
    assert 1 <= len(report.kept_fp32) < 8 and len(set(report.kept_fp32)) == len(report.kept_fp32)
    # one step per node kept, and the loop stops at the first step that meets the target
    steps = [float(line.rsplit("top10_overlap ", 1)[1]) for line in lines if " kept fp32 (last " in line]
    assert len(steps) == len(report.kept_fp32) and steps[-1] >= round(target["top10_overlap"], 4) - 5e-5
    assert all(overlap < target["top10_overlap"] + 5e-5 for overlap in steps[:-1])
    assert len(report.sensitivity) == 8 and first.sensitivity == {} and first.sensitivity_texts == 0
    assert report.kept_fp32 == sorted(report.sensitivity, key=lambda n: -report.sensitivity[n])[:len(report.kept_fp32)]
    assert report.variant.endswith(f"{len(report.kept_fp32)} node{'s' if len(report.kept_fp32) > 1 else ''} kept fp32")
    ops = _ops(tmp_path / "int8.onnx")
    assert ops.count("QAttention") + ops.count("MatMulInteger") == 8 - len(report.kept_fp32)


def test_an_ffn_without_biasgelu_is_smoothed_but_not_split(tiny_bert_dir: Path, texts: list[str],
                                                            tmp_path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    relu = tmp_path / "relu"
    shutil.copytree(tiny_bert_dir, relu)
    config = BertConfig.from_pretrained(relu)
    config.hidden_act = "relu"
    torch.manual_seed(0)
    BertModel(config).save_pretrained(relu)
    fused = _export(relu, tmp_path / "export")
    assert "BiasGelu" not in _ops(fused) and _ops(fused).count("Attention") == 2
    report = _build(fused, tmp_path / "export" / "int8.onnx", texts)
    assert report.split_ffns == 0 and report.alpha is not None and "outlier" not in report.variant
    assert set(report.fp32_error) == {"smoothing"} and report.fp32_error["smoothing"] < 1e-5
    cosine = np.sum(_vectors(fused.parent / "int8.onnx", fused, texts) * _vectors(fused, fused, texts), axis=1)
    assert cosine.mean() >= 0.999


def test_an_unfused_graph_gets_plain_dynamic_int8(tiny_bert_dir: Path, texts: list[str], tmp_path: Path) -> None:
    raw = _export(tiny_bert_dir, tmp_path, fuse=False)
    assert "Attention" not in _ops(raw)
    report = _build(raw, tmp_path / "int8.onnx", texts)
    assert report.split_ffns == 0 and report.alpha is None and report.fp32_error == {}
    assert report.variant.startswith("dynamic int8 per channel, 7-bit weights") and report.target_met
    assert "MatMulInteger" in _ops(tmp_path / "int8.onnx")
    cosine = np.sum(_vectors(tmp_path / "int8.onnx", raw, texts) * _vectors(raw, raw, texts), axis=1)
    assert cosine.mean() >= 0.999


def test_the_word_embeddings_are_stored_in_fp16_and_folded_back_at_load(fused: Path, texts: list[str],
                                                                        tmp_path: Path) -> None:
    whole = _build(fused, tmp_path / "whole.onnx", texts, alphas=(0.7,), half_embeddings=False, target=None)
    half = _build(fused, tmp_path / "half.onnx", texts, alphas=(0.7,), target=None)
    assert "word embeddings" not in whole.variant and "word embeddings in fp16" in half.variant
    tables = {}
    for name in ("whole", "half"):
        model = onnx.load(str(tmp_path / f"{name}.onnx"))
        embed = next(n for n in model.graph.node if n.op_type == "EmbedLayerNormalization")
        stored = {i.name: i for i in model.graph.initializer}
        producer = next((n for n in model.graph.node if embed.input[2] in n.output), None)
        tables[name] = stored[producer.input[0]] if producer is not None else stored[embed.input[2]]
    assert tables["whole"].data_type == onnx.TensorProto.FLOAT
    assert tables["half"].data_type == onnx.TensorProto.FLOAT16
    np.testing.assert_array_equal(numpy_helper.to_array(tables["half"]),
                                  numpy_helper.to_array(tables["whole"]).astype(np.float16))
    assert (tmp_path / "half.onnx").stat().st_size < (tmp_path / "whole.onnx").stat().st_size
    cosine = np.sum(_vectors(tmp_path / "half.onnx", fused, texts) * _vectors(tmp_path / "whole.onnx", fused, texts),
                    axis=1)
    assert cosine.min() >= 0.999


def test_bad_arguments_are_refused(fused: Path, texts: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need at least 2"):
        quantise_int8(fused, tmp_path / "x.onnx", texts[:1], fused.parent / "tokenizer.json", MAX_LENGTH)
    with pytest.raises(ValueError, match="figures are"):
        quantise_int8(fused, tmp_path / "x.onnx", texts[:8], fused.parent / "tokenizer.json", MAX_LENGTH,
                      target={"overlap": 0.9})
    for tokens in (0, 2.5, True):
        with pytest.raises(ValueError, match="sensitivity_tokens .*positive integer"):
            quantise_int8(fused, tmp_path / "x.onnx", texts[:8], fused.parent / "tokenizer.json", MAX_LENGTH,
                          sensitivity_tokens=tokens)  # type: ignore[arg-type]
    assert not (tmp_path / "x.onnx").exists()  # refused before any work
