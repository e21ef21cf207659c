"""A tiny random BERT (hidden 32, 2 layers, 2 heads) with a WordPiece tokenizer built from the texts:
a real Hugging Face model folder that exports, fuses and quantises like MiniLM, in seconds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _vocab(texts: Sequence[str], normalizer: Any, pre_tokenizer: Any, size: int) -> dict[str, int]:
    """Special tokens, every character (alone and as a continuation), then the most frequent words
    (ties by spelling). The `tokenizers` WordPiece trainer breaks ties in hash order, so its
    vocabulary, and with it the model and its int8 error, changed from run to run."""
    words = Counter(w for t in texts for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(t)))
    chars = sorted({c for w in words for c in w})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    known = set(tokens)
    for w, _ in sorted(words.items(), key=lambda t: (-t[1], t[0])):
        if len(tokens) >= size:
            break
        if w not in known:
            tokens.append(w)
            known.add(w)
    return {t: i for i, t in enumerate(tokens)}


def build_tiny_bert(path: Path, texts: Sequence[str], seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    tok = Tokenizer(models.WordPiece(_vocab(texts, normalizer, pre_tokenizer, 400), unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer = normalizer, pre_tokenizer
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, initializer_range=0.2)
    BertModel(config).save_pretrained(path)
    return path
