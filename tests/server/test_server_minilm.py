"""`lmrec serve` over the real MiniLM zero-shot bundle (slow: the session exports it once)."""

from __future__ import annotations

from pathlib import Path

import lmrec
import numpy as np
import pytest
from _grpc_fixtures import serve_process  # noqa: F401  (fixtures; skips without the server extra)
from lmrec.client import RecommenderClient


@pytest.mark.slow
def test_minilm_bundle_serves_within_60s_and_matches_the_sdk(
    serve_process, minilm_bundle: Path, tmp_path: Path
) -> None:
    proc = serve_process("--bundle", str(minilm_bundle), "--state-dir", str(tmp_path / "state"))
    with RecommenderClient(f"127.0.0.1:{proc.wait_port()}", timeout=30) as client:
        assert proc.wait_serving(client, timeout=60) < 60
        info = client.model_info()
        assert info["dim"] == 384 and info["precision"] == "int8" and info["max_length"] == 128
        assert "MiniLM" in info["model"]
        texts = ["a black ballpoint pen", "ergonomic office chair with lumbar support"]
        sdk = lmrec.Recommender.load(minilm_bundle)
        np.testing.assert_allclose(client.embed_texts(texts), sdk.embed_texts(texts), atol=1e-5)
        item = sdk.item_ids()[7]
        assert client.search(sdk.get_item(item).text, k=1)[0].item_id == item
        assert [i for i, _ in client.recommend([item], k=5)] == [i for i, _ in sdk.recommend([item], k=5)]
