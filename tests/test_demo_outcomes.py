"""The demo's extra outcomes: implicit-reward accuracy against a plain computation, the
held-out pairs, and the paired statistics of both outcomes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from realspo.arms.arm_outcomes import (
    Evaluation,
    HeldoutPairs,
    implicit_accuracy_columns,
    paired_outcomes,
    pooled_outcomes,
    response_logps,
)

PROMPTS = ["\n\nHuman: What is the capital of Veloria?\n\nAssistant:",
           "\n\nHuman: How do I care for an orchid?\n\nAssistant:"]
RESPONSES = [" The capital of Veloria is Marnet.", " Marnet.", " I do not know.",
             " Water an orchid once a week.", " Put it in full sun and water it daily."]


def _pairs() -> HeldoutPairs:
    # prompt 0: responses 0 > 1 > 2 (three pairs); prompt 1: 3 > 4 (one pair)
    return HeldoutPairs(prompt_index=np.array([0, 0, 0, 1, 1]), responses=list(RESPONSES),
                        finished=[True, True, False, True, True],
                        better=np.array([0, 0, 1, 3]), worse=np.array([1, 2, 2, 4]),
                        pair_prompt=np.array([0, 0, 0, 1]), reference_logps=np.zeros(5))


def _plain_logp(model, tokenizer, prompt: str, response: str, finished: bool) -> float:
    """Sum of log p(token | prefix) over the response tokens, one sequence at a time."""
    from realspo.training.tokenization import tokenize_response

    ids, start, _ = tokenize_response(tokenizer, prompt, response, 128, finished=finished)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return float(sum(logp[t - 1, ids[t]] for t in range(start, len(ids))))


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    from realspo.generation.sampling import load_generator_model

    torch.manual_seed(0)
    reference, tokenizer = load_generator_model(tiny_model_dir, device="cpu")
    policy, _ = load_generator_model(tiny_model_dir, device="cpu")
    with torch.no_grad():  # a "trained" policy: the reference with perturbed weights
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return policy, reference, tokenizer


def test_implicit_reward_accuracy_matches_a_plain_computation(models, one_thread):
    policy, reference, tokenizer = models
    pairs, plan = _pairs(), SimpleNamespace(max_length=128)
    pairs.reference_logps = response_logps(reference, tokenizer, PROMPTS, pairs, plan)
    logps = response_logps(policy, tokenizer, PROMPTS, pairs, plan)
    plain = {name: np.array([_plain_logp(m, tokenizer, PROMPTS[t], r, f) for t, r, f in
                             zip(pairs.prompt_index, RESPONSES, pairs.finished, strict=True)])
             for name, m in (("policy", policy), ("reference", reference))}
    np.testing.assert_allclose(logps, plain["policy"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pairs.reference_logps, plain["reference"], rtol=1e-4, atol=1e-4)
    reward = 0.1 * (plain["policy"] - plain["reference"])
    right = [float(reward[b] > reward[w]) for b, w in zip(pairs.better, pairs.worse, strict=True)]
    columns = implicit_accuracy_columns(pairs, logps, beta=0.1, n_prompts=2)
    assert columns.tolist() == [[sum(right[:3]), 3.0], [right[3], 1.0]]


def test_the_reference_itself_scores_one_half():
    pairs = _pairs()
    pairs.reference_logps = np.array([-3.0, -5.0, -1.0, -2.0, -9.0])
    columns = implicit_accuracy_columns(pairs, pairs.reference_logps.copy(), beta=0.1, n_prompts=3)
    assert columns.tolist() == [[1.5, 3.0], [0.5, 1.0], [0.0, 0.0]]


def test_accuracy_counts_pairs_where_the_better_response_gains_more():
    pairs = _pairs()
    # rewards 0.1 * logps: response 0 highest, 2 above 1, 4 above 3
    columns = implicit_accuracy_columns(pairs, np.array([5.0, 1.0, 2.0, 0.0, 3.0]), 0.1, 2)
    assert columns.tolist() == [[2.0, 3.0], [0.0, 1.0]]  # (0,1) (0,2) right, (1,2) (3,4) wrong


def _run(seed: int, samples: np.ndarray, logps: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(seed=seed, rewards=samples[:, 0], sample_rewards=samples,
                           heldout_logps=logps)


def test_pooled_and_paired_outcomes_are_the_plain_means():
    pairs = {0: _pairs(), 1: _pairs()}
    rng = np.random.default_rng(0)
    a = [_run(s, rng.normal(size=(2, 3)), rng.normal(size=5)) for s in (0, 1)]
    b = [_run(s, rng.normal(size=(2, 3)), rng.normal(size=5)) for s in (0, 1)]
    pooled = pooled_outcomes(a, pairs, 0.1, 200)
    assert pooled["mean_reward_samples"]["estimate"] == pytest.approx(
        np.mean([r.sample_rewards.mean() for r in a]))
    acc = [implicit_accuracy_columns(pairs[r.seed], r.heldout_logps, 0.1, 2) for r in a]
    assert pooled["implicit_reward_accuracy"]["estimate"] == pytest.approx(
        sum(c[:, 0].sum() for c in acc) / 8)
    assert pooled["implicit_reward_accuracy"]["per_seed"] == [c[:, 0].sum() / 4 for c in acc]
    diff = paired_outcomes(a, b, pairs, 0.1, 200)
    expected = np.mean([ra.sample_rewards.mean() - rb.sample_rewards.mean() for ra, rb in zip(a, b, strict=True)])
    assert diff["mean_reward_samples"]["difference"] == pytest.approx(expected)
    acc_b = [implicit_accuracy_columns(pairs[r.seed], r.heldout_logps, 0.1, 2) for r in b]
    assert diff["implicit_reward_accuracy"]["difference"] == pytest.approx(
        (sum(c[:, 0].sum() for c in acc) - sum(c[:, 0].sum() for c in acc_b)) / 8)
    for outcome in diff.values():
        assert outcome["ci_low"] <= outcome["difference"] <= outcome["ci_high"]
        # two seeds: (t_0.975,1 + t_0.8,1) x se = (12.706 + 1.376) x se
        assert outcome["mde"] == pytest.approx(14.08 * outcome["se"], rel=1e-3)
        assert 0 < outcome["p"] <= 1


def test_heldout_pairs_keep_distinct_texts_and_drop_oracle_ties(monkeypatch):
    from realspo.arms import arm_outcomes as outcomes

    evaluation = Evaluation(responses=["a", "x"], rewards=np.array([1.0, 0.0]),
                            sample_rewards=np.array([[1.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0]]),
                            samples=[["a", "a", "b", "c"], ["x", "", "y", "z"]],
                            finished=[[True, True, True, False], [True, True, True, True]])
    monkeypatch.setattr(outcomes, "response_logps", lambda *a, **k: np.zeros(len(a[3].responses)))
    monkeypatch.setattr("realspo.generation.sampling.load_generator_model", lambda *a, **k: (None, None))
    world = SimpleNamespace(test_prompts=["p0", "p1"])
    pairs = outcomes.build_heldout_pairs(evaluation, "unused", SimpleNamespace(n_test_prompts=2, device="cpu"), world)
    assert pairs.responses == ["a", "b", "c", "x", "y", "z"]  # duplicate "a" and empty "" dropped
    assert pairs.finished == [True, True, False, True, True, True]
    # prompt 0: a(1) b(0) c(2): c > a, c > b, a > b; prompt 1: all tie, no pairs
    assert sorted(zip(pairs.better.tolist(), pairs.worse.tolist(), strict=True)) == [(0, 1), (2, 0), (2, 1)]
    assert pairs.pair_prompt.tolist() == [0, 0, 0]
