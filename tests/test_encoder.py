"""The SDK's ONNX Runtime text encoder, on the tiny BERT export (and the MiniLM bundle when slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from lmrec import Bundle, LmrecError, TextEncoder

TEXTS = ["blue stapler for the office desk", "a pen", "garden hose, fifty feet, green, with a brass nozzle and a reel",
         "ink", "stapler", "kitchen knife set with a wooden block"]


@pytest.fixture(scope="module")
def encoder(tiny_export: tuple[Path, dict]) -> TextEncoder:
    out, _ = tiny_export
    return TextEncoder(out / "item_encoder.onnx", out / "tokenizer.json", max_length=64, threads=1)


def test_embed_shape_norm_and_order(encoder: TextEncoder) -> None:
    vectors = encoder.embed(TEXTS, batch_size=4)
    assert encoder.dim == 32 and vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # Sorting by length and padding per batch must not change any vector or its position.
    one_by_one = np.vstack([encoder.embed([t]) for t in TEXTS])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-5)
    assert np.all(np.sum(vectors * vectors[::-1], axis=1)[:3] < 0.99999)  # distinct texts, distinct vectors


def test_empty_input_and_bad_texts(encoder: TextEncoder) -> None:
    assert encoder.embed([]).shape == (0, encoder.dim)
    with pytest.raises(ValueError, match=r"texts\[1\]: empty text"):
        encoder.embed(["pen", "  "])
    with pytest.raises(ValueError, match=r"texts\[2\]: expected a string, got int"):
        encoder.embed(["pen", "ink", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="single string"):
        encoder.embed("pen")
    with pytest.raises(ValueError, match="batch_size 0"):
        encoder.embed(["pen"], batch_size=0)


def test_truncation_is_counted(encoder: TextEncoder) -> None:
    before = encoder.truncated
    long_text = " ".join(["stapler ink pen desk"] * 40)
    vectors = encoder.embed([long_text, "pen", long_text + " more"])
    assert encoder.truncated == before + 2
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-5)  # the tail beyond max_length is ignored
    assert encoder.count_truncated([long_text, "pen", long_text + " more"]) == 2  # tokenised only
    assert encoder.truncated == before + 2


def test_int8_and_fp16_close_to_fp32(tiny_export: tuple[Path, dict], encoder: TextEncoder) -> None:
    out, _ = tiny_export
    reference = encoder.embed(TEXTS)
    for name, floor in (("item_encoder.int8.onnx", 0.99), ("item_encoder.fp16.onnx", 0.999)):
        other = TextEncoder(out / name, out / "tokenizer.json", max_length=64).embed(TEXTS)
        assert np.sum(other * reference, axis=1).min() >= floor, name


def test_thread_safe(encoder: TextEncoder) -> None:
    reference = encoder.embed(TEXTS)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: encoder.embed(TEXTS[i % 3:] + TEXTS[:i % 3], batch_size=2), range(32)))
    for i, r in enumerate(results):
        np.testing.assert_allclose(r, np.roll(reference, -(i % 3), axis=0), atol=1e-5)


def test_bad_arguments(tiny_export: tuple[Path, dict]) -> None:
    out, _ = tiny_export
    onnx, tok = out / "item_encoder.onnx", out / "tokenizer.json"
    with pytest.raises(ValueError, match="device 'tpu'"):
        TextEncoder(onnx, tok, 64, device="tpu")
    with pytest.raises(ValueError, match="threads 0"):
        TextEncoder(onnx, tok, 64, threads=0)
    with pytest.raises(ValueError, match="max_length 1"):
        TextEncoder(onnx, tok, 1)
    with pytest.raises(LmrecError, match="onnx_path .*missing.onnx: no such file"):
        TextEncoder(out / "missing.onnx", tok, 64)


def test_cuda_without_provider_raises_clearly(tiny_export: tuple[Path, dict]) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this host has CUDA: the error path cannot be reached")
    out, _ = tiny_export
    with pytest.raises(LmrecError, match="device 'cuda': this ONNX Runtime has no CUDAExecutionProvider"):
        TextEncoder(out / "item_encoder.fp16.onnx", out / "tokenizer.json", 64, device="cuda")


def test_sdk_runtime_imports_no_torch(tiny_export: tuple[Path, dict]) -> None:
    out, _ = tiny_export
    script = (
        "import sys, json\n"
        "import lmrec\n"
        f"e = lmrec.TextEncoder({str(out / 'item_encoder.int8.onnx')!r}, {str(out / 'tokenizer.json')!r}, 64)\n"
        "e.embed(['blue pen'])\n"
        "print(json.dumps([m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_minilm_int8_close_to_fp32(minilm_bundle: Path) -> None:
    b = Bundle.open(minilm_bundle)
    texts = b.item_texts[:200]
    int8 = TextEncoder(b.encoder_path("int8"), b.file("tokenizer.json"), b.max_length).embed(texts)
    fp32 = TextEncoder(b.encoder_path("fp32"), b.file("tokenizer.json"), b.max_length).embed(texts)
    cosine = np.sum(int8 * fp32, axis=1)
    assert cosine.mean() >= 0.99 and cosine.min() >= 0.95
    np.testing.assert_allclose(fp32, b.item_vectors[:200], atol=1e-5)  # the stored vectors are the fp32 graph's
