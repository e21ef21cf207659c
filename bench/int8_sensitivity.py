"""The int8 fallback's per-node pass on the texts within SENSITIVITY_TOKENS (what ships) against the
pass on all 256 statistics texts (what stop 43's bundles were built with), on trained bundles.

    cd /work/main && HF_HUB_OFFLINE=1 taskset -c 0 .venv/bin/python bench/int8_sensitivity.py \\
        out/q44/amazon-office-warm-s1 out/q43/movielens-latest-small-cold-s0 \\
        --json bench/results/int8-sensitivity/office-s1-movielens-s0.json

Per bundle: its fp32 encoder graph (the trained adapter's projection taken off again, as the export
quantises before adding it) is quantised twice, one ONNX Runtime thread, on the calibration texts the
export drew for that bundle's data and seed. Reported for each: build seconds, texts per node,
the nodes kept fp32, the calibration figures; and how the two passes rank the nodes (Spearman over
all of them, overlap of the top 1-6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from half_embeddings import over_bundles  # bench/ is the script's folder
from lmrec import load_dataset
from lmrec.trainer.export import calibration_sample, quantise_int8
from scipy.stats import spearmanr

PROJECTION_NODES = {"ProjectionMatMul", "ProjectionAdd", "ProjectionNormalize"}  # what append_projection adds
EVERY_TEXT = 10**9  # tokens: the pass runs every statistics text


def _encoder_graph(bundle: Path, output: str, width: int, dst: Path) -> Path:
    """The bundle's fp32 graph without the projection the export appends after quantising."""
    model = onnx.load(str(bundle / "item_encoder.onnx"))
    graph = model.graph
    if any(n.name in PROJECTION_NODES for n in graph.node):
        kept = [n for n in graph.node if n.name not in PROJECTION_NODES]
        del graph.node[:]
        graph.node.extend(kept)
        for node in graph.node:
            node.output[:] = [output if o == output + "_full" else o for o in node.output]
        weights = [i for i in graph.initializer if i.name not in ("projection_weight", "projection_bias")]
        del graph.initializer[:]
        graph.initializer.extend(weights)
        graph.output[0].type.tensor_type.shape.dim[-1].dim_value = width
    onnx.save(model, str(dst))
    return dst


def _measure(bundle: Path, work: Path) -> dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    data = load_dataset(manifest["data"]["spec"])
    seed = int(manifest["training"]["seed"])
    rng = np.random.default_rng(seed)  # the export's draw: parity sample, then calibration apart from it
    parity = np.sort(rng.choice(data.n_items, min(manifest["parity_texts"], data.n_items), replace=False))
    texts = calibration_sample(data.item_texts, parity, seed)
    src = _encoder_graph(bundle, manifest["onnx"]["output"], manifest["encoder_dim"], work / "fp32.onnx")
    runs = {name: quantise_int8(src, work / "int8.onnx", texts, bundle / "tokenizer.json", manifest["max_length"],
                                threads=1, **options)
            for name, options in (("shipped", {}), ("all_statistics_texts", {"sensitivity_tokens": EVERY_TEXT}))}
    shipped, full = runs["shipped"], runs["all_statistics_texts"]
    out: dict[str, Any] = {name: {"build_seconds": round(r.build_seconds, 1), "sensitivity_texts": r.sensitivity_texts,
                                  "kept_fp32": r.kept_fp32,
                                  "calibration": {k: round(v, 4) for k, v in r.calibration.items()}}
                           for name, r in runs.items()}
    if shipped.sensitivity and full.sensitivity:
        nodes = list(full.sensitivity)
        order = {name: sorted(nodes, key=lambda n: -r.sensitivity[n]) for name, r in runs.items()}
        out["spearman"] = round(float(spearmanr([shipped.sensitivity[n] for n in nodes],
                                                [full.sensitivity[n] for n in nodes])[0]), 4)
        out["top_k_shared"] = {k: len(set(order["shipped"][:k]) & set(order["all_statistics_texts"][:k]))
                               for k in range(1, 7)}
    out["build_seconds_saved"] = round(full.build_seconds - shipped.build_seconds, 1)
    return out


if __name__ == "__main__":
    over_bundles(__doc__.split("\n\n")[0], _measure, str)
