"""Install what the unpacked payload carries, on the GPU machine (stdlib only; run by run.sh).

    python3 install.py --payload P --root ROOT --repo REPO --results R [--device cuda] [--host-packages]

Into ROOT: site-lmrec (lmrec from the working tree, `pip install --no-deps --no-build-isolation
--target`, or a symlink tree from pyproject's package-dir if that fails), site-wheels (grpc stack,
and tqdm/prometheus-client only where missing), site-hnswlib (built from the sdist), site-tf4
(transformers 4.57.x for `lmrec train` only); onnxruntime-gpu is used in place (P/ort). Writes
ROOT/env.sh (PYTHONPATH, LD_LIBRARY_PATH with the CUDA libraries torch loads, …) and
R/setup.json (each step: ok, seconds, error). `--host-packages` uses this Python's onnxruntime
and wheels (a dry run on a CPU machine whose Python is not 3.12). Exit 1 only if lmrec cannot be
imported at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PIP = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
       "--disable-pip-version-check", "-q"]
# not needed to build lmrec's wheel: left out of the copy pip builds from
_IGNORE = shutil.ignore_patterns(".git", ".venv", ".gpu", ".gl", ".whl", "node_modules", "out", "build", "dist",
                                 "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache", "bench", "tests")

_VERIFY = r"""
import glob, json, os, sys
out = {}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = torch.cuda.is_available()
except Exception as e:
    torch = None
    out["torch"] = f"missing: {e}"
if sys.argv[1] == "cuda" and torch is not None:
    # the CUDA libraries torch loads (onnxruntime-gpu's provider links cuBLAS, cuRAND, cudart 13):
    # their folders go on LD_LIBRARY_PATH so processes that import no torch (lmrec serve) find them
    x = torch.randn(64, 64, device="cuda"); (x @ x).sum().item()
    torch.backends.cudnn.version()
    torch.rand(4, device="cuda")
    dirs = []
    for line in open("/proc/self/maps"):
        path = line.split()[-1] if "/" in line else ""
        if os.path.basename(path).startswith(("libcublas", "libcudart", "libcurand", "libcudnn", "libnvrtc",
                                              "libcufft", "libnvJitLink")):
            if os.path.dirname(path) not in dirs:
                dirs.append(os.path.dirname(path))
    site = os.path.dirname(os.path.dirname(torch.__file__))
    for lib in sorted(glob.glob(os.path.join(site, "nvidia", "**", "lib*.so*"), recursive=True)):
        if os.path.dirname(lib) not in dirs:
            dirs.append(os.path.dirname(lib))
    print("LIBDIRS " + json.dumps(dirs))
import onnxruntime as ort
out["onnxruntime"] = [ort.__version__, ort.__file__, ort.get_available_providers()]
for mod in ("hnswlib", "grpc", "google.protobuf", "grpc_health.v1", "grpc_reflection.v1alpha", "tqdm", "tokenizers",
            "transformers"):
    try:
        m = __import__(mod, fromlist=["_"])
        out[mod] = [getattr(m, "__version__", "?"), getattr(m, "__file__", "?")]
    except Exception as e:
        out[mod] = f"missing: {type(e).__name__}: {e}"
import lmrec, lmrec.trainer, lmrec.server
from lmrec import Recommender
from lmrec.client import RecommenderClient
out["lmrec"] = [lmrec.__version__, lmrec.__file__]
print("VERIFY " + json.dumps(out))
"""


class Setup:
    def __init__(self, args: argparse.Namespace) -> None:
        self.payload, self.root, self.repo = Path(args.payload), Path(args.root), Path(args.repo)
        self.results = Path(args.results)
        self.log = open(self.results / "setup.log", "a")
        self.steps: dict[str, Any] = {}
        done = self.payload / ".payload-sha256"
        self.sha = done.read_text().strip() if done.is_file() else ""

    def run(self, cmd: list[str], env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        self.log.write(f"$ {shlex.join(cmd)}\n")
        self.log.flush()
        p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
        self.log.write(p.stdout)
        self.log.flush()
        if p.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd[:6])}… exit {p.returncode}: {p.stdout[-800:]}")
        return p

    def step(self, name: str, fn: Callable[[], Any], marker: Path | None = None) -> Any:
        """Run one step, recorded in setup.json; a marker holding the payload's sha256 skips it next time."""
        t = time.perf_counter()
        if marker is not None and marker.is_file() and marker.read_text().strip() == self.sha:
            self.steps[name] = {"ok": True, "cached": True, "seconds": 0.0}
            return None
        try:
            value = fn()
            self.steps[name] = {"ok": True, "seconds": round(time.perf_counter() - t, 2)}
            if value is not None:
                self.steps[name]["value"] = value
            if marker is not None:
                marker.write_text(self.sha + "\n")
            return value
        except Exception as e:  # noqa: BLE001 - every step is reported; the checks show the consequences
            self.steps[name] = {"ok": False, "seconds": round(time.perf_counter() - t, 2),
                                "error": f"{type(e).__name__}: {e}"}
            self.log.write(f"!! {name}: {e}\n")
            return None

    def fresh(self, path: Path) -> Path:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def _importable(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _lmrec_symlinks(s: Setup, dest: Path) -> str:
    """lmrec as symlinks into the working tree, following pyproject's package-dir."""
    import tomllib

    cfg = tomllib.loads((s.repo / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = cfg.get("package-dir", {})
    s.fresh(dest)
    for package in sorted(cfg.get("packages", []), key=len):
        parts = package.split(".")
        src = None
        for i in range(len(parts), 0, -1):  # the longest mapped prefix
            prefix = ".".join(parts[:i])
            if prefix in mapping:
                src = s.repo / mapping[prefix] / Path(*parts[i:])
                break
        src = src or s.repo / Path(*parts)
        target = dest / Path(*parts)
        target.mkdir(parents=True, exist_ok=True)
        for f in src.iterdir():
            if f.is_file() and not (target / f.name).exists():
                (target / f.name).symlink_to(f)
    return "symlinks"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payload", required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--host-packages", action="store_true")
    args = ap.parse_args(argv)
    s = Setup(args)
    root, payload = s.root, s.payload
    sites: list[Path] = []
    orig_pythonpath = os.environ.get("PYTHONPATH", "")
    orig_ld = os.environ.get("LD_LIBRARY_PATH", "")

    hnsw = root / "site-hnswlib"
    marker = root / ".hnswlib.done"
    build: dict[str, Any] = {}
    if args.host_packages and _importable("hnswlib"):
        s.steps["hnswlib"] = {"ok": True, "seconds": 0.0, "value": "this Python's"}
    elif marker.is_file() and marker.read_text().strip() == s.sha:
        s.steps["hnswlib"] = {"ok": True, "cached": True, "seconds": 0.0}
    elif not list((payload / "sdist").glob("hnswlib-*.tar.gz")):
        s.steps["hnswlib"] = {"ok": False, "seconds": 0.0, "error": f"no hnswlib sdist in {payload / 'sdist'}"}
    else:  # the slowest step (a C++ build): started first, waited for last
        s.fresh(hnsw)
        sdist = next((payload / "sdist").glob("hnswlib-*.tar.gz"))
        build["log"] = open(root / "hnswlib-build.log", "w")
        build["cmd"] = [*PIP, "--no-build-isolation", "--target", str(hnsw), str(sdist)]
        build["proc"] = subprocess.Popen(build["cmd"], stdout=build["log"], stderr=subprocess.STDOUT)
        build["t"] = time.perf_counter()
        build["sdist"] = sdist.name
    sites_after = [hnsw]

    lmrec_site = root / "site-lmrec"

    def lmrec() -> str:
        tmp = root / "lmrec-src"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(s.repo, tmp, ignore=_IGNORE, symlinks=True)
        s.fresh(lmrec_site)
        try:
            s.run([*PIP, "--no-build-isolation", "--target", str(lmrec_site), str(tmp)], timeout=120)
            return "pip install --target"
        except Exception as e:  # noqa: BLE001
            s.log.write(f"pip install of lmrec failed ({e}); using a symlink tree\n")
            return _lmrec_symlinks(s, lmrec_site)

    s.step("lmrec", lmrec)  # always: the working tree may have changed since the last call
    sites.append(lmrec_site)

    if not args.host_packages:
        sites.append(payload / "ort")
        wheels = root / "site-wheels"

        def grpc_stack() -> list[str]:
            s.fresh(wheels)
            files = sorted(str(p) for p in (payload / "wheels").glob("*.whl"))
            s.run([*PIP, "--target", str(wheels), *files])
            return [Path(f).name for f in files]

        s.step("wheels", grpc_stack, root / ".wheels.done")
        sites.append(wheels)

        def fallbacks() -> list[str]:
            added = []
            for module, dist in (("tqdm", "tqdm"), ("prometheus_client", "prometheus_client")):
                if not _importable(module):
                    files = [str(p) for p in (payload / "wheels-fallback").glob(f"{dist}-*.whl")]
                    s.run([*PIP, "--target", str(wheels), *files])
                    added.append(dist)
            return added

        s.step("fallback_wheels", fallbacks)

        tf4 = root / "site-tf4"

        def transformers4() -> list[str]:
            s.fresh(tf4)
            files = sorted(str(p) for p in (payload / "wheels-tf4").glob("*.whl"))
            s.run([*PIP, "--target", str(tf4), *files])
            return [Path(f).name for f in files]

        s.step("transformers_for_train", transformers4, root / ".tf4.done")
        if s.steps["transformers_for_train"]["ok"]:
            os.environ["LMREC_GPU_TF4_SITE"] = str(tf4)

    if "proc" in build:
        try:
            rc = build["proc"].wait(timeout=max(30, 240 - (time.perf_counter() - build["t"])))
        except subprocess.TimeoutExpired:
            build["proc"].kill()
            rc = "timeout"
        build["log"].close()
        text = (root / "hnswlib-build.log").read_text(errors="replace")
        s.log.write(f"$ {shlex.join(build['cmd'])}\n{text}")
        s.steps["hnswlib"] = {"ok": rc == 0, "seconds": round(time.perf_counter() - build["t"], 2),
                              "value": f"built from {build['sdist']}"}
        if rc == 0:
            marker.write_text(s.sha + "\n")
        else:
            s.steps["hnswlib"]["error"] = f"exit {rc}: {text[-800:]}"
    sites.extend(sites_after)

    pythonpath = os.pathsep.join([*(str(p) for p in sites), *([orig_pythonpath] if orig_pythonpath else [])])
    probe_env = {**os.environ, "PYTHONPATH": pythonpath}

    def verify() -> dict[str, Any]:
        p = s.run([sys.executable, "-c", _VERIFY, args.device], env=probe_env, timeout=180)
        found: dict[str, Any] = {}
        for line in p.stdout.splitlines():
            if line.startswith("LIBDIRS "):
                found["cuda_library_dirs"] = json.loads(line[8:])
            if line.startswith("VERIFY "):
                found.update(json.loads(line[7:]))
        if "lmrec" not in found:
            raise RuntimeError("no VERIFY line")
        return found

    found = s.step("verify_imports", verify)
    libdirs = (found or {}).get("cuda_library_dirs", [])
    ld = os.pathsep.join([*libdirs, *([orig_ld] if orig_ld else [])])
    env = {
        "PYTHONPATH": pythonpath,
        "LD_LIBRARY_PATH": ld,
        "LMREC_GPU_ORIG_LD_LIBRARY_PATH": orig_ld,
        "LMREC_GPU_TF4_SITE": os.environ.get("LMREC_GPU_TF4_SITE", ""),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "true",
        "PYTHONUNBUFFERED": "1",
    }
    with open(root / "env.sh", "w") as f:
        for k, v in env.items():
            f.write(f"export {k}={shlex.quote(v)}\n")

    setup = {"payload_sha256": s.sha, "env": env, "steps": s.steps, "imports": found}
    (s.results / "setup.json").write_text(json.dumps(setup, indent=2) + "\n")
    bad = [k for k, v in s.steps.items() if not v["ok"]]
    print(f"lmrec-gpu: setup {'ok' if not bad else 'had failures: ' + ', '.join(bad)} "
          f"({sum(v['seconds'] for v in s.steps.values()):.0f} s); {s.results / 'setup.json'}")
    return 0 if s.steps["verify_imports"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
