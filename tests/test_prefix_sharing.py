"""Prefix sharing (token trees) gives the log-probs, losses and gradients of sequences run apart."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realspo.errors import ConfigError
from realspo.toy_models import build_causal_lm
from realspo.training.data import PairCollator, PairDataset, PreferencePair
from realspo.training.logprobs import grouped_hidden_states, logps_from_hidden
from realspo.training.prefix_tree import (
    pair_groups,
    shared_hidden_states,
    sharing_unsupported,
    token_tree,
    tree_tokens,
)
from realspo.training.step import build_model, forward_batch
from realspo.training.tokenization import collate
from realspo.training.train_config import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = [1, 5, 6, 7, 8]
# rows: the chosen of pairs 0 and 1, their rejected, then a variant of each; pair 0's rejected
# and variant share prompt and response tokens with its chosen
SEQUENCES = [(PROMPT + [9, 10, 11, 12, 2], 5), ([1, 4, 4, 4, 3, 2], 4),
             (PROMPT + [9, 10, 13, 2], 5), ([1, 4, 4, 4, 9, 9, 9, 9, 2], 4),
             (PROMPT + [9, 11, 2], 5), ([1, 4, 4, 4, 9, 2], 4)]
GROUPS = pair_groups(2, [0, 1])


def assert_grad_close(a, b, rtol=1e-4):
    """Gradients agree within ``rtol`` of their norm (elementwise, float summation order moves
    the smallest entries by more than 1e-4 of themselves)."""
    assert float(torch.linalg.norm(a - b)) <= rtol * float(torch.linalg.norm(b)) + 1e-12


def test_token_tree_shares_common_prefixes_and_keeps_each_path():
    tree = token_tree([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 6], [7]])
    assert tree.tokens == [1, 2, 3, 4, 5, 6, 7]
    assert tree.depths == [0, 1, 2, 3, 2, 3, 0]
    assert tree.paths == [[0, 1, 2, 3], [0, 1, 4], [0, 1, 2, 5], [6]]
    for path, sequence in zip(tree.paths, [[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 6], [7]], strict=True):
        assert [tree.tokens[n] for n in path] == sequence


def test_pair_groups_put_variants_with_their_pair():
    assert pair_groups(2, [1, 1, 0]) == [[0, 2, 6], [1, 3, 4, 5]]


def test_trees_run_fewer_tokens_than_the_sequences():
    batch = collate(SEQUENCES, pad_id=0)
    apart = int(batch["attention_mask"].sum())
    # pair 0: chosen 10, rejected 2 new (13, EOS), variant 2 new (11, EOS);
    # pair 1: chosen 6, rejected 5 new (9, 9, 9, 9, EOS), variant 1 new (EOS after its 9)
    assert tree_tokens(batch["attention_mask"], batch["input_ids"], GROUPS) == 14 + 12
    assert apart == 10 + 6 + 9 + 9 + 8 + 6


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_shared_hidden_states_and_gradients_equal_the_sequences_run_apart(implementation):
    model = build_causal_lm(61, hidden_size=32, num_layers=2, num_heads=4, seed=2)
    model.config._attn_implementation = implementation
    batch = collate(SEQUENCES, pad_id=0)
    real = batch["attention_mask"].bool()
    torch.manual_seed(0)
    weights = torch.randn(*batch["input_ids"].shape, 32) * real[..., None]
    results = []
    for hidden_of in (lambda: grouped_hidden_states(model, batch["input_ids"], batch["attention_mask"]),
                      lambda: shared_hidden_states(model, batch["input_ids"], batch["attention_mask"], GROUPS,
                                                   overhead=1)):
        hidden = hidden_of()
        grads = torch.autograd.grad((hidden * weights).sum(), list(model.parameters()))
        results.append((hidden.detach(), grads))
    (apart, g_apart), (shared, g_shared) = results
    torch.testing.assert_close(shared[real], apart[real], rtol=1e-4, atol=1e-5)
    for a, b in zip(g_shared, g_apart, strict=True):
        assert_grad_close(a, b)


def test_a_tree_position_does_not_see_another_branch():
    """Changing a rejected response's tokens leaves the chosen one's states as they were."""
    model = build_causal_lm(61, hidden_size=32, num_layers=2, num_heads=4, seed=2)
    changed = [SEQUENCES[0], SEQUENCES[1], (PROMPT + [30, 31, 32, 33, 34, 35, 2], 5), SEQUENCES[3]]
    groups = pair_groups(2)
    states = []
    for sequences in (SEQUENCES[:4], changed):
        batch = collate(sequences, pad_id=0)
        states.append(shared_hidden_states(model, batch["input_ids"], batch["attention_mask"], groups)[0, :10])
    torch.testing.assert_close(states[0], states[1], rtol=1e-5, atol=1e-6)


def test_unsupported_models_are_named():
    model = build_causal_lm(61, hidden_size=32, num_layers=2, num_heads=4, seed=2)
    assert sharing_unsupported(model, 256) is None
    model.config.sliding_window = 128
    assert "sliding attention window 128" in sharing_unsupported(model, 256)
    assert sharing_unsupported(model, 100) is None
    model.config.sliding_window = None
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in sharing_unsupported(model, 256)


PAIRS = [
    ("How do I bake bread?",
     "To bake bread, mix flour, water, yeast and salt in a large bowl. Knead the dough for ten "
     "minutes, then let the dough rise in a warm place for one hour.",
     "Bread needs an oven and some flour."),
    ("Tell me about Paris.",
     "Paris is the capital of France. The Seine river flows through Paris. Visitors love the "
     "Eiffel Tower and the old museums along the river banks.",
     "Paris is a large city in northern France with famous museums, wide boulevards, old "
     "bridges, busy cafes and a long history of art and science."),
]


def _setup(model_dir, spo):
    from realspo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    models = {}
    for sharing in ("off", "on"):
        cfg = TrainConfig(data="unused", model=model_dir, out="unused", loss="sigmoid", spo=spo,
                          spo_levels=3, batch_size=2, max_length=256, prefix_sharing=sharing)
        cfg.validate()
        torch.manual_seed(0)
        models[sharing] = build_model(cfg, load_model(model_dir, dtype=torch.float32))
        assert models[sharing].share_prefixes is (sharing == "on")
    pairs = [PreferencePair(p, c, r, f"row {i}") for i, (p, c, r) in enumerate(PAIRS)]
    for pair in pairs:
        pair.ref_chosen, pair.ref_rejected = -40.0, -45.0
    dataset = PairDataset(pairs, tokenizer, cfg.max_length, cfg.truncation, chat_template=cfg.chat_template)
    batch = PairCollator(tokenizer.pad_token_id, True)([dataset[i] for i in range(len(pairs))])
    return cfg, tokenizer, batch, models


def _compare_steps(cfg, tokenizer, batch, models):
    results = {}
    for sharing, model in models.items():
        model.zero_grad()
        out = forward_batch(model, batch, cfg.batch_settings(), tokenizer, spo_step=3)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results[sharing] = (out, grads)
    (plain, g_plain), (shared, g_shared) = results["off"], results["on"]
    torch.testing.assert_close(shared.per_pair["logps/chosen"], plain.per_pair["logps/chosen"], rtol=1e-4, atol=0)
    torch.testing.assert_close(shared.per_pair["logps/rejected"], plain.per_pair["logps/rejected"],
                               rtol=1e-4, atol=0)
    torch.testing.assert_close(shared.sums.values, plain.sums.values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(shared.loss, plain.loss, rtol=1e-4, atol=1e-6)
    assert len(g_shared) == len(g_plain) > 0
    for a, b in zip(g_shared, g_plain, strict=True):
        assert_grad_close(a, b)
    return plain


@pytest.mark.parametrize("spo", [False, True])
def test_training_step_with_prefix_sharing_equals_the_plain_step(tiny_model_dir, spo):
    cfg, tokenizer, batch, models = _setup(tiny_model_dir, spo)
    plain = _compare_steps(cfg, tokenizer, batch, models)
    assert bool(plain.sums["spo/loss"] > 0) is spo


def test_smollm2_step_with_prefix_sharing_equals_the_plain_step(smollm2_dir):
    """The real BPE tokenizer and ChatML template: prompt and response tokens from the
    chat-formatted pair, the same log-probs within 1e-4 relative, the same gradients."""
    cfg, tokenizer, batch, models = _setup(smollm2_dir, spo=True)
    assert cfg.chat_template == "auto"
    ids = batch["input_ids"]
    groups = pair_groups(len(PAIRS))
    assert tree_tokens(batch["attention_mask"], ids, groups) < int(batch["attention_mask"].sum())
    _compare_steps(cfg, tokenizer, batch, models)


def test_prefix_sharing_on_for_an_unsupported_model_is_a_config_error(tiny_model_dir):
    from realspo.models import load_model

    cfg = TrainConfig(data="unused", model=tiny_model_dir, out="unused", prefix_sharing="on")
    cfg.validate()
    policy = load_model(tiny_model_dir, dtype=torch.float32)
    policy.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ConfigError, match="--prefix-sharing on: .*flash_attention_2"):
        build_model(cfg, policy)
    cfg.prefix_sharing = "auto"
    assert build_model(cfg, policy).share_prefixes is False


def test_logps_from_shared_states_keep_every_token_count(tiny_model_dir):
    from realspo.models import load_model

    model = load_model(tiny_model_dir, dtype=torch.float32)
    batch = collate([(list(range(3, 20)), 6), (list(range(3, 9)) + [40, 41, 2], 6)], pad_id=0)
    with torch.no_grad():
        hidden = shared_hidden_states(model, batch["input_ids"], batch["attention_mask"], pair_groups(1))
        sums, n = logps_from_hidden(model, hidden, batch["input_ids"], batch["response_mask"])
        ref, n_ref = logps_from_hidden(model, grouped_hidden_states(model, batch["input_ids"],
                                                                    batch["attention_mask"]),
                                       batch["input_ids"], batch["response_mask"])
    assert n.tolist() == n_ref.tolist() == [11, 3]
    torch.testing.assert_close(sums, ref, rtol=1e-5, atol=0)



@pytest.mark.parametrize("model_fixture", ["tiny_model_dir", "smollm2_dir"])
def test_reference_pass_with_prefix_sharing_equals_the_plain_pass(model_fixture, request, tmp_path):
    from realspo.models import load_model, load_tokenizer
    from realspo.training.reference import compute_reference_logps, load_or_compute_reference

    model_dir = request.getfixturevalue(model_fixture)
    model, tokenizer = load_model(model_dir, dtype=torch.float32), load_tokenizer(model_dir)
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS * 2]
    results = {share: compute_reference_logps(model, tokenizer, rows, max_length=256, batch_size=3,
                                              show_progress=False, share_prefixes=share)
               for share in (False, True)}
    for plain, shared in zip(results[False], results[True], strict=True):
        np.testing.assert_allclose(shared, plain, rtol=1e-5)
        assert (plain < 0).all()
    # the cache tells the two apart (float rounding differs), and finds each again
    kwargs = dict(max_length=256, model=model, tokenizer=tokenizer, show_progress=False)
    statuses = [load_or_compute_reference(model_dir, rows, tmp_path, share_prefixes=share, **kwargs)[2]
                for share in (False, True, False, True)]
    assert statuses == ["computed", "computed", "cached", "cached"]


def test_a_left_padded_batch_runs_apart_with_the_same_states():
    model = build_causal_lm(61, hidden_size=32, num_layers=2, num_heads=4, seed=2)
    batch = collate(SEQUENCES[:4], pad_id=0)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    width = ids.shape[1]
    left_ids, left_mask = torch.zeros_like(ids), torch.zeros_like(mask)
    for row, n in enumerate(mask.sum(1).tolist()):  # the same sequences, padded on the left
        left_ids[row, width - n:], left_mask[row, width - n:] = ids[row, :n], 1
    with torch.no_grad():
        shared = shared_hidden_states(model, left_ids, left_mask, pair_groups(2))
        apart = grouped_hidden_states(model, left_ids, left_mask)
    torch.testing.assert_close(shared[left_mask.bool()], apart[left_mask.bool()])
