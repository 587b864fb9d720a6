"""Selection beyond REAL: margin, margin-large, design, reward-gap, reward-uncertain.

Each strategy against a brute-force reference on small random inputs; design against exhaustive
search and against the plain (non-lazy) greedy; margins against a plain forward pass of a tiny
policy and reference; rewards through a tiny reward model; the CLI end to end, and its refusals
of bad input (one line, exit 2, nothing written, no model loaded)."""

from __future__ import annotations

import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from realspo.cli import main
from realspo.errors import ConfigError
from realspo.selection.design import (
    exact_greedy_design,
    greedy_design,
    log_det,
    logistic_variance,
)
from realspo.selection.strategies import select_pairs


def _pool(seed: int, n_groups: int = 60, dim: int = 6):
    """Mixed K (1..6) random embeddings, some duplicate texts, and per-response scores."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, size=n_groups)
    n = int(sizes.sum())
    keys = np.arange(n)
    dup = rng.choice(np.arange(1, n), 10, replace=False)
    keys[dup] = keys[dup - 1]
    return (rng.normal(size=(n, dim)).astype(np.float32), sizes, keys,
            rng.normal(size=n), rng.normal(size=n))


def _brute_force(sizes, keys, values, key, pick, descending):
    """Per prompt: the valid pair (i < j, distinct texts) whose ``key(v_i, v_j)`` is smallest
    (``pick="min"``) or largest, first in (i, j) order; then a stable sort across prompts."""
    picks, start = [], 0
    for g, k in enumerate(sizes):
        best = None
        for i, j in itertools.combinations(range(k), 2):
            if keys[start + i] == keys[start + j]:
                continue
            v = key(values[start + i], values[start + j])
            if best is None or (v < best[0] if pick == "min" else v > best[0]):
                best = (v, i, j)
        if best is not None:
            picks.append((g, best[1], best[2], best[0]))
        start += k
    order = sorted(range(len(picks)), key=lambda t: -picks[t][3] if descending else picks[t][3])
    return [picks[t] for t in order]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


BRUTE = {
    "margin": ("implicit_rewards", lambda a, b: abs(a - b), "min", False),
    "margin-large": ("implicit_rewards", lambda a, b: abs(a - b), "max", True),
    "reward-gap": ("rewards", lambda a, b: abs(a - b), "max", True),
    "reward-uncertain": ("rewards", lambda a, b: abs(_sigmoid(a - b) - 0.5), "min", False),
}


@pytest.mark.parametrize("name", sorted(BRUTE))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scored_strategies_match_brute_force(name, seed):
    emb, sizes, keys, rho, r = _pool(seed)
    source, key, pick, descending = BRUTE[name]
    expected = _brute_force(sizes, keys, rho if source == "implicit_rewards" else r, key, pick, descending)
    sel = select_pairs(emb, sizes, name, response_keys=keys, implicit_rewards=rho, rewards=r, seed=seed)
    got = list(zip(sel.group_index.tolist(), sel.index_a.tolist(), sel.index_b.tolist(), strict=True))
    assert got == [(g, i, j) for g, i, j, _ in expected]
    np.testing.assert_allclose(sel.key, [v for *_, v in expected], rtol=1e-9, atol=1e-12)


def test_reward_gap_pairs_each_prompts_highest_and_lowest_reward():
    emb, sizes, keys, rho, r = _pool(5)
    sel = select_pairs(emb, sizes, "reward-gap", rewards=r)  # no duplicates: every pair valid
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for g, a, b in zip(sel.group_index, sel.index_a, sel.index_b, strict=True):
        block = r[starts[g]:starts[g] + sizes[g]]
        assert {a, b} == {int(block.argmax()), int(block.argmin())}


def test_scored_strategies_refuse_missing_scores():
    emb, sizes, keys, rho, r = _pool(0)
    with pytest.raises(ConfigError, match="needs --policy"):
        select_pairs(emb, sizes, "margin")
    with pytest.raises(ConfigError, match="needs --reward-model"):
        select_pairs(emb, sizes, "reward-uncertain", implicit_rewards=rho)
    with pytest.raises(ConfigError, match=r"rewards: expected shape"):
        select_pairs(emb, sizes, "reward-gap", rewards=r[:-1])


# ---- design -----------------------------------------------------------------------------------

def _tiny_design(seed: int, g: int = 5, k: int = 3, d: int = 3):
    rng = np.random.default_rng(seed)
    y = rng.normal(size=(g, k, d)).astype(np.float32)
    valid = np.broadcast_to(np.triu(np.ones((k, k), dtype=bool), 1), (g, k, k)).copy()
    weight = rng.uniform(0.05, 0.25, size=(g, k, k)).astype(np.float32)
    return y, valid, weight


def _logdet_of(y, weight, picks, ridge):
    z = np.asarray([y[g, a].astype(np.float64) - y[g, b] for g, a, b in picks]).reshape(len(picks), -1)
    w = np.asarray([weight[g, a, b] for g, a, b in picks], dtype=np.float64)
    return log_det(z, w, ridge)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget", [2, 3])
def test_design_greedy_is_within_1_minus_1_over_e_of_exhaustive_search(seed, budget):
    y, valid, weight = _tiny_design(seed)
    ridge, (g, k, d) = 0.5, y.shape
    base = d * math.log(ridge)  # log det of the empty design
    best = -math.inf
    pairs = list(itertools.combinations(range(k), 2))
    for prompts in itertools.combinations(range(g), budget):  # at most one pair per prompt
        for choice in itertools.product(pairs, repeat=budget):
            picks = [(p, a, b) for p, (a, b) in zip(prompts, choice, strict=True)]
            best = max(best, _logdet_of(y, weight, picks, ridge))
    lazy = greedy_design(y, valid, weight, budget, ridge)
    exact = exact_greedy_design(y, valid, weight, budget, ridge)
    greedy = _logdet_of(y, weight, list(zip(*lazy[:3], strict=True)), ridge)
    assert greedy - base >= (1 - 1 / math.e) * (best - base) - 1e-9
    for mine, ref in zip(lazy[:3], exact[:3], strict=True):
        np.testing.assert_array_equal(mine, ref)
    np.testing.assert_allclose(lazy[3].sum(), greedy - base, rtol=1e-9)  # gains add up to log det


@pytest.mark.parametrize("per_prompt", [1, 2, 3])
def test_lazy_design_equals_plain_greedy_on_random_pools(per_prompt):
    rng = np.random.default_rng(per_prompt)
    g, k, d = 80, 5, 8
    y = rng.normal(size=(g, k, d)).astype(np.float32)
    valid = np.broadcast_to(np.triu(np.ones((k, k), dtype=bool), 1), (g, k, k)).copy()
    valid[rng.random(valid.shape) < 0.3] = False
    weight = rng.uniform(0.0, 0.25, size=(g, k, k)).astype(np.float32)
    lazy = greedy_design(y, valid, weight, 60, 1.0, per_prompt)
    exact = exact_greedy_design(y, valid, weight, 60, 1.0, per_prompt)
    for mine, ref in zip(lazy, exact, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-9)
    assert np.bincount(lazy[0]).max() <= per_prompt
    assert len(set(zip(*lazy[:3], strict=True))) == len(lazy[0])  # no pair twice


def test_design_through_select_pairs_is_the_exact_greedy_with_margin_weights():
    emb, sizes, keys, rho, _ = _pool(3, dim=5)
    sel = select_pairs(emb, sizes, "design", 20, response_keys=keys, implicit_rewards=rho, design_ridge=0.7)
    # the same problem, built by hand
    g_all, k_max = len(sizes), int(sizes.max())
    y = np.zeros((g_all, k_max, 5), dtype=np.float32)
    valid = np.zeros((g_all, k_max, k_max), dtype=bool)
    weight = np.ones((g_all, k_max, k_max), dtype=np.float32)
    start = 0
    for g, k in enumerate(sizes):
        y[g, :k] = emb[start:start + k]
        for i, j in itertools.combinations(range(k), 2):
            valid[g, i, j] = keys[start + i] != keys[start + j]
            weight[g, i, j] = logistic_variance(rho[start + i] - rho[start + j])
        start += k
    exact = exact_greedy_design(y, valid, weight, 20, 0.7)
    assert sel.group_index.tolist() == exact[0].tolist()
    assert list(zip(sel.index_a.tolist(), sel.index_b.tolist(), strict=True)) == \
        list(zip(exact[1].tolist(), exact[2].tolist(), strict=True))
    np.testing.assert_allclose(sel.key, exact[3], rtol=1e-6)
    part = select_pairs(emb, sizes, "design", 7, response_keys=keys, implicit_rewards=rho, design_ridge=0.7)
    assert part.group_index.tolist() == sel.group_index[:7].tolist()  # a prefix


def test_design_with_several_pairs_per_prompt_and_its_budget():
    emb, sizes, keys, _, _ = _pool(4, dim=5)
    sel = select_pairs(emb, sizes, "design", None, response_keys=keys, pairs_per_prompt=2)
    eligible_pairs = 0
    start = 0
    for k in sizes:
        n_valid = sum(keys[start + i] != keys[start + j] for i, j in itertools.combinations(range(k), 2))
        eligible_pairs += min(2, n_valid)
        start += k
    assert len(sel) == eligible_pairs and np.bincount(sel.group_index).max() == 2
    with pytest.raises(ConfigError, match="can choose only"):
        select_pairs(emb, sizes, "design", eligible_pairs + 1, response_keys=keys, pairs_per_prompt=2)
    with pytest.raises(ConfigError, match="applies only to --strategy design"):
        select_pairs(emb, sizes, "easy", pairs_per_prompt=2)
    with pytest.raises(ConfigError, match="design-ridge must be > 0"):
        select_pairs(emb, sizes, "design", design_ridge=0.0)


def test_projected_design_is_seeded_and_close_to_the_exact_greedy():
    rng = np.random.default_rng(0)
    g, k, dim = 300, 4, 160  # wider than the 64-dim subspace: the projected path
    latent = rng.normal(size=(g, 1, 24)) + 0.7 * rng.normal(size=(g, k, 24))
    emb = (latent @ rng.normal(size=(24, dim)) + 0.3 * rng.normal(size=(g, k, dim))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    flat = emb.reshape(g * k, dim)
    sel = select_pairs(flat, [k] * g, "design", 40, seed=1)
    again = select_pairs(flat, [k] * g, "design", 40, seed=1)
    assert sel.group_index.tolist() == again.group_index.tolist()
    valid = np.broadcast_to(np.triu(np.ones((k, k), dtype=bool), 1), (g, k, k)).copy()
    exact = exact_greedy_design(emb, valid, np.ones((g, k, k), dtype=np.float32), 40, 1.0)
    ones = np.ones((g, k, k), dtype=np.float32)
    ours = _logdet_of(emb, ones, list(zip(sel.group_index, sel.index_a, sel.index_b, strict=True)), 1.0)
    best = _logdet_of(emb, ones, list(zip(*exact[:3], strict=True)), 1.0)
    assert ours >= 0.99 * best


# ---- margins and rewards from models -----------------------------------------------------------

PROMPTS = ["Human: Name a colour.\n\nAssistant:", "Human: Count to three.\n\nAssistant:",
           "Human: Say hello.\n\nAssistant:"]
RESPONSES = [["Red.", "Blue is a colour.", "Green, I think.", "Red."],
             ["One two three.", "1, 2, 3", "three"],
             ["Hello!", "Hi there, hello.", "Greetings and hello."]]


def _write_pool(path: Path) -> Path:
    rows = [{"prompt_id": f"p{i}", "prompt": p, "responses": r}
            for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def policy_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny causal LM with every weight perturbed: a policy that differs from the reference."""
    import torch
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


def _plain_logps(model_dir: str) -> np.ndarray:
    """Summed response log-probs by a plain forward pass and log_softmax over all positions."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from realspo.training.tokenization import tokenize_response

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for prompt, responses in zip(PROMPTS, RESPONSES, strict=True):
        for response in responses:
            ids, start, _ = tokenize_response(tok, prompt, response, 1024)
            with torch.no_grad():
                logits = model(torch.tensor([ids])).logits[0].float()
            logp = torch.log_softmax(logits, -1)
            out.append(sum(float(logp[t - 1, ids[t]]) for t in range(start, len(ids))))
    return np.asarray(out)


def test_implicit_rewards_match_a_plain_forward_pass(tiny_model_dir, policy_dir, tmp_path):
    from realspo.pipeline.candidate_scores import candidate_scores, load_or_compute_candidate_logps
    from realspo.schema import PromptGroup

    groups = [PromptGroup(f"p{i}", p, r) for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES, strict=True))]
    expected = 0.3 * (_plain_logps(policy_dir) - _plain_logps(tiny_model_dir))
    assert np.abs(expected).max() > 1e-3  # the policy does differ
    got = candidate_scores(groups, policy=policy_dir, reference=tiny_model_dir, beta=0.3,
                           cache_dir=tmp_path / "cache", device="cpu")["implicit_rewards"]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # the reference's log-probs are cached: a second call reads them back
    import torch

    logps, status = load_or_compute_candidate_logps(tiny_model_dir, groups, tmp_path / "cache",
                                                    dtype=torch.float32)
    assert status == "cached"
    np.testing.assert_allclose(0.3 * (_plain_logps(policy_dir) - logps), expected, atol=1e-4)


@pytest.mark.parametrize("name", ["margin", "margin-large"])
def test_margin_through_the_cli(name, tiny_model_dir, policy_dir, tmp_path, capsys):
    data = _write_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "pairs.jsonl"
    code = main(["select", "--data", str(data), "--model", tiny_model_dir, "--policy", policy_dir,
                 "--strategy", name, "--beta", "0.3", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "|margin|" in capsys.readouterr().out
    rho = 0.3 * (_plain_logps(policy_dir) - _plain_logps(tiny_model_dir))
    keys = np.asarray([0, 1, 2, 0, 4, 5, 6, 7, 8, 9])  # "Red." twice in the first prompt
    source, key, pick, descending = BRUTE[name]
    expected = _brute_force([4, 3, 3], keys, rho, key, pick, descending)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_id"], r["index_a"], r["index_b"], r["strategy"]) for r in rows] == \
        [(f"p{g}", i, j, name) for g, i, j, _ in expected]


@pytest.mark.parametrize("name", ["reward-gap", "reward-uncertain"])
def test_reward_strategies_through_the_cli(name, tiny_model_dir, tiny_reward_model_dir, tmp_path, capsys):
    from realspo.labels.judges import reward_model_judge

    data = _write_pool(tmp_path / "pool.jsonl")
    n = sum(map(len, RESPONSES))
    emb = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    np.save(tmp_path / "emb.npy", emb)
    out = tmp_path / "pairs.jsonl"
    code = main(["select", "--data", str(data), "--embeddings", str(tmp_path / "emb.npy"),
                 "--reward-model", tiny_reward_model_dir, "--strategy", name, "--out", str(out),
                 "--no-progress"])
    assert code == 0
    capsys.readouterr()
    judge = reward_model_judge(tiny_reward_model_dir)
    rewards = judge([p for p, rs in zip(PROMPTS, RESPONSES, strict=True) for _ in rs],
                    [r for rs in RESPONSES for r in rs])
    assert np.ptp(rewards) > 0
    keys = np.asarray([0, 1, 2, 0, 4, 5, 6, 7, 8, 9])
    source, key, pick, descending = BRUTE[name]
    expected = _brute_force([4, 3, 3], keys, rewards, key, pick, descending)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["prompt_id"], r["index_a"], r["index_b"]) for r in rows] == \
        [(f"p{g}", i, j) for g, i, j, _ in expected]


def test_design_through_the_cli_with_policy_weights(tiny_model_dir, policy_dir, tmp_path, capsys):
    data = _write_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "pairs.jsonl"
    code = main(["select", "--data", str(data), "--model", tiny_model_dir, "--policy", policy_dir,
                 "--strategy", "design", "--pairs-per-prompt", "2", "--budget", "5",
                 "--design-ridge", "0.5", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "\ngain " in capsys.readouterr().out  # the log det gains, in the summary
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 and max(sum(r["prompt_id"] == f"p{i}" for r in rows) for i in range(3)) <= 2
    assert len({(r["prompt_id"], r["index_a"], r["index_b"]) for r in rows}) == 5


# ---- bad input: one line, exit 2, nothing written, no model loaded -----------------------------

@pytest.fixture
def no_model_loads(monkeypatch):
    import realspo.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(realspo.models, "load_model", refuse)


@pytest.fixture(scope="module")
def other_tokenizer_dir(policy_dir, tmp_path_factory) -> str:
    """The policy with a tokenizer that has one more token than the reference's."""
    from transformers import AutoTokenizer

    out = Path(tmp_path_factory.mktemp("other-tokenizer")) / "model"
    shutil.copytree(policy_dir, out)
    tok = AutoTokenizer.from_pretrained(policy_dir)
    tok.add_tokens(["<extra-token>"])
    tok.save_pretrained(out)
    return str(out)


BAD_INPUTS = {
    "margin without --policy": (["--strategy", "margin"], "needs --policy"),
    "margin-large without --policy": (["--strategy", "margin-large"], "needs --policy"),
    "reward-gap without --reward-model": (["--strategy", "reward-gap"], "needs --reward-model"),
    "reward-uncertain without --reward-model": (["--strategy", "reward-uncertain"], "needs --reward-model"),
    "design ridge 0": (["--strategy", "design", "--design-ridge", "0"], "--design-ridge must be > 0"),
    "design ridge negative": (["--strategy", "design", "--design-ridge", "-1"], "--design-ridge must be > 0"),
    "policy for easy": (["--strategy", "easy", "--policy", "POLICY"], "--policy does not apply"),
    "ridge for margin": (["--strategy", "margin", "--policy", "POLICY", "--design-ridge", "2"],
                         "apply only to --strategy design"),
    "beta 0": (["--strategy", "margin", "--policy", "POLICY", "--beta", "0"], "--beta must be > 0"),
    "policy with another tokenizer": (["--strategy", "margin", "--policy", "OTHER"],
                                      "its tokenizer differs from the reference's"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tiny_model_dir, policy_dir, other_tokenizer_dir,
                                                         tmp_path, capsys, no_model_loads):
    args, message = BAD_INPUTS[case]
    args = [{"POLICY": policy_dir, "OTHER": other_tokenizer_dir}.get(a, a) for a in args]
    data = _write_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "out" / "pairs.jsonl"
    code = main(["select", "--data", str(data), "--model", tiny_model_dir, "--out", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1
    assert not out.parent.exists() or not any(out.parent.iterdir())
