"""lmrec.client: lazy import, retries of idempotent calls, error families, client-side checks."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest
from _grpc_fixtures import server, start_server, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from lmrec.client import RecommenderClient, RemoteError, RemoteInvalidArgument, RemoteNotFound, retry_service_config
from lmrec.server import DataPlane, NotReady
from lmrec.server.v1 import recommender_pb2 as pb


def test_lmrec_and_lmrec_client_import_without_loading_grpc() -> None:
    code = "import sys, lmrec, lmrec.client; print(json.dumps(['grpc' in sys.modules, 'lmrec.server' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False]


def test_missing_server_extra_is_a_clear_error(monkeypatch) -> None:
    import importlib.util

    import lmrec.client

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "grpc" else real(name, *a))
    with pytest.raises(lmrec.MissingDependencyError, match=r"lmrec\[server\]"):
        lmrec.client.RecommenderClient  # noqa: B018


def test_unavailable_is_retried_for_idempotent_calls(monkeypatch, server) -> None:
    failures = {"left": 2}
    real = DataPlane.recommender.fget

    def flaky(self):
        if failures["left"]:
            failures["left"] -= 1
            raise NotReady("warming up")
        return real(self)

    monkeypatch.setattr(DataPlane, "recommender", property(flaky))
    with RecommenderClient(f"127.0.0.1:{server.port}", max_attempts=4) as client:
        assert len(client.recommend(["office-0"], k=3)) == 3  # third attempt
        failures["left"] = 2
        assert client.add_items(["retried"], texts=["pen"]) == 121  # writes are idempotent upserts
    failures["left"] = 1
    with RecommenderClient(f"127.0.0.1:{server.port}", max_attempts=1) as once, pytest.raises(RemoteError) as e:
        once.recommend(["office-0"])
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_errors_are_not_retried_and_map_to_sdk_families(start_server, tiny_bundle: Path) -> None:
    server = start_server(tiny_bundle, metrics_port=0)
    with RecommenderClient(f"127.0.0.1:{server.port}", max_attempts=4) as client:
        with pytest.raises(ValueError, match="k: 5000") as bad:
            client.search("pen", k=5000)
        assert isinstance(bad.value, RemoteInvalidArgument)
        with pytest.raises(KeyError, match="nope") as missing:
            client.similar_items("nope")
        assert isinstance(missing.value, RemoteNotFound) and "nope" in str(missing.value)
        with pytest.raises(ValueError, match="callables"):
            client.recommend(["office-0"], filter=lambda item, meta: True)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'lmrec_requests_total{code="INVALID_ARGUMENT",method="/lmrec.v1.Recommender/Search"} 1.0' in metrics
    assert 'lmrec_requests_total{code="NOT_FOUND",method="/lmrec.v1.Recommender/SimilarItems"} 1.0' in metrics


def test_retry_policy_covers_every_method_of_v1() -> None:
    config = json.loads(retry_service_config(4))["methodConfig"][0]
    assert {n["method"] for n in config["name"]} == {
        m.name for m in pb.DESCRIPTOR.services_by_name["Recommender"].methods
    }
    assert config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


@pytest.mark.parametrize(("kwargs", "message"), [({"timeout": 0}, "timeout"), ({"max_attempts": 9}, "max_attempts")])
def test_bad_client_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RecommenderClient("127.0.0.1:1", **kwargs)


def test_serve_flags_are_checked_before_anything_starts(tiny_bundle: Path, tmp_path: Path, capsys) -> None:
    from lmrec.cli import main

    base = ["serve", "--bundle", str(tiny_bundle), "--state-dir", str(tmp_path / "s")]
    for extra, message in ((["--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
                           (["--max-batch", "0"], "--max-batch: 0"), (["--token", "short"], "16 characters"),
                           (["--max-wait-ms", "5000"], "--max-wait-ms"),
                           (["--max-waiting-calls", "-5"], "--max-waiting-calls: -5, must be >= 0"),
                           (["--compute-slots", "0"], "--compute-slots: 0, must be >= 1"),
                           (["--workers", "0"], "--workers: 0, must be >= 1"),
                           (["--max-concurrent-rpcs", "0"], "--max-concurrent-rpcs: 0, must be >= 1")):
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert main(["serve", "--bundle", str(tmp_path / "missing"), "--state-dir", str(tmp_path / "s")]) == 2
    assert "not a directory" in capsys.readouterr().err

