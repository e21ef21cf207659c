"""What `prepare.sh` builds on the development machine for the GPU check (lmrec's public API only).

    stage.py data --source SPEC --out DIR [--items N]      items.jsonl + interactions.jsonl (jsonl: spec)
    stage.py model --src DIR --out DIR                     the base model with fp16 safetensors
    stage.py reference --bundle DIR --data DIR --out DIR   CPU fp32 vectors and search results to compare with
    stage.py meta --out FILE [--extra JSON]                versions and git state of what was staged
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
# Model files AutoModel/AutoTokenizer need; the sentence-transformers extras stay behind.
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
LONG_TEXTS = 64  # texts far over the bundle's max length (truncation must agree too)
QUERIES = 200


def write_data(source: str, out: Path, items: int = 0) -> dict[str, Any]:
    """The catalogue and interactions of `source` as `jsonl:` files. With `items` > 0, the `items`
    most interacted-with items and only the interactions on them (users keep their order)."""
    from lmrec import load_dataset

    ds = load_dataset(source)
    keep = np.arange(ds.n_items)
    if 0 < items < ds.n_items:
        counts = np.bincount(np.concatenate(ds.sequences), minlength=ds.n_items)
        keep = np.sort(np.argsort(-counts, kind="stable")[:items])
    kept = np.zeros(ds.n_items, dtype=bool)
    kept[keep] = True
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        for i in keep:
            f.write(json.dumps({"id": ds.item_ids[i], "text": ds.item_texts[i]}, ensure_ascii=False) + "\n")
    users = interactions = 0
    with open(out / "interactions.jsonl", "w", encoding="utf-8") as f:
        for user, seq in zip(ds.user_ids, ds.sequences, strict=True):
            seq = [int(i) for i in seq if kept[i]]
            if len(seq) < 3:
                continue
            users += 1
            interactions += len(seq)
            for i in seq:
                f.write(json.dumps({"user": user, "item": ds.item_ids[i]}, ensure_ascii=False) + "\n")
    return {"source": source, "items": int(len(keep)), "users": users, "interactions": interactions}


def write_model(src: Path, out: Path) -> dict[str, Any]:
    """`src`'s weights as fp16 safetensors plus its config and tokenizer files: `AutoModel` loads
    the same (fp16-rounded) weights as the bundle's fp16 graph holds."""
    from safetensors.numpy import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = load_file(str(src / "model.safetensors"))
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in weights.items()}
    save_file(half, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
    return {"source": str(src), "tensors": len(half), "bytes": (out / "model.safetensors").stat().st_size}


def _long_texts(texts: list[str], n: int) -> list[str]:
    """Texts of three to five catalogue texts each: far over 128 tokens."""
    rng = np.random.default_rng(0)
    return [" ".join(texts[j] for j in rng.choice(len(texts), size=int(rng.integers(3, 6)), replace=False))
            for _ in range(n)]


def _query(text: str) -> str:
    """A search query from an item text: its first field (the title), at most 12 words."""
    return " ".join(text.split(". ")[0].split()[:12]) or text[:40]


def write_reference(bundle: Path, data: Path, out: Path, queries: int = QUERIES,
                    long: int = LONG_TEXTS) -> dict[str, Any]:
    """CPU fp32 vectors of every catalogue text (+ `long` over-long texts) and the top-10 search
    results of `queries` title queries, through the SDK on the full bundle."""
    from lmrec import Recommender

    ids, texts = [], []
    with open(data / "items.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["id"])
            texts.append(row["text"])
    extra = _long_texts(texts, long)
    rec = Recommender.load(bundle, device="cpu", precision="fp32")
    # Embedded here from items.jsonl's texts as the checks read them, never taken from the bundle's
    # item_vectors.npy: the export read them through the jsonl loader, which decodes HTML entities
    # (one Office text holds "&reg;"), so those rows can be of another string (stop 51's H200 run).
    catalogue = rec.embed_texts(texts)
    vectors = np.concatenate([catalogue, rec.embed_texts(extra)])
    picks = np.linspace(0, len(texts) - 1, num=min(queries, len(texts))).astype(int)
    qs = [_query(texts[i]) for i in picks]
    top = [[r[0] for r in rec.search(q, k=10)] for q in qs]
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "vectors.npy", vectors.astype(np.float32))
    ref = {
        "what": "CPU fp32 (ONNX Runtime, the bundle's item_encoder.onnx) through lmrec's SDK",
        "device": rec.device, "precision": rec.precision, "dim": int(vectors.shape[1]),
        "vectors": "vectors.npy: rows = the items of data/items.jsonl in file order, then long_texts",
        "item_ids": ids, "long_texts": extra, "queries": qs, "search_top10": top,
        "truncated_texts": int(rec.truncated_texts),
        "bundle_manifest": json.loads((bundle / "manifest.json").read_text()).get("files", {}).get(
            "item_encoder.fp16.onnx"),
    }
    (out / "reference.json").write_text(json.dumps(ref, ensure_ascii=False) + "\n")
    rec.close()
    return {"texts": len(texts) + len(extra), "queries": len(qs)}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def write_meta(out: Path, extra: dict[str, Any]) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    import lmrec

    meta = {
        "git_head": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "lmrec_version": lmrec.__version__,
        "lmrec_path": str(Path(lmrec.__file__).parent),
        "python": platform.python_version(),
        "packages": {d: _version(d) for d in ("torch", "transformers", "onnxruntime", "onnx", "tokenizers",
                                              "numpy", "hnswlib", "grpcio", "protobuf")},
        **extra,
    }
    out.write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("--source", required=True)
    d.add_argument("--out", required=True, type=Path)
    d.add_argument("--items", type=int, default=0)
    m = sub.add_parser("model")
    m.add_argument("--src", required=True, type=Path)
    m.add_argument("--out", required=True, type=Path)
    r = sub.add_parser("reference")
    r.add_argument("--bundle", required=True, type=Path)
    r.add_argument("--data", required=True, type=Path)
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--queries", type=int, default=QUERIES)
    r.add_argument("--long", type=int, default=LONG_TEXTS)
    t = sub.add_parser("meta")
    t.add_argument("--out", required=True, type=Path)
    t.add_argument("--extra", default="{}")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cmd == "data":
        print(json.dumps(write_data(args.source, args.out, args.items)))
    elif args.cmd == "model":
        print(json.dumps(write_model(args.src, args.out)))
    elif args.cmd == "reference":
        print(json.dumps(write_reference(args.bundle, args.data, args.out, args.queries, args.long)))
    else:
        write_meta(args.out, json.loads(args.extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
