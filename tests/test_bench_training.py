"""The training benchmarks compare like with like: their workload suits SPO, and both tools
see the same tokens. No timing here."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from realspo.spo.variants import SPOConfig, variants_for
from realspo.toy_models import train_tokenizer
from realspo.training.tokenization import tokenize_response

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module("bench_training")


@pytest.fixture(scope="module")
def words(bench):
    return bench.make_lexicon(0, 300), bench._stopwords()


def test_workload_texts_have_the_asked_length_and_a_degree_ladder(bench, words):
    rng = np.random.default_rng(0)
    texts = [bench.make_text(rng, *words, n) for n in (20, 60, 150)]
    assert [len(t.split()) for t in texts] == [20, 60, 150]
    assert all(variants_for(t, SPOConfig(levels=4)) is not None for t in texts)


def test_realspo_tokenizes_a_workload_pair_as_trl_does(bench, words):
    """TRL tokenizes prompt + response + EOS as one text; realspo tokenizes them apart. With
    the benchmark's leading space the ids agree, so tokens/s counts the same tokens."""
    rng = np.random.default_rng(1)
    tokenizer = train_tokenizer([bench.make_text(rng, *words, 30) for _ in range(200)], vocab_size=600)
    for n in (5, 40):
        prompt, response = bench.make_text(rng, *words, n), " " + bench.make_text(rng, *words, 2 * n)
        ids, start, truncated = tokenize_response(tokenizer, prompt, response, max_length=1024)
        assert not truncated and start == len(tokenizer(prompt)["input_ids"])
        assert ids == tokenizer(prompt + response + tokenizer.eos_token)["input_ids"]


def test_smollm2_flop_basis_counts_every_parameter_of_a_llama_model(tiny_model_dir):
    """The MFU's N_body + N_head (+ norms) is the model's parameter count (tied embeddings)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    smollm2 = importlib.import_module("smollm2")
    from realspo.models import load_model

    counts = smollm2.param_counts(Path(tiny_model_dir))
    model = load_model(tiny_model_dir)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["head"] == model.get_output_embeddings().weight.numel()
    assert smollm2.step_flops(counts, tokens=10, scored=4, lora=False) == 6 * (counts["body"] * 10 + counts["head"] * 4)
    assert smollm2.step_flops(counts, tokens=10, scored=4, lora=True) == 4 * (counts["body"] * 10 + counts["head"] * 4)
