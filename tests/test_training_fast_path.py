"""The optimised training step equals the plain one: length groups, reused originals, sampled levels."""

from __future__ import annotations

import itertools

import pytest
import torch

from realspo.spo.head import DegreeHead, degree_loss
from realspo.spo.variants import SPOConfig, plan_variants
from realspo.toy_models import build_causal_lm
from realspo.training.data import PairCollator, PairDataset, PreferencePair
from realspo.training.logprobs import (
    grouped_hidden_states,
    last_hidden_states,
    length_groups,
    response_logps,
)
from realspo.training.step import build_model, forward_batch
from realspo.training.tokenization import collate, tokenize_pair
from realspo.training.train_config import TrainConfig

VOCAB = 61
# right-padded sequences of very different lengths, so the grouped pass splits them
SEQUENCES = [([1, *range(3, 33), 2], 10), ([1, 5, 6, 2], 2), ([1, *range(7, 37), 2], 28),
             ([1, 8, 9, 10, 2], 3), ([1, *range(11, 25), 2], 6)]
PAIRS = [
    ("Human: How do I bake bread? Assistant:",
     "To bake bread, mix flour, water, yeast and salt in a large bowl. Knead the dough for ten "
     "minutes, then let the dough rise in a warm place for one hour.",
     "Bread needs an oven."),
    ("Human: Tell me about Paris. Assistant:",
     "Paris is the capital of France. The Seine river flows through Paris. Visitors love the "
     "Eiffel Tower and the old museums along the river banks.",
     "Paris is a large city in northern France with famous museums, wide boulevards, old "
     "bridges, busy cafes and a long history of art and science."),
    ("Human: How do I boil an egg? Assistant:",
     "Put the egg in boiling water for nine minutes, then cool it under cold running water.",
     "I am sorry, but I cannot help with that request about cooking eggs today."),
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return build_causal_lm(VOCAB, hidden_size=32, num_layers=2, num_heads=4, seed=2)


def test_length_groups_cover_every_index_once_and_split_distant_lengths():
    groups = length_groups([100, 5, 98, 6, 99, 4], overhead=8)
    assert sorted(i for g in groups for i in g) == list(range(6))
    assert [sorted(g) for g in groups] == [[0, 2, 4], [1, 3, 5]]


def test_length_groups_keep_one_group_when_a_call_costs_more_than_the_padding():
    assert length_groups([10, 9, 8, 7], overhead=32) == [[0, 1, 2, 3]]


def test_grouped_hidden_states_equal_one_padded_call_at_every_real_position(model):
    batch = collate(SEQUENCES, pad_id=0)
    plain = last_hidden_states(model, batch["input_ids"], batch["attention_mask"])
    grouped = grouped_hidden_states(model, batch["input_ids"], batch["attention_mask"], overhead=1)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(grouped[real], plain[real], rtol=1e-4, atol=1e-5)
    assert len(length_groups(batch["attention_mask"].sum(1).tolist(), 1)) > 1


def test_grouped_log_probs_and_gradients_equal_the_plain_ones(model):
    batch = collate(SEQUENCES, pad_id=0)
    weight = model.model.layers[0].self_attn.q_proj.weight
    results = []
    for grouped in (False, True):
        sums, n_tokens, _ = response_logps(model, **batch, chunk_size=8, group_by_length=grouped)
        results.append((sums.detach(), n_tokens, torch.autograd.grad(sums.sum(), weight)[0]))
    (plain, n_plain, g_plain), (fast, n_fast, g_fast) = results
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=0)
    assert n_fast.tolist() == n_plain.tolist()
    torch.testing.assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-6)


def test_always_original_keeps_level_zero_and_weights_sum_to_one_per_response():
    cfg = SPOConfig(levels=4, sample_levels=1)
    planned = plan_variants(["p"] * 3, [c for _, c, _ in PAIRS], [r for _, _, r in PAIRS], cfg, step=3,
                            always_original=True)
    by_response: dict[tuple[int, bool], list] = {}
    for v in planned:
        by_response.setdefault((v.pair, v.from_chosen), []).append(v)
    assert by_response
    for examples in by_response.values():
        assert [v.level for v in examples][0] == 0 and len(examples) == 2
        assert sum(v.weight for v in examples) == pytest.approx(1.0)


def test_always_original_weights_match_the_all_levels_loss_in_expectation():
    cfg = SPOConfig(levels=4, sample_levels=1, seed=5)
    totals = [0.0] * 4
    steps = 600
    for step in range(steps):
        for v in plan_variants(["p"], [PAIRS[1][1]], [PAIRS[1][1]], cfg, step, always_original=True):
            if v.from_chosen:
                totals[v.level] += v.weight / steps
    assert totals == pytest.approx([0.25] * 4, abs=0.03)  # all levels: 1/D each


def test_sampling_every_level_gives_uniform_weights_and_no_draw():
    cfg = SPOConfig(levels=3, sample_levels=2)  # k >= D - 1: all levels
    planned = plan_variants(["p"], [PAIRS[0][1]], [PAIRS[0][2]], cfg, step=0, always_original=True)
    assert [(v.level, v.weight) for v in planned if v.from_chosen] == [(d, pytest.approx(1 / 3)) for d in range(3)]


def test_weighted_degree_loss_with_equal_weights_is_the_plain_mean():
    torch.manual_seed(0)
    head, pooled, labels = DegreeHead(8, 4), torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    plain = degree_loss(head, pooled, labels)
    weighted = degree_loss(head, pooled, labels, torch.full((6,), 0.25))
    torch.testing.assert_close(weighted[0], plain[0])
    torch.testing.assert_close(weighted[1], plain[1])


@pytest.fixture(scope="module")
def spo_setup(tiny_model_dir):
    from realspo.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    cfg = TrainConfig(data="unused", model=tiny_model_dir, out="unused", loss="sigmoid", spo=True,
                      spo_levels=4, batch_size=3, max_length=256)
    cfg.validate()
    pairs = [PreferencePair(p, c, r, f"row {i}") for i, (p, c, r) in enumerate(PAIRS)]
    for pair in pairs:  # a reference that differs from the policy, so the loss is not log 2
        pair.ref_chosen, pair.ref_rejected = -40.0, -45.0
    dataset = PairDataset(pairs, tokenizer, cfg.max_length, cfg.truncation)
    assert dataset.truncated == 0
    batch = PairCollator(tokenizer.pad_token_id, True)([dataset[i] for i in range(len(pairs))])
    torch.manual_seed(0)
    model = build_model(cfg, load_model(tiny_model_dir, dtype=torch.float32))
    return cfg, tokenizer, batch, model


@pytest.mark.parametrize("sample_levels", [1, None])
def test_fast_step_gives_the_plain_step_losses_and_gradients(spo_setup, sample_levels, monkeypatch):
    import realspo.training.logprobs

    monkeypatch.setattr(realspo.training.logprobs, "group_overhead", lambda device: 1)  # split into many groups
    cfg, tokenizer, batch, model = spo_setup
    cfg.spo_sample_levels = sample_levels
    results = {}
    for fast in (False, True):
        model.zero_grad()
        out = forward_batch(model, batch, cfg.batch_settings(), tokenizer, spo_step=7, fast=fast)
        out.loss.backward()
        grads = [p.grad.clone() for p in itertools.chain(model.policy.parameters(), model.head.parameters())
                 if p.grad is not None]
        results[fast] = (out, grads)
    (plain, g_plain), (fast, g_fast) = results[False], results[True]
    assert fast.per_pair.names == plain.per_pair.names and fast.sums.names == plain.sums.names
    torch.testing.assert_close(fast.per_pair.values, plain.per_pair.values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.sums.values, plain.sums.values, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.loss, plain.loss, rtol=1e-4, atol=1e-6)
    assert fast.sums["spo/loss"] > 0  # the degree loss took part
    assert fast.tokens < plain.tokens  # the originals were not run twice
    assert len(g_fast) == len(g_plain)
    for a, b in zip(g_fast, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


def test_level_zero_variant_tokens_equal_the_pair_sequence(spo_setup):
    """Reusing the pair sequence for level 0 is exact when the pair is not truncated."""
    from realspo.training.tokenization import tokenize_response

    cfg, tokenizer, _, _ = spo_setup
    prompt, chosen, rejected = PAIRS[0]
    pair = tokenize_pair(tokenizer, prompt, chosen, rejected, cfg.max_length, cfg.truncation)
    for sequence, response in zip(pair.sequences(), (chosen, rejected), strict=True):
        assert sequence == tokenize_response(tokenizer, prompt, response, cfg.max_length)[:2]


@pytest.mark.parametrize(("softcap", "bias"), [(None, False), (0.5, False), (None, True)])
def test_linear_head_backward_equals_autograd(softcap, bias):
    from realspo.training.logprobs import _LinearHeadLogps, _target_logps

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 40, bias=bias)
    hidden, targets, grad = torch.randn(9, 16, requires_grad=True), torch.randint(0, 40, (9,)), torch.randn(9)
    ours = _LinearHeadLogps.apply(hidden, head.weight, head.bias, targets, softcap)
    plain = _target_logps(hidden, targets, head, softcap)
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)
    params = [hidden, head.weight, *([head.bias] if bias else [])]
    for a, b in zip(torch.autograd.grad((ours * grad).sum(), params),
                    torch.autograd.grad((plain * grad).sum(), params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_linear_head_under_bf16_autocast_matches_checkpointed_autograd():
    from torch.utils.checkpoint import checkpoint

    from realspo.training.logprobs import _LinearHeadLogps, _target_logps

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 40, bias=False)
    hidden, targets = torch.randn(9, 16, requires_grad=True), torch.randint(0, 40, (9,))
    results = []
    for fn in (lambda: _LinearHeadLogps.apply(hidden, head.weight, None, targets, None),
               lambda: checkpoint(_target_logps, hidden, targets, head, None, use_reentrant=False)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = fn()
        results.append((out.detach(), torch.autograd.grad(out.sum(), [hidden, head.weight])))
    (a, grads_a), (b, grads_b) = results
    torch.testing.assert_close(a, b)
    for x, y in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(x, y, rtol=2e-2, atol=2e-3)  # bf16 products on both sides
