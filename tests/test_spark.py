"""lmrec.spark in Spark local[2]: the vectors and recommendations of one host, computed per partition.

Needs pyspark (extra `spark`) and Java 17+; skipped with the reason when either is missing.
Starting the JVM takes 15-40 s on 2 cores, hence `slow`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from _tiny_bundle import TOPICS, make_tiny_bundle

pytestmark = pytest.mark.slow


def java_major() -> int | None:
    java = shutil.which("java")
    if java is None:
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark", reason="pyspark is not installed (pip install 'lmrec[spark]')")
    major = java_major()
    if major is None or major < 17:
        pytest.skip(f"Spark 4 needs Java 17 or newer on PATH; found {'no java' if major is None else f'Java {major}'}")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors run this interpreter, with lmrec installed
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("lmrec-test")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def test_spark_embed_and_recommend_equal_one_host(spark, tmp_path):
    from lmrec import Bundle, Recommender, TextEncoder
    from lmrec.offline import pack_bundle
    from lmrec.spark import embed, recommend

    bundle = make_tiny_bundle(tmp_path / "bundle")
    archive = tmp_path / "bundle.tar.zst"
    pack_bundle(bundle, archive, precision="int8")  # executors unpack it once per host
    rng = np.random.default_rng(0)
    words = sorted({w for ws in TOPICS.values() for w in ws})
    rows = [(f"s{i}", " ".join(rng.choice(words, int(rng.integers(2, 7))))) for i in range(3000)]
    df = spark.createDataFrame(rows, "id string, text string").repartition(4)

    got = {r["id"]: r["vector"] for r in embed(df, str(archive)).collect()}
    assert sorted(got) == sorted(i for i, _ in rows)
    b = Bundle.open(bundle)
    want = TextEncoder(b.encoder_path("int8"), b.file("tokenizer.json"), b.max_length).embed([t for _, t in rows])
    np.testing.assert_allclose(np.array([got[i] for i, _ in rows], dtype=np.float32), want, atol=1e-6)

    rec = Recommender.load(bundle)
    histories = [(f"u{u}", list(rng.choice(b.item_ids, int(rng.integers(0, 6)), replace=False))) for u in range(60)]
    users = spark.createDataFrame(histories, "user_id string, history array<string>").repartition(3)
    out: dict[str, list] = {}
    for r in recommend(users, str(bundle), k=5).collect():
        out.setdefault(r["user_id"], []).append((r["rank"], r["item_id"]))
    for user, history in histories:
        assert [i for _, i in sorted(out[user])] == [x.item_id for x in rec.recommend(history, k=5)], user

