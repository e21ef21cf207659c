"""bench/gpu: the pieces that carry the GPU check to a machine with no network, on a CPU.

Packing cuts a payload into pieces no larger than a device call carries, and what comes out of
the pieces is byte for byte what went in; run.sh says in one line that there is no GPU (exit 0),
stashes pieces across calls, names the missing ones, refuses a damaged one. The slow test runs
the whole thing on a CPU: prepare.sh with a tiny BERT and a stand-in for the onnxruntime-gpu
wheel, then run.sh with the checks' dry run.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GPU = ROOT / "bench" / "gpu"
LIMIT = 64 * 2**20  # one device call carries at most 64 MiB


def _pieces():
    spec = importlib.util.spec_from_file_location("lmrec_gpu_pieces", GPU / "pieces.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stage(path: Path) -> dict[str, str]:
    """A staging folder like prepare.sh's: incompressible and compressible files in a few groups."""
    files = {
        "ort/onnxruntime/capi/lib.so": os.urandom(1_500_000),
        "ort/onnxruntime/__init__.py": b"__version__ = '0'\n",
        "model16/model.safetensors": os.urandom(700_000) * 2,  # repeats inside the xz window
        "bundle/items.jsonl": b'{"id": "a", "text": "blue pen"}\n' * 20_000,
        "data/items.jsonl": b'{"id": "a", "text": "blue pen"}\n',
        "meta.json": b"{}",
    }
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def _bash(args: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", *args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(staging folder, OUTDIR, sha256 of each staged file) after prepare.sh --pack-only in 1 MB pieces."""
    base = tmp_path_factory.mktemp("gpu-pack")
    stage, out = base / "stage", base / "out"
    stage.mkdir()
    want = _stage(stage)
    p = _bash([str(GPU / "prepare.sh"), "--pack-only", str(stage), str(out)],
              {"PYTHON": sys.executable, "LMREC_GPU_PIECE_BYTES": "1000000", "LMREC_GPU_XZ_PRESET": "1"})
    assert p.returncode == 0, p.stdout + p.stderr
    return stage, out, want


def test_pieces_fit_one_call_and_reassemble_identically(packed):
    stage, out, want = packed
    index = json.loads((out / "INDEX.json").read_text())
    pieces = sorted(out.glob("part*"), key=lambda p: int(p.name[4:]))
    assert [p.name for p in pieces] == [p["name"] for p in index["pieces"]]
    assert len(pieces) >= 2
    for p, entry in zip(pieces, index["pieces"], strict=True):
        assert p.stat().st_size == entry["bytes"] <= 1_000_000 <= LIMIT
        assert _sha(p) == entry["sha256"]
        assert entry["holds"].startswith(f"bytes {entry['offset']}..")
    joined = b"".join(p.read_bytes() for p in pieces)
    assert len(joined) == index["payload"]["bytes"]
    assert hashlib.sha256(joined).hexdigest() == index["payload"]["sha256"]
    with tarfile.open(fileobj=io.BytesIO(joined), mode="r:xz") as tar:  # what the index's recipe does
        got = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar if m.isfile()}
    assert got == want
    assert {c["path"]: c["sha256"] for c in index["contents"]} == want
    assert index["contents"][0]["path"].startswith("data/")  # the small groups first, onnxruntime last
    assert index["contents"][-1]["path"].startswith("ort/")
    assert "what" in index["contents"][0] and "reassemble" in index


def test_pack_refuses_pieces_over_64_mib(tmp_path):
    with pytest.raises(ValueError, match="64 MiB"):
        _pieces().pack(tmp_path, tmp_path / "out", piece_bytes=LIMIT + 1)


def test_run_sh_without_gpu_prints_one_line_and_exits_0(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # present but failing: no usable GPU
    (fake / "nvidia-smi").chmod(0o755)
    cases = [{"PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"}]
    if shutil.which("nvidia-smi") is None:
        cases.append({})  # and as this machine is
    for env in cases:
        p = _bash([str(GPU / "run.sh"), str(tmp_path / "missing-outdir")],
                  {**env, "LMREC_GPU_ROOT": str(tmp_path / "r")})
        assert p.returncode == 0, p.stderr
        assert p.stdout.count("\n") == 1 and p.stdout.startswith("lmrec-gpu: no GPU here"), p.stdout
        assert not (tmp_path / "r").exists()  # nothing stashed on a machine without a GPU


def test_run_sh_stashes_pieces_across_calls_and_names_the_missing_ones(packed, tmp_path):
    _stage_dir, out, want = packed
    index = json.loads((out / "INDEX.json").read_text())
    names = [p["name"] for p in index["pieces"]]
    env = {"PYTHON": sys.executable, "LMREC_GPU_ASSUME_GPU": "1", "LMREC_GPU_ROOT": str(tmp_path / "root"),
           "LMREC_GPU_UNTIL": "unpack"}
    first = tmp_path / "call0"  # the first call carries INDEX.json and part0
    first.mkdir()
    shutil.copy(out / "INDEX.json", first)
    shutil.copy(out / names[0], first)
    p = _bash([str(GPU / "run.sh"), str(first)], env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("\n") == 1 and f"missing: {', '.join(names[1:])}" in p.stdout, p.stdout
    rest = tmp_path / "call1"  # a later call may carry the rest without the index (it was stashed)
    rest.mkdir()
    for name in names[1:]:
        shutil.copy(out / name, rest)
    p = _bash([str(GPU / "run.sh"), str(rest)], env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "all" in p.stdout and "unpacked" in p.stdout
    payload = tmp_path / "root" / "payload"
    assert {n: _sha(payload / n) for n in want} == want
    p = _bash([str(GPU / "run.sh"), str(tmp_path / "nothing-carried")], env)  # a rerun needs no piece
    assert p.returncode == 0 and "unpacked" in p.stdout, p.stdout + p.stderr


def test_run_sh_refuses_a_damaged_piece(packed, tmp_path):
    _stage_dir, out, _want = packed
    call = tmp_path / "call"
    shutil.copytree(out, call)
    damaged = bytearray((call / "part1").read_bytes())
    damaged[100] ^= 0xFF
    (call / "part1").write_bytes(bytes(damaged))
    p = _bash([str(GPU / "run.sh"), str(call)], {"PYTHON": sys.executable, "LMREC_GPU_ASSUME_GPU": "1",
                                                  "LMREC_GPU_ROOT": str(tmp_path / "root")})
    assert p.returncode != 0
    assert "part1" in p.stdout + p.stderr and "sha256" in p.stdout + p.stderr


@pytest.mark.slow
def test_prepare_and_run_end_to_end_on_cpu(tiny_bert_dir, tmp_path):
    """prepare.sh (tiny BERT, synthetic data, a stand-in zip for the onnxruntime-gpu wheel, no
    downloads) and run.sh with the checks' dry run on the CPU: the same scripts as on the GPU."""
    pytest.importorskip("grpc")
    stand_in = tmp_path / "onnxruntime_gpu-0-cp312-cp312-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(stand_in, "w") as z:
        z.writestr("onnxruntime/__init__.py", "raise ImportError('stand-in')\n")
        z.writestr("onnxruntime_gpu-0.dist-info/METADATA", "Name: onnxruntime-gpu\n")
    out = tmp_path / "out"
    env = {"PYTHON": sys.executable, "LMREC_GPU_DATA": "synthetic:items=120,users=80,seed=0",
           "LMREC_GPU_BASE_MODEL": str(tiny_bert_dir), "LMREC_GPU_ORT_WHEEL": str(stand_in),
           "LMREC_GPU_OFFLINE": "1", "LMREC_GPU_XZ_PRESET": "0", "LMREC_GPU_PIECE_BYTES": "400000"}
    p = _bash([str(GPU / "prepare.sh"), str(out)], env, timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    index = json.loads((out / "INDEX.json").read_text())
    assert all(e["bytes"] <= 400_000 for e in index["pieces"])
    groups = {c["path"].split("/")[0] for c in index["contents"]}
    assert {"data", "reference", "model16", "bundle", "ort", "meta.json"} <= groups
    results = tmp_path / "results"
    p = _bash([str(GPU / "run.sh"), str(out), str(results)],
              {"PYTHON": sys.executable, "LMREC_GPU_ASSUME_GPU": "1", "LMREC_GPU_HOST_PACKAGES": "1",
               "LMREC_GPU_DEVICE": "cpu", "LMREC_GPU_ROOT": str(tmp_path / "root"),
               "LMREC_GPU_CHECK_ARGS": "--dry-run", "LMREC_GPU_BUDGET": "420"}, timeout=620)
    assert p.returncode == 0, p.stdout + p.stderr[-3000:]
    r = json.loads((results / "results.json").read_text())
    assert r["summary"]["failed"] == [], json.dumps(r["summary"])
    checks = r["checks"]
    assert checks["encoder_parity"]["cosine_batch64"]["min"] >= 0.999
    worst = checks["encoder_parity"]["worst"]  # the furthest texts, each also through transformers
    assert worst and worst[0]["cosine_sdk"] <= worst[-1]["cosine_sdk"] and worst[0]["cosine_torch"] >= 0.999
    assert checks["cuda_guard"]["hidden_gpu"]["cuda"]["raised"]  # device="cuda" raises without CUDA
    assert checks["speed"]["model_time"] and checks["speed"]["e2e"] and checks["speed"]["batch1"]
    assert checks["server"]["grpc"]["errors"] == 0
    assert checks["train"]["device"] == "cpu" and checks["train"]["exit"] == 0
    finetune = checks["finetune"]  # issue 12's run: three cold-split trainings, paired against zero-shot
    assert (results / "finetune.log").read_text().count("=====") == 6
    assert [v["exit"] for v in finetune["seeds"].values()] == [0, 0, 0], json.dumps(finetune)[-3000:]
    layers = json.loads((tiny_bert_dir / "config.json").read_text())["num_hidden_layers"]
    assert all(v["text"]["layers"] == layers for v in finetune["seeds"].values())  # every layer
    for split in ("cold", "mixed"):
        assert [row["seed"] for row in finetune["paired"][split]["test"]["per_seed"]] == [0, 1, 2]
        assert finetune["paired"][split]["test"]["pooled"]["all"]["users"] > 0
