"""TLS with a certificate generated here, bearer tokens with read and write scopes, token files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from _grpc_fixtures import start_server, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)
from lmrec.client import RecommenderClient, RemoteError
from lmrec.server import TokenAuth, TokenError

READ = "r" * 8 + "ead-token-0123"
WRITE = "w" * 8 + "rite-token-0123"


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    """A throwaway certificate for localhost / 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# scope token\nread  {READ}\nwrite {WRITE}  # the deploy job\n\n")
    return path


@pytest.fixture
def secure(start_server, tiny_bundle: Path, tmp_path: Path, token_file: Path):
    cert, key = _self_signed(tmp_path, "server")
    server = start_server(tiny_bundle, auth=TokenAuth.from_file(token_file), tls_cert=cert, tls_key=key)
    return server, cert


def _client(server, cert: Path, token: str | None = None, **kw) -> RecommenderClient:
    return RecommenderClient(f"127.0.0.1:{server.port}", root_cert=cert, token=token, timeout=5, max_attempts=1, **kw)


def test_tls_with_scoped_tokens(secure) -> None:
    server, cert = secure
    with _client(server, cert) as anonymous:
        assert anonymous.health() == "SERVING"  # probes need no token
        for call in (lambda: anonymous.search("pen"), lambda: list(anonymous.embed_texts_stream(["pen"])),
                     lambda: anonymous.add_items_stream([{"ids": ["a"], "texts": ["pen"]}])):
            with pytest.raises(RemoteError) as e:
                call()
            assert e.value.code == grpc.StatusCode.UNAUTHENTICATED and "Bearer" in e.value.details
    with _client(server, cert, token="x" * 20) as wrong, pytest.raises(RemoteError) as e:
        wrong.model_info()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with _client(server, cert, token=READ) as reader:
        assert len(reader.search("pen", k=3)) == 3
        assert reader.embed_texts(["pen"]).shape == (1, 16)
        for write in (lambda: reader.add_items(["r1"], texts=["pen"]), lambda: reader.delete_items(["office-0"]),
                      lambda: reader.add_items_stream([{"ids": ["r2"], "texts": ["pen"]}])):
            with pytest.raises(RemoteError) as e:
                write()
            assert e.value.code == grpc.StatusCode.PERMISSION_DENIED and "read-only" in e.value.details
    with _client(server, cert, token=WRITE) as writer:
        assert writer.add_items(["w1"], texts=["pen ink"]) == 121
        assert writer.delete_items(["w1"]).deleted == 1
        assert writer.recommend(["office-0"], k=2)


def test_plaintext_or_untrusted_clients_cannot_connect(secure, tmp_path: Path) -> None:
    server, _ = secure
    with RecommenderClient(f"127.0.0.1:{server.port}", token=WRITE, timeout=3, max_attempts=1) as plain:
        with pytest.raises(RemoteError) as e:
            plain.model_info()
        assert e.value.code == grpc.StatusCode.UNAVAILABLE
    other, _ = _self_signed(tmp_path, "other")
    with _client(server, other, token=WRITE) as untrusting, pytest.raises(RemoteError) as e:
        untrusting.model_info()
    assert e.value.code == grpc.StatusCode.UNAVAILABLE


def test_token_file_is_reread_on_reload(start_server, tiny_bundle: Path, token_file: Path) -> None:
    server = start_server(tiny_bundle, auth=TokenAuth.from_file(token_file))
    address = f"127.0.0.1:{server.port}"
    new = "n" * 20
    token_file.write_text(f"write {new}\n")
    with RecommenderClient(address, token=WRITE, max_attempts=1) as old_client:
        assert old_client.model_info()  # still valid until the reload
        assert server.reload() is False  # same bundle: only the tokens change
        with pytest.raises(RemoteError) as e:
            old_client.model_info()
        assert e.value.code == grpc.StatusCode.UNAUTHENTICATED
    with RecommenderClient(address, token=new) as new_client:
        assert new_client.add_items(["n1"], texts=["pen"]) == 121
    token_file.write_text("write short\n")  # a broken file keeps the tokens in force
    server.reload()
    with RecommenderClient(address, token=new) as new_client:
        assert new_client.model_info()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("admin 0123456789abcdef0123\n", ":1: expected 'read TOKEN' or 'write TOKEN'"),
        ("# only a comment\n", "no tokens"),
        ("read short\n", ":1: a token needs at least 16 characters"),
        (f"read {READ}\nwrite {READ}\n", ":2: token listed twice"),
        (f"read {READ} extra\n", ":1: expected"),
    ],
)
def test_bad_token_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(TokenError, match=message.replace("(", r"\(")):
        TokenAuth.from_file(path)


def test_token_scopes() -> None:
    auth = TokenAuth({READ: "read", WRITE: "write"})
    assert (auth.scope(READ), auth.scope(WRITE), auth.scope("nope"), auth.scope(None)) == ("read", "write", None, None)
    with pytest.raises(TokenError, match="16 characters"):
        TokenAuth.single("short")
    with pytest.raises(TokenError, match="no whitespace"):
        TokenAuth.single("a token with spaces in it")
