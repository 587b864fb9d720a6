"""Shared fixtures: a tiny causal LM and tokenizer built offline, once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_CORPUS = [
    "The capital of France is Paris, a city on the river Seine.",
    "Photosynthesis converts sunlight, water and carbon dioxide into glucose and oxygen.",
    "To bake bread, mix flour, water, yeast and salt, then knead and let the dough rise.",
    "Human: How do I boil an egg? Assistant: Put the egg in boiling water for nine minutes.",
    "I am sorry, but I cannot help with that request.",
    "Regular exercise improves heart health, mood and sleep quality.",
    "Python lists are mutable sequences; tuples are immutable.",
    "The mitochondria is the powerhouse of the cell.",
] * 8


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path of a saved tiny Llama-style causal LM with its offline-trained BPE tokenizer."""
    from realspo.toy_models import save_tiny_model

    out = tmp_path_factory.mktemp("tiny-model")
    save_tiny_model(out, TINY_CORPUS, vocab_size=400, hidden_size=32, num_layers=2, num_heads=4)
    return str(out)
