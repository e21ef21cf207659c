"""Offline pipelines as a user runs them: `lmrec embed`, `recommend-all`, `index build`, `bundle
pack/unpack/verify` in real processes, on the tiny test bundle (dim 16, built in under a second)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _tiny_bundle import TOPICS, make_tiny_bundle
from lmrec import Bundle, BundleError, BundleWriter, DataError, LmrecError, Recommender, TextEncoder
from lmrec.offline import (
    build_bundle_index,
    embed_file,
    pack_bundle,
    read_packed_manifest,
    read_vectors,
    unpack_bundle,
    verify_archive,
)
from lmrec.offline import embed_work_dir as work_dir

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
WORDS = sorted({w for ws in TOPICS.values() for w in ws})


def lmrec(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmrec", *args], capture_output=True, text=True, timeout=timeout)


def write_items(path: Path, n: int, seed: int = 0, start: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = [
        {"id": f"x{i}", "text": " ".join(rng.choice(WORDS, int(rng.integers(2, 7))))} for i in range(start, start + n)
    ]
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return rows


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("offline") / "bundle")


@pytest.fixture(scope="module")
def templated(bundle: Path, tmp_path_factory) -> Path:
    """The tiny bundle with a real text template (title, then brand) in its manifest."""
    b = Bundle.open(bundle)
    with BundleWriter(tmp_path_factory.mktemp("offline") / "templated") as w:
        w.copy_from(b)
        return w.finish(b.manifest.replace(template="fields=title,brand;sep=. ;max_chars=2000"))


@pytest.fixture(scope="module")
def encoder(bundle: Path) -> TextEncoder:
    b = Bundle.open(bundle)
    return TextEncoder(b.encoder_path("int8"), b.file("tokenizer.json"), b.max_length)


def read_parquet_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    v = read_vectors(path)
    return v.ids, np.asarray(v.array)


# -- embed ----------------------------------------------------------------------------------------
def test_embed_jsonl_to_parquet_and_npy_equals_the_encoder(bundle, encoder, tmp_path):
    rows = write_items(tmp_path / "items.jsonl", 700)
    report = tmp_path / "r.json"
    proc = lmrec("embed", "--bundle", str(bundle), "--items", str(tmp_path / "items.jsonl"),
                 "--out", str(tmp_path / "v.parquet"), "--chunk", "128", "--workers", "1", "--json", str(report))
    assert proc.returncode == 0, proc.stderr
    # the summary; the progress bar (rate, ETA) shows on a terminal only, not in a pipe (issue 11)
    assert "items/s" in proc.stdout and "700 items" in proc.stdout and "\r" not in proc.stderr
    ids, vectors = read_parquet_vectors(tmp_path / "v.parquet")
    assert ids == [r["id"] for r in rows]
    np.testing.assert_allclose(vectors, encoder.embed([r["text"] for r in rows]), atol=1e-6)
    meta = pq.read_schema(tmp_path / "v.parquet").metadata
    assert meta[b"lmrec.precision"] == b"int8"
    assert json.loads(report.read_text())["items"] == 700
    assert not work_dir(tmp_path / "v.parquet").exists()

    proc = lmrec("embed", "--bundle", str(bundle), "--items", str(tmp_path / "items.jsonl"),
                 "--out", str(tmp_path / "v.npy"), "--workers", "2", "--chunk", "100", "--quiet")
    assert proc.returncode == 0, proc.stderr
    npy = np.load(tmp_path / "v.npy")
    assert (tmp_path / "v.ids.txt").read_text().splitlines() == ids
    np.testing.assert_array_equal(npy, vectors)


def test_embed_csv_and_parquet_with_template_fields(templated, encoder, tmp_path):
    rows = [
        {
            "id": f"p{i}",
            "title": f"{WORDS[i % len(WORDS)]} {WORDS[(3 * i) % len(WORDS)]}",
            "brand": "acme" if i % 2 else "",
        }
        for i in range(50)
    ]
    texts = [f"{r['title']}. {r['brand']}" if r["brand"] else r["title"] for r in rows]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "items.parquet")
    with open(tmp_path / "items.csv", "w") as f:
        f.write("id,title,brand\n" + "".join(f"{r['id']},{r['title']},{r['brand']}\n" for r in rows))
    for name in ("items.parquet", "items.csv"):
        out = tmp_path / f"{name}.vectors.parquet"
        embed_file(templated, tmp_path / name, out, progress=False)
        ids, vectors = read_parquet_vectors(out)
        assert ids == [r["id"] for r in rows]
        np.testing.assert_allclose(vectors, encoder.embed(texts), atol=1e-6)


def test_embed_resumes_after_being_killed(bundle, encoder, tmp_path):
    rows = write_items(tmp_path / "items.jsonl", 60_000, seed=1)
    out = tmp_path / "v.parquet"
    args = [
        "--bundle",
        str(bundle),
        "--items",
        str(tmp_path / "items.jsonl"),
        "--out",
        str(out),
        "--chunk",
        "256",
        "--quiet",
    ]
    proc = subprocess.Popen([sys.executable, "-m", "lmrec", "embed", *args, "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = work_dir(out)
    deadline = time.monotonic() + 60
    while len(list(work.glob("part-*.npz"))) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "embed ended before it could be interrupted"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    done = len(list(work.glob("part-*.npz")))
    assert not out.exists() and 3 <= done < 60_000 // 256, done

    report = tmp_path / "r.json"
    again = lmrec("embed", *args, "--workers", "2", "--json", str(report))
    assert again.returncode == 0, again.stderr
    r = json.loads(report.read_text())
    assert r["resumed"] >= done * 256 and r["embedded"] + r["resumed"] == 60_000
    ids, vectors = read_parquet_vectors(out)
    assert ids == [row["id"] for row in rows]  # in input order, each exactly once
    sample = np.random.default_rng(0).choice(60_000, 500, replace=False)
    np.testing.assert_allclose(vectors[sample], encoder.embed([rows[i]["text"] for i in sample]), atol=1e-6)
    assert not work.exists()


def test_embed_interrupted_run_with_other_inputs_needs_restart(bundle, tmp_path):
    write_items(tmp_path / "items.jsonl", 30)
    out = tmp_path / "v.parquet"
    work = work_dir(out)
    work.mkdir()
    (work / "run.json").write_text(json.dumps({"items": "elsewhere"}))
    with pytest.raises(LmrecError, match="--restart"):
        embed_file(bundle, tmp_path / "items.jsonl", out, progress=False)
    assert embed_file(bundle, tmp_path / "items.jsonl", out, restart=True, progress=False).items == 30
    with pytest.raises(LmrecError, match="already exists"):
        embed_file(bundle, tmp_path / "items.jsonl", out, progress=False)


@pytest.mark.parametrize("content, message", [
    ('{"id": "a", "text": "pen"}\n{"text": "ink"}\n', "line 2: field 'id' is missing"),
    ('{"id": "a", "title": "pen"}\n', "line 1: no 'text' field"),
    ('{"id": "a", "text": "pen"}\n{"id": "b", "text": \n', "line 2: not valid JSON"),
    ('{"id": "a", "text": 5}\n', "field 'text' must be a string"),
    ('{"id": "a", "text": "pen"}\n{"id": "a", "text": "ink"}\n', "item id 'a' appears more than once"),
    ('\n', "no rows"),
])
def test_embed_bad_items_name_the_field_and_line(bundle, tmp_path, content, message):
    (tmp_path / "items.jsonl").write_text(content)
    proc = lmrec("embed", "--bundle", str(bundle), "--items", str(tmp_path / "items.jsonl"),
                 "--out", str(tmp_path / "v.parquet"), "--quiet")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "v.parquet").exists()


def test_embed_bad_paths_and_formats(bundle, tmp_path):
    (tmp_path / "items.txt").write_text("x")
    (tmp_path / "items.csv").write_text("name,text\na,pen\n")
    cases = [(["--items", str(tmp_path / "items.txt"), "--out", str(tmp_path / "v.parquet")], "unknown suffix '.txt'"),
             (["--items", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "v.parquet")], "no such file"),
             (["--items", str(tmp_path / "items.csv"), "--out", str(tmp_path / "v.csv")], "--out"),
             (["--items", str(tmp_path / "items.csv"), "--out", str(tmp_path / "v.parquet")], "no 'id' column")]
    for args, message in cases:
        proc = lmrec("embed", "--bundle", str(bundle), *args, "--quiet")
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)


# -- recommend-all --------------------------------------------------------------------------------
def test_recommend_all_equals_recommend_with_its_exclusions(bundle, tmp_path):
    b = Bundle.open(bundle)
    rng = np.random.default_rng(3)
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "items.jsonl", "w") as f:
        for i, t in zip(b.item_ids, b.item_texts, strict=True):
            f.write(json.dumps({"id": i, "text": t}) + "\n")
        f.write(json.dumps({"id": "ghost", "text": "not in the bundle"}) + "\n")
    histories = {f"u{u}": list(rng.choice(b.item_ids, int(rng.integers(1, 12)), replace=False)) for u in range(40)}
    histories["cold"] = ["ghost"]  # no item the bundle knows: the popularity fallback
    with open(data / "interactions.jsonl", "w") as f:
        for user, items in histories.items():
            f.writelines(json.dumps({"user": user, "item": i}) + "\n" for i in items)
    out = tmp_path / "recs.parquet"
    proc = lmrec("recommend-all", "--bundle", str(bundle), "--data", f"jsonl:{data}", "--out", str(out),
                 "-k", "7", "--batch", "16", "--quiet")
    assert proc.returncode == 0, proc.stderr
    table = pq.read_table(out)
    assert table.schema.names == ["user_id", "item_id", "rank", "score"]
    got: dict[str, list] = {}
    for row in table.to_pylist():
        got.setdefault(row["user_id"], []).append(row)
    rec = Recommender.load(bundle)
    assert set(got) == set(histories)
    for user, history in histories.items():
        want = rec.recommend(history, k=7)
        rows = got[user]
        assert [r["rank"] for r in rows] == list(range(1, 8))
        assert [r["item_id"] for r in rows] == [w.item_id for w in want], user
        np.testing.assert_allclose([r["score"] for r in rows], [w.score for w in want], rtol=1e-5)
        assert not set(history) & {r["item_id"] for r in rows}
    assert "1 user(s) with no known history" in proc.stdout

    again = lmrec("recommend-all", "--bundle", str(bundle), "--data", f"jsonl:{data}", "--out", str(out), "-k", "500")
    assert again.returncode == 2 and "already exists" in again.stderr
    # k above the catalogue size: what there is (the proto's rule, now the SDK's; it used to be an error)
    wide = lmrec(
        "recommend-all",
        "--bundle",
        str(bundle),
        "--data",
        f"jsonl:{data}",
        "--out",
        str(tmp_path / "r2.parquet"),
        "-k",
        "500",
    )
    assert wide.returncode == 0, wide.stderr
    assert max(pq.read_table(tmp_path / "r2.parquet").column("rank").to_pylist()) <= 120


# -- index build ----------------------------------------------------------------------------------
def clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, dim))
    return (centres[rng.integers(0, 64, n)] + 0.35 * rng.normal(size=(n, dim))).astype(np.float32)


def test_index_build_makes_a_bundle_with_recall_and_texts(bundle, tmp_path):
    n = 6000
    vectors = clustered(n, 16)
    np.save(tmp_path / "v.npy", vectors)
    ids = [f"c{i}" for i in range(n)]
    (tmp_path / "v.ids.txt").write_text("".join(f"{i}\n" for i in ids))
    with open(tmp_path / "items.jsonl", "w") as f:
        for i in ids[:10]:
            f.write(json.dumps({"id": i, "text": "pen ink", "brand": "Acme"}) + "\n")
    report = tmp_path / "r.json"
    proc = lmrec(
        "index",
        "build",
        "--bundle",
        str(bundle),
        "--vectors",
        str(tmp_path / "v.npy"),
        "--out",
        str(tmp_path / "new"),
        "--M",
        "12",
        "--ef-construction",
        "100",
        "--items",
        str(tmp_path / "items.jsonl"),
        "--queries",
        "300",
        "--json",
        str(report),
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(report.read_text())
    assert r["recall@10"] >= 0.95 and r["items"] == n and r["params"]["M"] == 12 and r["items_without_text"] == n - 10
    assert "recall@10 vs exact" in proc.stdout
    assert lmrec("bundle", "verify", str(tmp_path / "new")).returncode == 0
    rec = Recommender.load(tmp_path / "new")
    assert rec.item_ids() == ids and rec.manifest.index["M"] == 12
    assert rec.get_item("c3").metadata == {"brand": "Acme"} and rec.get_item("c3").text == "pen ink"
    got = [r.item_id for r in rec.recommend(["c0"], k=10, mode="ann")]
    want = [r.item_id for r in rec.recommend(["c0"], k=10, mode="exact")]
    assert len(set(got) & set(want)) >= 8


def test_index_build_refuses_foreign_or_malformed_vectors(bundle, tmp_path):
    pq.write_table(pa.table({"id": ["a", "b"], "vector": [[1.0] * 8, [0.5] * 8]}), tmp_path / "dim8.parquet")
    with pytest.raises(LmrecError, match="dim 8, the bundle's encoder outputs 16"):
        build_bundle_index(bundle, tmp_path / "dim8.parquet", tmp_path / "o1", progress=False)
    schema = pa.schema([("id", pa.string()), ("vector", pa.list_(pa.float32()))],
                       metadata={b"lmrec.encoder_sha256": b"0" * 64})
    pq.write_table(
        pa.table({"id": ["a", "b"], "vector": [[1.0] * 16, [0.5] * 16]}, schema=schema), tmp_path / "foreign.parquet"
    )
    with pytest.raises(LmrecError, match="embedded by another encoder"):
        build_bundle_index(bundle, tmp_path / "foreign.parquet", tmp_path / "o2", progress=False)
    pq.write_table(pa.table({"id": ["a", "b"], "vector": [[1.0] * 16, [0.5] * 15]}), tmp_path / "ragged.parquet")
    with pytest.raises(LmrecError, match="row 2 has a vector of length 15"):
        build_bundle_index(bundle, tmp_path / "ragged.parquet", tmp_path / "o3", progress=False)
    pq.write_table(pa.table({"id": ["a", "a"], "vector": [[1.0] * 16, [0.5] * 16]}), tmp_path / "dup.parquet")
    with pytest.raises(DataError, match="'a' appears more than once"):
        build_bundle_index(bundle, tmp_path / "dup.parquet", tmp_path / "o4", progress=False)
    assert not any(p.name.startswith(("o", ".o")) for p in tmp_path.iterdir())


# -- pack / unpack / verify -----------------------------------------------------------------------
def test_pack_unpack_verify_round_trip(bundle, tmp_path):
    archive = tmp_path / "b.tar.zst"
    proc = lmrec("bundle", "pack", str(bundle), str(archive))
    assert proc.returncode == 0, proc.stderr
    ok = lmrec("bundle", "verify", str(archive))
    assert ok.returncode == 0 and ok.stdout.startswith(f"OK {archive}"), ok.stderr
    assert lmrec("bundle", "unpack", str(archive), str(tmp_path / "u")).returncode == 0
    assert (tmp_path / "u/manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
    assert lmrec("bundle", "verify", str(tmp_path / "u")).returncode == 0
    rec = Recommender.load(tmp_path / "u")
    assert rec.recommend(["office-0"], k=3) == Recommender.load(bundle).recommend(["office-0"], k=3)

    # the manifest is the first member: readable from the first bytes alone
    cut = tmp_path / "cut.tar.zst"
    cut.write_bytes(archive.read_bytes()[:4096])
    assert read_packed_manifest(cut).files == Bundle.open(bundle).manifest.files
    problems = verify_archive(cut)
    assert problems and all("missing from the archive" in p or "corrupted archive" in p for p in problems)


def test_edge_pack_carries_one_encoder(bundle, tmp_path):
    report = pack_bundle(bundle, tmp_path / "edge.tar.zst", precision="int8")
    manifest = read_packed_manifest(tmp_path / "edge.tar.zst")
    assert "item_encoder.int8.onnx" in manifest.files and "item_encoder.onnx" not in manifest.files
    assert manifest.packed is not None and manifest.packed["dropped"] == ["item_encoder.fp16.onnx", "item_encoder.onnx"]
    assert report["files"] == len(manifest.files)
    out = unpack_bundle(tmp_path / "edge.tar.zst", tmp_path / "edge")
    assert not (out / "item_encoder.onnx").exists()
    assert Recommender.load(out).precision == "int8"
    with pytest.raises(BundleError, match="no fp32 item encoder"):
        pack_bundle(out, tmp_path / "again.tar.zst", precision="fp32")


def test_corrupted_archive_fails_loudly_and_unpacks_nothing(bundle, tmp_path):
    archive = tmp_path / "b.tar.zst"
    pack_bundle(bundle, archive)
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.tar.zst"
    bad.write_bytes(bytes(data))
    proc = lmrec("bundle", "verify", str(bad))
    assert proc.returncode == 1 and "FAIL" in proc.stderr and "corrupted" in proc.stderr, proc.stderr
    proc = lmrec("bundle", "unpack", str(bad), str(tmp_path / "u"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith((".u", "u"))] == []
    with pytest.raises(LmrecError, match="already exists"):
        unpack_bundle(archive, bundle)
    with pytest.raises(LmrecError, match="must end in .tar.zst"):
        pack_bundle(bundle, tmp_path / "b.tar.gz")


def test_spark_missing_bundle_is_a_clear_error(tmp_path):
    from lmrec.spark import local_bundle

    with pytest.raises(BundleError, match="not a directory or file here, nor shipped with --files"):
        local_bundle(tmp_path / "nowhere.tar.zst")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(BundleError, match="not a packed bundle"):
        local_bundle(tmp_path / "x.txt")
