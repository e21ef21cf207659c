"""`lmrec bench server` end to end on the tiny bundle, with short steps (the numbers are not checked:
they belong to bench/results, measured on a quiet host)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from _grpc_fixtures import REPO, tiny_bundle  # noqa: F401  (fixtures; skips without the server extra)


def test_bench_server_runs_end_to_end_and_writes_the_report(tiny_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "lmrec", "bench", "server", "--bundle", str(tiny_bundle), "--json", str(out),
         "--seconds", "0.5", "--quiet"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    for key in ("embed_grpc_vs_inprocess_c32", "recommend_p99_ms_at_200rps", "recommend_max_rps"):
        assert key in report
    assert report["embed_grpc_vs_inprocess_c32"] > 0 and report["embed"]["inprocess_batch32_texts_per_s"] > 0
    assert [r["clients"] for r in report["embed"]["grpc"]] == [1, 8, 32, 128]
    assert [r["offered_rps"] for r in report["recommend"]] == [50, 100, 200, 400, 800]
    for row in report["recommend"]:
        assert row["sent"] == int(row["offered_rps"] * 0.5)
        assert row["ok"] + sum(row["errors"].values()) == row["sent"]  # every call is accounted for
        assert 0 <= row["generator_cpu"]
    assert report["search"]["ok"] > 0 and report["upsert"]["ok"] > 0
    assert "BLAS 1 thread" in report["server"]["thread_budget"]
    assert report["recommend_max_rps"] in (0, 50, 100, 200, 400, 800)
    assert report["skipped"] == []
    assert "embed_grpc_vs_inprocess_c32" in proc.stdout  # the table
