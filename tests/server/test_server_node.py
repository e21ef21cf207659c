"""A Node.js client (@grpc/grpc-js + @grpc/proto-loader, loading only protos/) against `lmrec serve`.

Needs `node` and `npm ci --prefix tests/node` (the Makefile's test target runs it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from _grpc_fixtures import serve_process, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from lmrec.client import RecommenderClient

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


@pytest.fixture
def node() -> str:
    exe = shutil.which("node")
    if exe is None:
        pytest.skip("node is not installed (the Node.js client test needs Node >= 18)")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("tests/node/node_modules is missing: run npm ci --prefix tests/node")
    return exe


def test_node_client_calls_health_embed_upsert_recommend(
    node: str, serve_process, tiny_bundle: Path, tmp_path: Path
) -> None:
    proc = serve_process("--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / "state"))
    address = f"127.0.0.1:{proc.wait_port()}"
    with RecommenderClient(address) as client:
        proc.wait_serving(client)
        run = subprocess.run([node, str(NODE_DIR / "client.js"), address], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, f"node client failed:\n{run.stderr}\n{run.stdout}\nserver:\n{proc.output()}"
        summary = json.loads(run.stdout)
        assert summary["health"] == "SERVING"
        assert summary["embed_dims"] == [16, 16] and summary["model_dim"] == 16
        assert summary["upserted"] == 2 and summary["catalogue_size"] == 122
        assert summary["embed_user_dim"] == 16
        assert len(summary["recommended"]) == 3
        assert summary["bad_k"]["code"] == 3 and "k" in summary["bad_k"]["details"]
        # What Node wrote is what Python reads back.
        assert client.get_item("node-1").metadata == {"source": "node"}
        assert client.get_item("node-2").vector.shape == (16,)
