"""ONNX graph work behind the export: torch → ONNX, ORT fusion, the fp16 variant, projection (int8: `_quantise`).

The graph ends in mean pooling and L2 normalisation, so the SDK feeds token ids and gets sentence
vectors back with no post-processing. The legacy TorchScript exporter is used on purpose: it needs
no onnxscript, and with eager attention its graph is the one ONNX Runtime's BERT optimizer fuses
completely (Attention, SkipLayerNormalization, BiasGelu, EmbedLayerNormalization).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from lmrec import LmrecError

OPSET = 17
OUTPUT = "sentence_embedding"
# ORT's transformer optimizer knows these encoder families under model_type "bert".
_ORT_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "distilbert": "bert",
                    "electra": "bert"}


def export_torch(encoder: Any, path: Path, opset: int = OPSET) -> list[str]:
    """Write the pooled, normalised encoder as ONNX with dynamic batch and sequence axes; returns its inputs."""
    import torch

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in encoder.tokenizer.model_input_names]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise LmrecError(f"base model {encoder.name}: tokenizer inputs {encoder.tokenizer.model_input_names} "
                         "lack input_ids/attention_mask (not a text encoder lmrec can export)")

    class Pooled(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    sample = encoder.tokenizer(["an example item text for tracing the graph", "short"], padding=True,
                               return_tensors="pt")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[OUTPUT] = {0: "batch"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter warns about itself
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(Pooled(encoder.model).eval(), tuple(sample[n] for n in names), str(path),
                          input_names=names, output_names=[OUTPUT], dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    return names


def optimise(src: Path, dst: Path, config: Any) -> dict[str, int]:
    """ORT transformer fusion of the fp32 graph; returns the fused operator counts."""
    from onnxruntime.transformers import optimizer

    model_type = _ORT_MODEL_TYPES.get(config.model_type)
    if model_type is None:  # unknown family: ORT's generic graph optimisations only
        model = optimizer.optimize_model(str(src), model_type="bert", opt_level=1, only_onnxruntime=True)
        model.save_model_to_file(str(dst))
        return {}
    model = optimizer.optimize_model(str(src), model_type=model_type, num_heads=config.num_attention_heads,
                                     hidden_size=config.hidden_size)
    model.save_model_to_file(str(dst))
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and activations for CUDA; inputs and the output stay as in the fp32 graph."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(dst))


def append_projection(path: Path, weight: np.ndarray, bias: np.ndarray) -> None:
    """Rewrite the graph at `path` to output normalise(x @ weight + bias) instead of x (in fp32)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    full = OUTPUT + "_full"
    for node in graph.node:
        node.output[:] = [full if o == OUTPUT else o for o in node.output]
    graph.initializer.extend([numpy_helper.from_array(weight.astype(np.float32), "projection_weight"),
                              numpy_helper.from_array(bias.astype(np.float32), "projection_bias")])
    graph.node.extend([
        helper.make_node("MatMul", [full, "projection_weight"], ["projection_matmul"], name="ProjectionMatMul"),
        helper.make_node("Add", ["projection_matmul", "projection_bias"], ["projection_add"], name="ProjectionAdd"),
        helper.make_node("LpNormalization", ["projection_add"], [OUTPUT], name="ProjectionNormalize", axis=-1, p=2),
    ])
    graph.output[0].type.tensor_type.shape.dim[-1].dim_value = int(weight.shape[1])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
