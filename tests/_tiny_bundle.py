"""A real but tiny bundle for fast SDK tests: a word-level tokenizer, a mean-of-word-embeddings
ONNX encoder (dim 16), topic-clustered items with metadata and popularity, built in well under a
second with the same BundleWriter and index code as a real export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from lmrec import BundleWriter, DataInfo, Manifest, NewItemsInfo, ResidualTable, TextEncoder, UserModelInfo, build_index
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

DIM = 16
TEMPERATURE = 20.0  # the tiny user model's vector length (see _user_model)
TOPICS = {
    "office": ["stapler", "paper", "pen", "ink", "desk", "folder", "binder", "marker"],
    "garden": ["shovel", "seed", "hose", "soil", "rake", "flower", "pot", "grass"],
    "kitchen": ["knife", "pan", "spoon", "bowl", "oven", "plate", "whisk", "cup"],
    "music": ["guitar", "drum", "piano", "violin", "string", "amp", "pick", "song"],
}
BRANDS = ["Acme", "Zephyr", "Nimbus"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]


def _tokenizer(path: Path) -> None:
    words = SPECIAL + sorted({w for ws in TOPICS.values() for w in ws} | {"item", "blue", "red", "big"})
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.save(str(path))


def _encoder(path: Path, vocab: int, rng: np.random.Generator, dim: int = DIM) -> None:
    table = rng.normal(size=(vocab, dim)).astype(np.float32)
    table[:4] = 0.0  # special tokens carry no meaning
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["emb", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("LpNormalization", ["mean"], ["sentence_embedding"], axis=-1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "tiny_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([1], np.int64), "axis1"),
         numpy_helper.from_array(np.array([2], np.int64), "axis2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _user_model(path: Path, max_history: int) -> None:
    """A user model that is visibly not the mean: the user is their most recent item, times
    TEMPERATURE, as a trained user vector's length is its learned softmax temperature."""
    nodes = [
        helper.make_node("Gather", ["history", "last"], ["recent"], axis=1),
        helper.make_node("Gather", ["mask", "last"], ["recent_mask"], axis=1),
        helper.make_node("Unsqueeze", ["recent_mask", "axis1"], ["m2"]),
        helper.make_node("Mul", ["recent", "m2"], ["masked"]),
        helper.make_node("Mul", ["masked", "temperature"], ["user_vector"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_user_model",
        [helper.make_tensor_value_info("history", TensorProto.FLOAT, ["batch", max_history, DIM]),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["batch", max_history])],
        [helper.make_tensor_value_info("user_vector", TensorProto.FLOAT, ["batch", DIM])],
        [numpy_helper.from_array(np.array(max_history - 1, np.int64), "last"),
         numpy_helper.from_array(np.array([1], np.int64), "axis1"),
         numpy_helper.from_array(np.array(TEMPERATURE, np.float32), "temperature")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def tiny_items(n: int = 120, seed: int = 0) -> tuple[list[str], list[str], list[dict]]:
    rng = np.random.default_rng(seed)
    topics = list(TOPICS)
    ids, texts, metas = [], [], []
    used: set[tuple[str, ...]] = set()
    for i in range(n):
        topic = topics[i % len(topics)]
        while True:  # distinct word sets: no two items share a vector, so rankings have no ties
            words = sorted(rng.choice(TOPICS[topic], size=int(rng.integers(2, 5)), replace=False).tolist())
            if tuple(words) not in used:
                used.add(tuple(words))
                break
        ids.append(f"{topic}-{i}")
        texts.append(" ".join(["item"] + words))
        metas.append({"title": f"{topic.title()} thing {i}", "brand": BRANDS[i % 3], "topic": topic,
                      "tags": [topic, "even" if i % 2 == 0 else "odd"]})
    return ids, texts, metas


def add_tiny_encoder(writer: BundleWriter, dim: int = DIM, seed: int = 0) -> TextEncoder:
    """tokenizer.json and the encoder graph (under all three precision names) into `writer`."""
    _tokenizer(writer.path("tokenizer.json"))
    vocab = Tokenizer.from_file(str(writer.path("tokenizer.json"))).get_vocab_size()
    _encoder(writer.path("item_encoder.onnx"), vocab, np.random.default_rng(seed), dim)
    for variant in ("item_encoder.int8.onnx", "item_encoder.fp16.onnx"):
        writer.add_file(variant, writer.path("item_encoder.onnx"))
    return TextEncoder(writer.path("item_encoder.onnx"), writer.path("tokenizer.json"), 32)


def make_tiny_bundle(out: Path, n_items: int = 120, seed: int = 0, user_model: bool = False,
                     max_history: int = 8, recent: int | None = None, new_items: NewItemsInfo | None = None,
                     trained: int = 80, recent_weight: float = 0.0, text_weight: float = 0.0,
                     centred_text_weight: float = 0.0) -> Path:
    """With `new_items`, the first `trained` items get random residuals (a residual table) and the
    others borrow theirs, as a trained bundle's catalogue does; `recent_weight` turns the user
    model's vectors towards the last 3 items, `text_weight` adds the text term of the last item's
    text and `centred_text_weight` its centred part on new items (UserModelInfo; the index then
    keeps the encoder's text vectors)."""
    rng = np.random.default_rng(seed)
    ids, texts, metas = tiny_items(n_items, seed)
    with BundleWriter(out) as writer:
        vectors = add_tiny_encoder(writer, DIM, seed).embed(texts)
        text = vectors if text_weight or centred_text_weight else None
        if new_items is not None:
            table = ResidualTable(ids[:trained], vectors[:trained],
                                  0.5 * rng.normal(size=(trained, DIM)).astype(np.float32),
                                  new_items)
            table.save(writer.path(Manifest.RESIDUALS))
            vectors = table.apply(ids, vectors)
        writer.add_items(ids, texts, metas)
        writer.add_array("item_vectors.npy", vectors)
        writer.add_array("popularity.npy", rng.integers(0, 1000, size=n_items))
        index = build_index(vectors, ids, text=text)
        index.save(writer.path("index"))
        manifest = Manifest(dim=DIM, max_length=32, template="tiny", index=index.params, data=DataInfo(items=n_items))
        if recent is not None:
            manifest = manifest.replace(recent=recent)
        if new_items is not None:
            manifest = manifest.replace(new_items=new_items)
        if user_model:
            _user_model(writer.path(Manifest.USER_ENCODER), max_history)
            manifest = manifest.replace(user_model=UserModelInfo(max_history=max_history, recent_items=3,
                                                                 recent_weight=recent_weight, text_weight=text_weight,
                                                                 centred_text_weight=centred_text_weight))
        return writer.finish(manifest)
