"""The one-distribution layout: folders map to lmrec, lmrec.trainer, lmrec.server, and the SDK stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MAPPING = {"sdk": "lmrec", "trainer": "lmrec.trainer", "server": "lmrec.server"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for folder, package in MAPPING.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    assert found == listed, f"pyproject packages differ from folders: missing {found - listed}, stale {listed - found}"


def test_no_bare_top_level_packages_are_declared():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert all(p == "lmrec" or p.startswith("lmrec.") for p in config["packages"])


def test_sdk_import_does_not_load_training_libraries():
    code = ("import sys, lmrec; from lmrec import Recommender; import lmrec.data, lmrec.evaluation, lmrec.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'optimum') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_cli_help_of_every_command_works_without_importing_torch():
    code = ("import sys, contextlib, io\nfrom lmrec.cli import build_parser\np = build_parser()\n"
            "sub = next(a for a in p._actions if a.dest == 'command')\n"
            "for name, sp in sub.choices.items():\n    sp.format_help()\n"
            "print(sorted(sub.choices)); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names, torch_loaded = out.stdout.strip().splitlines()
    assert "eval" in names and "data" in names
    assert torch_loaded == "False"
