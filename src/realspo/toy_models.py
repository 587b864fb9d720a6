"""Tiny Hugging Face models built entirely offline.

Used by the tests, the benchmarks and the proving ground: a byte-level BPE tokenizer trained
with ``tokenizers`` on the given texts, and a Llama-architecture causal LM built from a
config. Both are saved with ``save_pretrained`` (safetensors), so everything downstream loads
them through the same ``from_pretrained`` path as any hub model.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE ``PreTrainedTokenizerFast`` trained on ``texts`` (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
    )


def build_causal_lm(vocab_size: int, *, hidden_size: int = 64, num_layers: int = 2,
                    num_heads: int = 4, intermediate_size: int | None = None,
                    max_positions: int = 512, seed: int = 0, pad_token_id: int = 0,
                    bos_token_id: int = 1, eos_token_id: int = 2):
    """A randomly initialised Llama-style ``LlamaForCausalLM`` of the given size."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, num_key_value_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_positions, pad_token_id=pad_token_id,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny_model(out_dir: str | Path, texts: Iterable[str], *, vocab_size: int = 512,
                    seed: int = 0, **model_kwargs) -> Path:
    """Train a tokenizer on ``texts``, build a tiny causal LM, save both to ``out_dir``."""
    out = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    model = build_causal_lm(
        len(tokenizer), seed=seed, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **model_kwargs,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
