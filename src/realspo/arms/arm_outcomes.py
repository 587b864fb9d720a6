"""More sensitive outcomes of ``realspo demo`` than one win per held-out prompt.

The win rate reads one sample per held-out prompt and keeps only its sign against the SFT
model, so a small improvement drowns in sampling noise. Two more outcomes, measured for every
trained model beside the win rate (which is unchanged):

* **Mean oracle reward over S samples** (``plan.eval_samples``): per held-out prompt, the mean
  reward of S samples. Sample 0 is the win rate's sample, drawn exactly as before (its own
  ``generate`` call, noise ``(seed + 10000, prompt, 0)``); samples 1..S-1 come from a second
  call with noise ``(seed + EXTRA_SEED_OFFSET, prompt, j - 1)``, so sample 0 stays
  bit-identical whatever S is. Every model of a seed gets the same noise (paired).
* **Implicit-reward accuracy on held-out oracle-ordered pairs**: per seed, a fixed set of
  pairs, the SFT model's S samples on each held-out prompt taken two at a time (distinct
  texts, oracle ties dropped), ordered by the oracle. A model's implicit reward of a response
  is DPO's ``beta * (log pi(y|x) - log pi_ref(y|x))`` with the SFT model as ``pi_ref``; its
  accuracy is the share of pairs where the better response gets the larger reward (an exact
  tie counts 1/2, so the SFT model itself scores 0.5). Log-probs are summed over response
  tokens as in training (:func:`realspo.training.reference.score_sequences`).

Intervals and paired differences use the hierarchical bootstrap (seeds, then held-out
prompts; pairs stay with their prompt) of :mod:`realspo.evaluation.statistics`.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from realspo.evaluation.statistics import hierarchical_bootstrap

if TYPE_CHECKING:
    from realspo.arms.plan import DemoPlan
    from realspo.proving_ground.world import World

EVAL_SEED_OFFSET = 10_000     # sample 0 (the win rate's): seed + this, as before
EXTRA_SEED_OFFSET = 30_000    # samples 1..S-1: seed + this, apart from every other noise
SCORE_BATCH = 32


@dataclass
class HeldoutPairs:
    """One seed's held-out pairs: R distinct responses and P oracle-ordered pairs of them."""

    prompt_index: np.ndarray      # (R,) held-out prompt of each response
    responses: list[str]          # (R,)
    finished: list[bool]          # (R,) ended at EOS (False: cut at max_new_tokens)
    better: np.ndarray            # (P,) response index of the oracle's better response
    worse: np.ndarray             # (P,) response index of the worse one
    pair_prompt: np.ndarray       # (P,) held-out prompt of each pair
    reference_logps: np.ndarray   # (R,) summed response log-probs under the SFT model


@dataclass
class Evaluation:
    """One model on the held-out prompts: the win rate's sample and the extra outcomes."""

    responses: list[str]                       # (T,) sample 0 per prompt
    rewards: np.ndarray                        # (T,) oracle reward of sample 0
    sample_rewards: np.ndarray | None = None   # (T, S) oracle rewards of every sample
    samples: list[list[str]] | None = None     # (T, S) texts
    finished: list[list[bool]] | None = None   # (T, S)
    heldout_logps: np.ndarray | None = None    # (R,) log-probs of the seed's held-out responses


def _sample(model: Any, tokenizer: Any, prompts: list[str], k: int, plan: DemoPlan, seed: int
            ) -> tuple[list[list[str]], list[list[bool]]]:
    from realspo.generation.prompts import PromptRecord
    from realspo.generation.sampling import SamplingSettings, iter_samples

    settings = SamplingSettings(num_responses=k, temperature=plan.temperature,
                                max_new_tokens=plan.max_new_tokens, seed=seed)
    records = [PromptRecord(i, f"p{i}", p) for i, p in enumerate(prompts)]
    texts, flags = [], []
    for _, batch, done in iter_samples(model, tokenizer, records, settings, 32, progress=False):
        texts += batch
        flags += done
    return texts, flags


def evaluate_model(model_dir: Path, plan: DemoPlan, world: World, seed: int, *,
                   extra: bool = True, heldout: HeldoutPairs | None = None) -> Evaluation:
    """Sample 0 per held-out prompt (the win rate's), and with ``extra`` samples 1..S-1 and
    the summed log-probs of ``heldout``'s responses under this model."""
    from realspo.generation.sampling import load_generator_model

    model, tokenizer = load_generator_model(str(model_dir), device=plan.device)
    prompts = world.test_prompts[: plan.n_test_prompts]
    first, first_done = _sample(model, tokenizer, prompts, 1, plan, seed + EVAL_SEED_OFFSET)
    responses = [s[0] for s in first]
    rewards = np.asarray(world.oracle.score_batch(prompts, responses), dtype=np.float64)
    result = Evaluation(responses, rewards)
    if extra:
        more, more_done = ([[] for _ in prompts], [[] for _ in prompts])
        if plan.eval_samples > 1:
            more, more_done = _sample(model, tokenizer, prompts, plan.eval_samples - 1, plan,
                                      seed + EXTRA_SEED_OFFSET)
        result.samples = [a + b for a, b in zip(first, more, strict=True)]
        result.finished = [a + b for a, b in zip(first_done, more_done, strict=True)]
        flat = [r for row in result.samples for r in row]
        scores = world.oracle.score_batch([p for p, row in zip(prompts, result.samples, strict=True)
                                           for _ in row], flat)
        result.sample_rewards = np.asarray(scores, dtype=np.float64).reshape(len(prompts), -1)
        if heldout is not None:
            result.heldout_logps = response_logps(model, tokenizer, prompts, heldout, plan)
    del model
    gc.collect()
    return result


def build_heldout_pairs(evaluation: Evaluation, model_dir: Path, plan: DemoPlan, world: World
                        ) -> HeldoutPairs:
    """The seed's held-out pairs from the SFT model's ``evaluation`` (its S samples per
    prompt), with their reference log-probs (``model_dir``: the SFT model)."""
    from realspo.generation.sampling import load_generator_model

    if evaluation.samples is None or evaluation.sample_rewards is None:
        raise ValueError("held-out pairs need an evaluation with extra=True (all S samples)")
    index, texts, flags, better, worse, where = [], [], [], [], [], []
    for t, (row, done, scores) in enumerate(zip(evaluation.samples, evaluation.finished or [],
                                                evaluation.sample_rewards, strict=True)):
        local: dict[str, tuple[int, float]] = {}
        for text, flag, score in zip(row, done, scores.tolist(), strict=True):
            if text and text not in local:  # distinct, non-empty texts
                local[text] = (len(texts), score)
                index.append(t)
                texts.append(text)
                flags.append(bool(flag))
        items = list(local.values())
        for a in range(len(items)):
            for b in range(a + 1, len(items)):
                (ia, ra), (ib, rb) = items[a], items[b]
                if ra != rb:  # oracle ties have no right answer
                    better.append(ia if ra > rb else ib)
                    worse.append(ib if ra > rb else ia)
                    where.append(t)
    pairs = HeldoutPairs(np.asarray(index, dtype=np.int64), texts, flags,
                         np.asarray(better, dtype=np.int64), np.asarray(worse, dtype=np.int64),
                         np.asarray(where, dtype=np.int64), np.zeros(0))
    model, tokenizer = load_generator_model(str(model_dir), device=plan.device)
    pairs.reference_logps = response_logps(model, tokenizer, world.test_prompts[: plan.n_test_prompts],
                                           pairs, plan)
    del model
    gc.collect()
    return pairs


def response_logps(model: Any, tokenizer: Any, prompts: list[str], pairs: HeldoutPairs,
                   plan: DemoPlan) -> np.ndarray:
    """Summed response log-probs (R,) of ``pairs``' responses, tokenized as in training."""
    from realspo.training.reference import score_sequences
    from realspo.training.tokenization import tokenize_response

    sequences = [tokenize_response(tokenizer, prompts[int(t)], text, plan.max_length,
                                   finished=done)[:2]
                 for t, text, done in zip(pairs.prompt_index, pairs.responses, pairs.finished,
                                          strict=True)]
    return score_sequences(model, tokenizer, sequences, SCORE_BATCH)


# ---------------------------------------------------------------------------------------
# Numbers


def implicit_accuracy_columns(pairs: HeldoutPairs, logps: np.ndarray, beta: float,
                              n_prompts: int) -> np.ndarray:
    """(T, 2) per held-out prompt: correctly ordered pairs (ties 1/2) and pairs, for the
    model whose response log-probs are ``logps`` (R,)."""
    reward = beta * (logps - pairs.reference_logps)
    margin = reward[pairs.better] - reward[pairs.worse]
    correct = np.where(margin > 0, 1.0, np.where(margin == 0, 0.5, 0.0))
    out = np.zeros((n_prompts, 2))
    np.add.at(out, (pairs.pair_prompt, 0), correct)
    np.add.at(out, (pairs.pair_prompt, 1), 1.0)
    return out


def _ratio(m: np.ndarray) -> np.ndarray:
    return m[..., 0] / m[..., 1]


def pooled_outcomes(runs: list[Any], heldout: dict[int, HeldoutPairs], beta: float,
                    n_resamples: int) -> dict[str, Any]:
    """Both outcomes of one method (its runs over the seeds; records with ``sample_rewards``
    and ``heldout_logps``), each ``{estimate, ci_low, ci_high, se, mde, per_seed}``."""
    runs = sorted(runs, key=lambda r: r.seed)
    out: dict[str, Any] = {}
    if all(r.sample_rewards is not None for r in runs):
        means = [r.sample_rewards.mean(axis=1) for r in runs]
        out["mean_reward_samples"] = {**hierarchical_bootstrap(means, n_resamples, seed=5),
                                      "per_seed": [float(m.mean()) for m in means]}
    if all(r.heldout_logps is not None and r.seed in heldout for r in runs):
        cols = [implicit_accuracy_columns(heldout[r.seed], r.heldout_logps, beta,
                                          len(r.rewards)) for r in runs]
        out["implicit_reward_accuracy"] = {
            **hierarchical_bootstrap(cols, n_resamples, seed=6, statistic=_ratio),
            "per_seed": [float(c[:, 0].sum() / max(c[:, 1].sum(), 1)) for c in cols]}
    return out


def paired_outcomes(a: list[Any], b: list[Any], heldout: dict[int, HeldoutPairs], beta: float,
                    n_resamples: int) -> dict[str, Any]:
    """``a`` minus ``b`` for both outcomes, paired per seed and held-out prompt, with the
    hierarchical interval, se, mde, bootstrap p and per-seed differences."""
    by_seed = {r.seed: r for r in b}
    a = sorted(a, key=lambda r: r.seed)
    out: dict[str, Any] = {}
    if all(r.sample_rewards is not None and by_seed[r.seed].sample_rewards is not None for r in a):
        diffs = [r.sample_rewards.mean(axis=1) - by_seed[r.seed].sample_rewards.mean(axis=1)
                 for r in a]
        d = hierarchical_bootstrap(diffs, n_resamples, seed=7)
        out["mean_reward_samples"] = {"difference": d["estimate"], **_interval(d),
                                      "per_seed": [float(x.mean()) for x in diffs]}
    if all(r.heldout_logps is not None and by_seed[r.seed].heldout_logps is not None
           and r.seed in heldout for r in a):
        cols = []
        for r in a:
            ca = implicit_accuracy_columns(heldout[r.seed], r.heldout_logps, beta, len(r.rewards))
            cb = implicit_accuracy_columns(heldout[r.seed], by_seed[r.seed].heldout_logps, beta,
                                           len(r.rewards))
            cols.append(np.stack([ca[:, 0] - cb[:, 0], ca[:, 1]], axis=1))
        d = hierarchical_bootstrap(cols, n_resamples, seed=8, statistic=_ratio)
        out["implicit_reward_accuracy"] = {
            "difference": d["estimate"], **_interval(d),
            "per_seed": [float(c[:, 0].sum() / max(c[:, 1].sum(), 1)) for c in cols]}
    return out


def _interval(d: dict[str, float]) -> dict[str, float]:
    return {k: d[k] for k in ("ci_low", "ci_high", "se", "mde", "p")}
