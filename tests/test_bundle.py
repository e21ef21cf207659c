"""Bundle format: round trip, verification of every kind of damage, atomic and interrupt-safe writing."""

from __future__ import annotations

import json
from pathlib import Path

import lmrec
import numpy as np
import pytest
from lmrec import FORMAT_VERSION, Bundle, BundleError, BundleWriter, Manifest, verify_bundle
from lmrec.cli import main
from tokenizers import Tokenizer, models

N, DIM = 5, 4


def _write(out: Path, dim: int = DIM, **kwargs) -> Path:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "pen": 1}, unk_token="[UNK]"))
    with BundleWriter(out, **kwargs) as w:
        w.add_bytes("tokenizer.json", tokenizer.to_str().encode())
        w.add_bytes("item_encoder.int8.onnx", b"not a real graph: the format does not look inside")
        w.add_array("item_vectors.npy", vectors)
        w.add_array("popularity.npy", np.arange(N))
        w.add_items(
            [f"i{k}" for k in range(N)], [f"item {k}" for k in range(N)], [{"brand": "Acme", "k": k} for k in range(N)]
        )
        w.path("index/params.json").write_text("{}")
        return w.finish(Manifest(dim=dim, max_length=16, data=lmrec.DataInfo(items=N)))


@pytest.fixture()
def bundle_dir(tmp_path: Path) -> Path:
    return _write(tmp_path / "bundle")


def test_round_trip(bundle_dir: Path) -> None:
    b = Bundle.open(bundle_dir)
    assert b.manifest.format_version == 2 < FORMAT_VERSION  # 3 only where ranking needs the text term
    assert b.item_ids == [f"i{k}" for k in range(N)] and b.item_texts[2] == "item 2"
    assert b.item_meta[3] == {"brand": "Acme", "k": 3}
    assert isinstance(b.item_vectors, np.memmap) and b.item_vectors.shape == (N, DIM) and b.dim == DIM
    assert b.popularity is not None and b.popularity.tolist() == list(range(N))
    assert b.encoder_path("int8") == bundle_dir / "item_encoder.int8.onnx"
    assert b.has("index") and b.has("index/params.json") and not b.has("item_encoder.onnx")
    assert set(b.manifest.files) == {"tokenizer.json", "item_encoder.int8.onnx", "item_vectors.npy",
                                        "popularity.npy", "items.jsonl", "index/params.json"}
    assert verify_bundle(bundle_dir) == []


def test_encoder_path_errors(bundle_dir: Path) -> None:
    b = Bundle.open(bundle_dir)
    with pytest.raises(BundleError, match="fp16.*item_encoder.fp16.onnx"):
        b.encoder_path("fp16")
    with pytest.raises(ValueError, match="precision 'bf16'"):
        b.encoder_path("bf16")
    with pytest.raises(BundleError, match="no user_encoder.onnx"):
        b.file("user_encoder.onnx")


def test_flipped_byte_is_detected(bundle_dir: Path) -> None:
    path = bundle_dir / "item_vectors.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    assert verify_bundle(bundle_dir) == ["item_vectors.npy: sha256 mismatch (file changed or corrupted)"]
    with pytest.raises(BundleError, match="item_vectors.npy: sha256 mismatch"):
        Bundle.open(bundle_dir)
    Bundle.open(bundle_dir, verify=False)  # same size: only the checksum can tell


def test_missing_and_unlisted_files_are_detected(bundle_dir: Path) -> None:
    (bundle_dir / "items.jsonl").unlink()
    (bundle_dir / "index" / "extra.bin").write_bytes(b"x")
    problems = verify_bundle(bundle_dir)
    assert "items.jsonl: missing" in problems
    assert any(p.startswith("index/extra.bin: not listed") for p in problems)
    with pytest.raises(BundleError, match="items.jsonl: missing"):
        Bundle.open(bundle_dir, verify=False)


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").unlink()
    (problem,) = verify_bundle(bundle_dir)
    assert "manifest.json is missing" in problem
    with pytest.raises(BundleError, match="manifest.json is missing"):
        Bundle.open(bundle_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version=99), "format_version 99 is not supported"),
    (lambda m: m.pop("format_version"), "format_version None is not supported"),
    (lambda m: m.update(files=[]), "no valid 'files' table"),
    (lambda m: m["files"].update({"../outside": {"sha256": "0", "bytes": 1}}), "must be a plain relative path"),
])
def test_bad_manifest(bundle_dir: Path, edit, message: str) -> None:
    mpath = bundle_dir / "manifest.json"
    manifest = json.loads(mpath.read_text())
    edit(manifest)
    mpath.write_text(json.dumps(manifest))
    assert any(message in p for p in verify_bundle(bundle_dir))
    with pytest.raises(BundleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Bundle.open(bundle_dir)


def test_unparsable_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json cannot be parsed"):
        Bundle.open(bundle_dir)


def test_vectors_must_match_manifest_dim(tmp_path: Path) -> None:
    out = _write(tmp_path / "b", dim=DIM + 1)
    assert verify_bundle(out) == []  # intact files, inconsistent content
    with pytest.raises(BundleError, match=r"item_vectors.npy is float32 \(5, 4\), expected float32 \(5, 5\)"):
        Bundle.open(out)


def test_interrupted_writer_leaves_nothing_valid(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError, match="disk full"):
        with BundleWriter(out) as w:
            w.add_array("item_vectors.npy", np.zeros((2, 2), np.float32))
            raise RuntimeError("disk full")
    assert not out.exists() and list(tmp_path.iterdir()) == []

    # A crash (no cleanup at all) leaves only a hidden temporary directory without a manifest.
    w = BundleWriter(out)
    w.add_array("item_vectors.npy", np.zeros((2, 2), np.float32))
    assert not out.exists()
    (leftover,) = tmp_path.iterdir()
    assert leftover.name.startswith(".bundle.tmp-")
    assert "manifest.json is missing" in verify_bundle(leftover)[0]
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_existing_and_overwrites_atomically(tmp_path: Path) -> None:
    out = _write(tmp_path / "bundle")
    with pytest.raises(BundleError, match="already exists"):
        BundleWriter(out)
    (out / "stale.bin").write_bytes(b"from the old bundle")
    assert _write(out, overwrite=True) == out
    assert verify_bundle(out) == [] and not (out / "stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # old copy and temp dirs removed

    other = tmp_path / "not_a_bundle"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a bundle; refusing to replace it"):
        BundleWriter(other, overwrite=True)


@pytest.mark.parametrize("name", ["../x", "/abs", "manifest.json", "", "a/../../b"])
def test_writer_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with BundleWriter(tmp_path / "b") as w:
        with pytest.raises(ValueError, match="bundle file name"):
            w.add_bytes(name, b"x")


def test_add_items_checks_lengths_and_ids(tmp_path: Path) -> None:
    with BundleWriter(tmp_path / "b") as w:
        with pytest.raises(ValueError, match=r"ids \(2\), texts \(1\)"):
            w.add_items(["a", "b"], ["x"], [{}, {}])
        with pytest.raises(ValueError, match="unique"):
            w.add_items(["a", "a"], ["x", "y"], [{}, {}])


def test_cli_verify(bundle_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bundle", "verify", str(bundle_dir)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {bundle_dir}: 6 files verified")
    (bundle_dir / "popularity.npy").write_bytes(b"tampered")
    assert main(["bundle", "verify", str(bundle_dir)]) == 1
    assert "FAIL popularity.npy: size 8 bytes" in capsys.readouterr().err


def test_verify_selected_files(bundle_dir: Path) -> None:
    encoder = bundle_dir / "item_encoder.int8.onnx"
    encoder.write_bytes(bytes(b ^ 1 for b in encoder.read_bytes()))  # same size, other content
    Bundle.open(bundle_dir, verify={"index"})  # the loader will not run this encoder
    with pytest.raises(BundleError, match="item_encoder.int8.onnx: sha256 mismatch"):
        Bundle.open(bundle_dir, verify={"item_encoder.int8.onnx", "index"})
    index_file = bundle_dir / "index" / "params.json"
    index_file.write_text("[]")
    with pytest.raises(BundleError, match="index/params.json: sha256 mismatch"):
        Bundle.open(bundle_dir, verify=["index"])
    index_file.write_text("{}")
    vectors = bundle_dir / "item_vectors.npy"
    data = bytearray(vectors.read_bytes())
    data[-1] ^= 1
    vectors.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="item_vectors.npy: sha256 mismatch"):
        Bundle.open(bundle_dir, verify=())  # files the view itself reads are always checked
