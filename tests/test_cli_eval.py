"""`lmrec eval` and `lmrec data stats` as a user runs them: real processes, JSON contract, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from lmrec.evaluation import METRICS

DATA = "synthetic:items=300,users=200,seed=1"


def lmrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmrec", *args], capture_output=True, text=True, timeout=300)


def test_eval_writes_the_report_contract(tmp_path):
    pytest.importorskip("scipy")
    out = tmp_path / "r.json"
    proc = lmrec("eval", "--data", DATA, "--methods", "pop,itemknn", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert set(report["dataset"]) == {"name", "users", "items", "interactions"}
    assert report["split"] == "warm" and report["seed"] == 0
    for method in ("pop", "itemknn"):
        r = report["results"][method]
        assert set(METRICS) <= set(r) and set(r["ci95"]) == set(METRICS)
        assert r["users"] == report["split_info"]["test_users"] > 0
        assert r["ci95"]["ndcg@10"][0] <= r["ndcg@10"] <= r["ci95"]["ndcg@10"][1]
    assert report["results"]["itemknn"]["ndcg@10"] > 2 * report["results"]["pop"]["ndcg@10"]
    assert "itemknn vs pop" in report["paired"]
    assert "itemknn" in proc.stdout and "ndcg@10" in proc.stdout


def test_eval_cold_split_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    proc = lmrec("eval", "--data", DATA, "--methods", "pop", "--split", "cold", "--seed", "3",
                 "--json", str(out), "--plot", str(png), "--quiet")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["split"] == "cold" and report["split_info"]["cold_items"] == 60
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--data", "bogus:x", "--methods", "pop"], "expected KIND:PATH"),
    (["--data", DATA, "--methods", "magic"], "unknown method 'magic'"),
    (["--data", DATA, "--methods", "lmrec"], "needs --bundle"),
    (["--data", DATA, "--methods", "pop", "--set", "pop"], "expected METHOD.KEY=VALUE"),
    (["--data", DATA, "--methods", "sasrec", "--set", "sasrec.layerz=3"], "layerz"),
    (["--data", DATA, "--methods", "pop,sasrec", "--set", "sasrec.dropout=2"], "sasrec.dropout=2: must be"),
    (["--data", DATA, "--methods", "sasrec", "--set", "sasrec.adam_beta2=1"], "sasrec.adam_beta2=1: must be a number"),
    (["--data", DATA, "--methods", "sasrec", "--set", "sasrec.dim=63.5"], "sasrec.dim=63.5: must be an integer"),
])
def test_eval_bad_input_is_one_clear_line(tmp_path, args, message):
    proc = lmrec("eval", *args, "--json", str(tmp_path / "r.json"), "--quiet")
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "r.json").exists()


def test_data_stats(tmp_path):
    out = tmp_path / "s.json"
    proc = lmrec("data", "stats", "--data", DATA, "--json", str(out))
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(out.read_text())
    assert stats["items"] == 300 and stats["users"] > 0 and len(stats["fingerprint"]) == 64
