"""The benchmarks compare like with like: their reference paths give realspo's results.

No timing here; these check that the code the benchmarks time as "the reference" produces
the same pairs / embeddings as realspo on the benchmarks' own kind of data (small sizes);
and the harness rewrites only its own section of BENCHMARKS.md.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from realspo.selection.strategies import select_pairs

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def _bench(name: str):
    """Import ``benchmarks/NAME.py`` (the scripts import their sibling ``common``)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def pool():
    bench = _bench("bench_selection")
    n, k = 60, 8
    return bench, bench.make_embeddings(n, k, 64, seed=3), n, k


def test_benchmark_embeddings_are_unit_rows(pool):
    _, emb, n, k = pool
    assert emb.shape == (n * k, 64) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("strategy", ["easy", "hard", "random", "centroid"])
def test_selection_loop_reference_selects_realspos_pairs(pool, strategy):
    bench, emb, n, k = pool
    sel = select_pairs(emb, np.full(n, k), strategy, seed=0)
    loop_pairs, order = bench.loop_select(emb, k, n, strategy, seed=0)
    assert bench.as_pairs(sel) == loop_pairs
    if strategy != "random":  # random ranks by a permutation, not by similarity
        assert sel.group_index.tolist() == order.tolist()


def test_embedding_reference_agrees_with_realspo_within_1e4_cosine(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from realspo.embeddings.embed import embed_with_causal_lm

    bench = _bench("bench_embedding")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    chosen = ["The capital of France is Paris.", "Knead the dough, then let it rise for an hour."]
    rejected = ["I cannot help with that.", "Lists are mutable; tuples are immutable sequences."]
    ours = embed_with_causal_lm(model, tokenizer, chosen + rejected, batch_size=3,
                                show_progress=False)
    padded = bench.reference_pairs(model, tokenizer, chosen, rejected, batch_size=3)
    per_batch = bench.reference_pairs(model, tokenizer, chosen, rejected, batch_size=3,
                                      padding="longest")
    for ref in (padded, per_batch):
        assert ref.shape == ours.shape
        assert (ours * ref).sum(1).min() >= 1 - 1e-4


def test_write_section_replaces_only_its_own_block(tmp_path):
    common = _bench("common")
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# B\n\nhand notes\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\n"
                  "between\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\n")
    common.write_section("a", "new a", md)
    common.write_section("c", "new c", md)
    assert md.read_text() == ("# B\n\nhand notes\n<!-- bench:a -->\nnew a\n<!-- /bench:a -->\n"
                              "between\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\n\n"
                              "<!-- bench:c -->\nnew c\n<!-- /bench:c -->\n")
