"""A tiny random Llama and word-level tokenizer, built and saved in a test's folder: a local
model that transformers loads like a real one, in a second, without any download."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest


def build_tiny_llama(
    folder: Path, words: Sequence[str], *, layers: int = 2, lowercase: bool = False
) -> Path:
    """Save a ``layers``-layer Llama (hidden size 16) whose vocabulary is ``words``, the
    digits 0-24 and [UNK]/[PAD]/[EOS], with its tokenizer, into ``folder``; skips the test
    without torch, transformers or tokenizers."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {w: n for n, w in enumerate(["[UNK]", "[PAD]", "[EOS]", *words, *map(str, range(25))])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = tokenizers.normalizers.Lowercase()
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]"
    )
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=1,
        eos_token_id=2,
        bos_token_id=2,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
