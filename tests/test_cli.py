"""First contact with the command line: what `lmrec --help` says, `--version`, errors before any
expensive work, and progress bars only on a terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lmrec
import pytest
from _tiny_bundle import make_tiny_bundle
from lmrec.cli import COMMANDS


def lmrec_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lmrec", *args], capture_output=True, text=True, timeout=timeout)


def test_help_says_what_lmrec_does_and_lists_commands_in_the_order_a_user_needs_them() -> None:
    proc = lmrec_cli("--help")
    assert proc.returncode == 0
    assert "turns item text and interaction logs into a recommender" in proc.stdout
    commands = proc.stdout.split("COMMAND\n", 1)[1].split("options:")[0]
    listed = [line.split()[0] for line in commands.splitlines() if line.startswith("    ") and line[4] != " "]
    order = ["demo", "train", "eval", "export", "recommend", "serve", "embed", "index", "recommend-all", "bundle",
             "data", "bench"]
    assert listed[:len(order)] == order
    assert len(COMMANDS) == len(order)
    assert "lmrec.cli" not in proc.stdout  # not a module docstring


def test_version() -> None:
    proc = lmrec_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"lmrec {lmrec.__version__}"


def test_train_help_shows_the_budget_the_trainer_uses() -> None:
    from lmrec.trainer import DEFAULT_BUDGET, TEST_LIKE_SHARE, TEXT_SHARE, TRAIN_SHARE

    proc = lmrec_cli("train", "--help")
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert f"default: {DEFAULT_BUDGET:g}," in text
    assert f"stops at {TEXT_SHARE:.0%} of it" in text and f"at {TRAIN_SHARE:.0%}," in text
    assert f"validation ends by {TEST_LIKE_SHARE:.0%} or is skipped" in text


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("cli") / "tiny")


def test_eval_checks_every_input_before_any_method_runs(tmp_path: Path, bundle: Path) -> None:
    data = "synthetic:items=300,users=200,seed=1"
    b = lmrec.Bundle.open(bundle)
    with lmrec.BundleWriter(tmp_path / "other") as writer:  # a bundle trained on another split and seed
        writer.copy_from(b)
        other = writer.finish(b.manifest.replace(kind="trained", training={"split": "cold", "seed": 7, "data": {}}))
    cases = [
        (["--methods", "sasrec,lmrec", "--bundle", str(tmp_path / "WRONG")], "--bundle"),
        (["--methods", "pop", "--json", str(tmp_path)], "is a directory"),
        (["--methods", "pop", "--reference", "sasrec"], "--reference 'sasrec'"),
        (["--methods", "pop", "--set", "pop.depth=3"], "--set pop"),
        (["--methods", "pop,nope"], "unknown method 'nope'"),
        (["--methods", "sasrec,lmrec", "--bundle", str(other)], "trained on other data"),
    ]
    for extra, message in cases:
        args = ["eval", "--data", data, "--json", str(tmp_path / "r.json"), *extra]
        proc = lmrec_cli(*args)
        assert proc.returncode == 2, (extra, proc.stderr[-500:])
        assert message in proc.stderr, (extra, proc.stderr[-500:])
        assert "sasrec" not in proc.stdout.lower(), "a method ran before the inputs were checked"


def test_train_export_and_serve_refuse_bad_outputs_before_work(tmp_path: Path, bundle: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for command in (["train"], ["export"]):
        proc = lmrec_cli(*command, "--data", "synthetic:", "--out", str(taken))
        assert proc.returncode == 2 and "already exists" in proc.stderr and "data:" not in proc.stderr, proc.stderr
    state = tmp_path / "state-file"
    state.write_text("x")
    proc = lmrec_cli("serve", "--bundle", str(bundle), "--state-dir", str(state), "--port", "0")
    assert proc.returncode == 2 and "--state-dir" in proc.stderr
    proc = lmrec_cli("serve", "--bundle", str(tmp_path / "nope"), "--state-dir", str(tmp_path / "s"), "--port", "0")
    assert proc.returncode == 2 and "--bundle" in proc.stderr and "not a directory" in proc.stderr


def test_every_output_that_cannot_be_created_is_refused_before_work(tmp_path: Path, bundle: Path) -> None:
    # a regular file as the folder: refused for root too (permission bits are not what is tested)
    blocked = tmp_path / "a-file"
    blocked.write_text("mine")
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "text": "a red pen"}\n')
    vectors = bundle / "item_vectors.npy"
    data = ["--data", "synthetic:items=300,users=200,seed=1"]
    cases = [
        (["train", *data, "--out", str(blocked / "b")], "--out"),
        (["train", *data, "--out", str(tmp_path / "b"), "--plot", str(blocked / "p.png")], "--plot"),
        (["export", "--out", str(blocked / "b")], "--out"),
        (["eval", *data, "--methods", "pop", "--json", str(blocked / "r.json")], "--json"),
        (["embed", "--bundle", str(bundle), "--items", str(items), "--out", str(blocked / "v.npy")], "--out"),
        (["recommend-all", "--bundle", str(bundle), *data, "--out", str(blocked / "r.parquet")], "--out"),
        (["recommend-all", "--bundle", str(bundle), *data, "--out", str(tmp_path / "r.parquet"),
          "--json", str(blocked / "r.json")], "--json"),
        (["index", "build", "--bundle", str(bundle), "--vectors", str(vectors), "--out", str(blocked / "b")], "--out"),
        (["bundle", "pack", str(bundle), str(blocked / "b.tar.zst")], "archive"),
        (["bundle", "unpack", str(tmp_path / "b.tar.zst"), str(blocked / "b")], "bundle directory"),
        (["data", "stats", *data, "--json", str(blocked / "s.json")], "--json"),
    ]
    for args, flag in cases:
        proc = lmrec_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr[-500:])
        assert f"{flag} {blocked}" in proc.stderr and "cannot create it" in proc.stderr, (args, proc.stderr[-500:])
        assert "Traceback" not in proc.stderr
    assert blocked.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "items.jsonl"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a file system that takes no files)")
def test_an_output_on_a_file_system_that_takes_no_files_is_refused() -> None:
    proc = lmrec_cli("eval", "--data", "synthetic:items=300,users=200,seed=1", "--methods", "pop",
                     "--json", "/proc/lmrec-report.json")
    assert proc.returncode == 2, proc.stderr
    assert "--json /proc/lmrec-report.json: cannot create it (/proc" in proc.stderr, proc.stderr
    assert "pop" not in proc.stdout  # nothing was evaluated


def test_progress_goes_to_a_terminal_only(tmp_path: Path, bundle: Path) -> None:
    items = tmp_path / "items.jsonl"
    items.write_text("".join(f'{{"id": "i{n}", "text": "pen ink paper {n}"}}\n' for n in range(300)))
    proc = lmrec_cli("embed", "--bundle", str(bundle), "--items", str(items), "--out", str(tmp_path / "v.npy"),
                     "--workers", "1", "--chunk", "50")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr  # logged to a pipe: no bar frames
