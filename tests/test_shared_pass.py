"""One forward per candidate serves both the conditioned REAL embedding and the reference
log-prob (`select --strategy margin --conditioned`, the embedding model being the reference):
the shared pass gives what the two separate passes give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realspo.embeddings.embed import embed_with_causal_lm
from realspo.errors import InputError
from realspo.models import load_model, load_tokenizer
from realspo.pipeline.candidate_scores import candidate_logps, embed_and_score
from realspo.schema import PromptGroup

pytestmark = pytest.mark.usefixtures("one_thread")

GROUPS = [
    PromptGroup("a", "How do I boil an egg?", ["Put the egg in boiling water for nine minutes.",
                                               "I cannot help with that.",
                                               "Boil water, add the egg, wait, then cool it"],
                finished=[True, True, False]),
    PromptGroup("b", "Name a prime number.", ["Seven.", "Seven is a prime number, and so is eleven."]),
]


def _separate_passes(model, tokenizer, groups, batch_size):
    prompts = [g.prompt for g in groups for _ in g.responses]
    responses = [r for g in groups for r in g.responses]
    emb = embed_with_causal_lm(model, tokenizer, responses, prompts, batch_size=batch_size,
                               max_length=1024, show_progress=False)
    return emb, candidate_logps(model, tokenizer, groups, batch_size=batch_size)


def _check_equal(model, tokenizer, batch_size):
    emb, logps = embed_and_score(model, tokenizer, GROUPS, batch_size=batch_size)
    ref_emb, ref_logps = _separate_passes(model, tokenizer, GROUPS, batch_size)
    assert emb.shape == ref_emb.shape
    assert (emb * ref_emb).sum(axis=1).min() > 1 - 1e-4  # cosine
    np.testing.assert_allclose(logps, ref_logps, rtol=1e-4)
    assert len(set(np.round(logps, 3))) == len(logps)  # distinct values: rows not mixed up


def test_shared_pass_equals_the_two_passes_on_the_tiny_model(tiny_model_dir):
    model = load_model(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    _check_equal(model, load_tokenizer(tiny_model_dir), batch_size=2)


@pytest.mark.slow
def test_shared_pass_equals_the_two_passes_on_smollm2_with_its_chat_template(smollm2_dir):
    model = load_model(smollm2_dir, dtype=torch.float32, device=torch.device("cpu"))
    _check_equal(model, load_tokenizer(smollm2_dir), batch_size=3)


def test_shared_pass_refuses_a_sequence_over_max_length(tiny_model_dir):
    model = load_model(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    with pytest.raises(InputError, match="max_length=8"):
        embed_and_score(model, load_tokenizer(tiny_model_dir), GROUPS, max_length=8)


@pytest.fixture(scope="module")
def policy_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny causal LM with every weight perturbed: a policy that differs from the reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("policy")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


def test_select_margin_conditioned_uses_one_pass_and_selects_what_two_passes_select(
        tiny_model_dir, policy_dir, tmp_path, monkeypatch):
    import json

    import realspo.embeddings.embed as embed
    import realspo.pipeline.select as select

    data = tmp_path / "pool.jsonl"
    data.write_text("".join(json.dumps({"prompt_id": g.prompt_id, "prompt": g.prompt,
                                        "responses": g.responses}) + "\n" for g in GROUPS))

    def run(out: str):
        cfg = select.SelectConfig(data=str(data), model=tiny_model_dir, policy=policy_dir,
                                  strategy="margin", conditioned=True, out=str(tmp_path / out),
                                  progress=False, save_embeddings=str(tmp_path / f"{out}.npy"))
        cfg.validate()
        return select.select_from_config(cfg)

    calls = []
    monkeypatch.setattr(embed, "embed_responses", lambda *a, **k: calls.append(1) or None)
    shared = run("shared.jsonl")
    assert not calls  # no separate embedding pass
    monkeypatch.undo()
    monkeypatch.setattr(select, "shared_pass", lambda cfg, work: None)
    separate = run("separate.jsonl")
    assert shared.rows == separate.rows
    a, b = np.load(tmp_path / "shared.jsonl.npy"), np.load(tmp_path / "separate.jsonl.npy")
    assert (a * b).sum(axis=1).min() > 1 - 1e-4
