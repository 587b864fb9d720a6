"""Judging a trained model against a baseline (the ``evaluate`` stage).

Both models answer the same prompts with the same sampling seeds (:mod:`realspo.generation.sampling`:
sample ``j`` of prompt ``i`` uses the same Gumbel noise in both, so differences come from the
models, not from luck), a judge scores every response (a reward model or the proving
ground's oracle: :mod:`realspo.labels.judges`), and the trained model's *win rate* is
the mean over prompts of 1 (higher reward), 1/2 (equal) or 0. A pairwise judge (an LLM
judge) instead compares the two responses to each prompt in both orders: 1 (trained
preferred in both), 0 (baseline preferred in both) or 1/2 (the orders disagree: a tie). Its
95% interval is a percentile bootstrap over prompts. Given held-out preference pairs, the *implicit-reward
accuracy* is the fraction where ``beta (log pi(y_c) - log pi_ref(y_c)) > beta (log pi(y_r)
- log pi_ref(y_r))`` with the trained model as pi and the baseline as pi_ref (DPO's implicit
reward, Rafailov et al. 2023, eq. 5; the count TRL logs as ``rewards/accuracies``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any, cast

import numpy as np

from realspo.generation.prompts import PromptRecord, hh_text
from realspo.generation.sampling import SamplingSettings, iter_samples, load_generator_model
from realspo.labels.judges import Judge, JudgeOptions, check_judge, make_judge, make_pairwise_judge
from realspo.labels.pairwise import PairwiseJudge
from realspo.served.client import DryRun
from realspo.served.options import ServedOptions

log = logging.getLogger(__name__)


def win_indicators(rewards_a: Any, rewards_b: Any) -> np.ndarray:
    """Per prompt: 1.0 where A's reward is higher, 0.5 where equal, 0.0 where lower. (N,)"""
    a, b = np.asarray(rewards_a, dtype=np.float64), np.asarray(rewards_b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"reward arrays differ in shape: {a.shape} vs {b.shape}")
    return (a > b) + 0.5 * (a == b)


def win_rate(rewards_a: Any, rewards_b: Any) -> float:
    """Win rate of A over B, ties counted as half: ``mean(1[a > b] + 1/2 1[a = b])``."""
    wins = win_indicators(rewards_a, rewards_b)
    if wins.size == 0:
        raise ValueError("no rewards to compare")
    return float(wins.mean())


def bootstrap_interval(wins: np.ndarray, n_resamples: int = 2000, seed: int = 0,
                       alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` interval of the mean of ``wins`` (N,).

    Draws ``n_resamples`` resamples of the N prompts with replacement (seeded), takes each
    resample's mean, and returns its ``alpha/2`` and ``1 - alpha/2`` quantiles. Resamples are
    drawn in vectorised chunks of at most ~4M indices, so memory stays bounded for large N.
    """
    wins = np.asarray(wins, dtype=np.float64).ravel()
    if wins.size == 0:
        raise ValueError("no values to bootstrap")
    if n_resamples < 1 or not 0 < alpha < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < alpha < 1, got {n_resamples}, {alpha}")
    rng = np.random.default_rng(seed)
    n = wins.size
    chunk = max(1, 4_000_000 // n)
    means = np.empty(n_resamples)
    for lo in range(0, n_resamples, chunk):
        hi = min(n_resamples, lo + chunk)
        means[lo:hi] = wins[rng.integers(0, n, size=(hi - lo, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def win_summary(wins: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """The win rate with its 95% bootstrap interval and the win/tie/loss counts of ``wins`` (N,).

    Without a single decisive judgment (every prompt a tie, or none judged) there is nothing to
    estimate: a rate of 0.5 with the interval 0.5-0.5 would read as certainty that the models
    are equal, when the judge only never told them apart. Then ``win_rate`` and
    ``win_rate_interval`` are None and ``no_win_rate`` says why.

    Args:
        wins: per prompt 1 (trained better), 0.5 (tie) or 0 (baseline better).
        n_resamples: bootstrap resamples of the interval.
        seed: bootstrap seed.

    Returns:
        ``{"win_rate", "win_rate_interval", "interval_level", "bootstrap_resamples", "wins",
        "ties", "losses", "no_win_rate"}`` (``no_win_rate`` None when there is a rate).
    """
    wins = np.asarray(wins, dtype=np.float64).ravel()
    counts = {"wins": int((wins == 1).sum()), "ties": int((wins == 0.5).sum()),
              "losses": int((wins == 0).sum())}
    decisive = counts["wins"] + counts["losses"]
    rate = interval = reason = None
    if decisive:
        rate = float(wins.mean())
        interval = list(bootstrap_interval(wins, n_resamples, seed))
    else:
        reason = f"no decisive judgments ({counts['ties']} ties)"
    return {"win_rate": rate, "win_rate_interval": interval, "interval_level": 0.95,
            "bootstrap_resamples": n_resamples, **counts, "no_win_rate": reason}


def implicit_reward_accuracy(policy_logps: np.ndarray, reference_logps: np.ndarray,
                             beta: float) -> dict[str, float]:
    """DPO implicit rewards on held-out pairs, from (N, 2) summed log-probs of (chosen, rejected).

    ``r = beta (logp_policy - logp_ref)``; accuracy = ``mean(r_chosen > r_rejected)`` (strict,
    as TRL counts it), plus the mean margin and mean rewards.
    """
    rewards = beta * (np.asarray(policy_logps, np.float64) - np.asarray(reference_logps, np.float64))
    margin = rewards[:, 0] - rewards[:, 1]
    return {"accuracy": float(np.mean(margin > 0)), "mean_margin": float(margin.mean()),
            "mean_chosen_reward": float(rewards[:, 0].mean()),
            "mean_rejected_reward": float(rewards[:, 1].mean()),
            "num_pairs": int(len(margin)), "beta": float(beta)}


def pair_logps(model, tokenizer, rows: Sequence[dict[str, Any]], *, batch_size: int = 8,
               max_length: int = 1024, source: str = "pairs", chat_template: str = "auto") -> np.ndarray:
    """Summed response log-probs (N, 2) of (chosen, rejected) for preference ``rows``, tokenized
    as ``train`` tokenizes them (:func:`realspo.training.tokenization.tokenize_pairs`)."""
    import torch

    from realspo.training.logprobs import response_logps
    from realspo.training.tokenization import collate, tokenize_pairs

    tokenized = tokenize_pairs(tokenizer, rows, max_length, source=source, chat_template=chat_template)
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for lo in range(0, len(tokenized), batch_size):
            seqs = [s for pair in tokenized[lo:lo + batch_size] for s in pair.sequences()]
            batch = {k: v.to(device) for k, v in collate(seqs, tokenizer.pad_token_id).items()}
            sums, _, _ = response_logps(model, batch["input_ids"], batch["attention_mask"],
                                        batch["response_mask"])
            out.append(sums.cpu().numpy().reshape(-1, 2))
    return np.concatenate(out) if out else np.zeros((0, 2))


def _judge_text(prompt: PromptRecord) -> str:
    return prompt.prompt if isinstance(prompt.prompt, str) else hh_text(prompt.prompt)


def _judge_responses(judge: str | Judge | PairwiseJudge, options: JudgeOptions, pairwise: bool,
                     texts: list[str], responses: dict[str, list[str]]
                     ) -> tuple[np.ndarray, dict[str, Any], list[dict[str, Any]]]:
    """(N,) wins of the trained responses, the judge's summary (``mean_reward`` or
    ``pairwise``) and per-prompt values. A pairwise judge sees trained as A, baseline as B."""
    if not pairwise:
        score = make_judge(judge, options) if isinstance(judge, str) else cast(Judge, judge)
        rewards = {role: np.asarray(score(texts, responses[role]), dtype=np.float64)
                   for role in responses}
        per = [{"trained_reward": float(t), "baseline_reward": float(b)}
               for t, b in zip(rewards["trained"], rewards["baseline"], strict=True)]
        return (win_indicators(rewards["trained"], rewards["baseline"]),
                {"mean_reward": {role: float(r.mean()) for role, r in rewards.items()},
                 "pairwise": None}, per)
    compare = make_pairwise_judge(judge, options) if isinstance(judge, str) else judge
    comparison = cast(PairwiseJudge, compare).compare(texts, responses["trained"],
                                                      responses["baseline"])
    # an unparseable reply is no verdict: nan here, left out of the win rate and counted
    wins = np.array([{"A": 1.0, "B": 0.0, "tie": 0.5}.get(o, np.nan) for o in comparison.outcomes])
    # p_trained: P(trained preferred), the mean over the orders trained-first, baseline-first
    per = [{"p_trained": float(p), "p_trained_by_order": [float(x) for x in orders]}
           for p, orders in zip(comparison.p_a, comparison.p_orders, strict=True)]
    return wins, {"mean_reward": None, "pairwise": {
        "mean_p_trained": float(comparison.p_a.mean()),
        "position_bias_rate": comparison.position_bias_rate,
        "position_disagreements": int(comparison.disagree.sum()),
        "unparseable": int(comparison.unparseable.sum()),
        "mode": "pointwise" if hasattr(comparison, "grades") else "pairwise",
        **({"requests_sent": compare.client.sent} if hasattr(compare, "client") else {})}}, per


def evaluate_models(trained: str, baseline: str, prompts: Sequence[PromptRecord],
                    judge: str | Judge | PairwiseJudge, settings: SamplingSettings, *,
                    batch_size: int = 8,
                    pairs: Sequence[dict[str, Any]] | None = None, pairs_source: str = "pairs",
                    beta: float = 0.1, max_length: int = 1024, n_resamples: int = 2000,
                    device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False,
                    progress: bool = True, allow_pickle: bool = False,
                    judge_template: str | None = None, judge_mode: str = "pairwise",
                    tie_margin: float = 0.0, served: ServedOptions | None = None) -> dict[str, Any]:
    """Generate one response per prompt from each model, judge them, and summarise.

    ``judge``: a name of the judges registry (:data:`realspo.labels.judges.JUDGES`: checked
    on the prompts before any generation and loaded after it, so a judge model never shares
    memory with a policy), or a ready judge: a reward callable or a pairwise judge (with
    ``compare``). ``judge_template``: a pairwise LLM judge's prompt template file.
    ``judge_mode``/``tie_margin``: an LLM judge's pairwise or pointwise grading; ``served``:
    the server of an ``openai:NAME`` judge.
    ``pairs``: optional held-out preference rows for the implicit-reward accuracy.
    Returns the JSON-ready result (see ``docs/readme/stages.md``).

    Raises:
        DryRun: a served judge with ``served.dry_run``: the most requests judging would send
            (nothing is generated).
    """
    options = JudgeOptions(device=device, dtype=dtype, batch_size=batch_size, max_length=max_length,
                           trust_remote_code=trust_remote_code, allow_pickle=allow_pickle,
                           template=judge_template, progress=progress,
                           chat_template=settings.chat_template, mode=judge_mode,
                           tie_margin=tie_margin, served=served)
    texts = [_judge_text(p) for p in prompts]
    pairwise = hasattr(judge, "compare")
    if isinstance(judge, str):
        pairwise = check_judge(judge, options, texts).pairwise
    if served is not None and served.dry_run:  # responses unknown yet: an upper bound
        raise DryRun(2 * len(prompts), 0, "at most two per prompt: the responses are not known "
                                           "yet, and those judged before are free")
    settings = replace(settings, num_responses=1)
    responses: dict[str, list[str]] = {}
    logps: dict[str, np.ndarray] = {}
    for role, name in (("trained", trained), ("baseline", baseline)):
        model, tokenizer = load_generator_model(name, device=device, dtype=dtype,
                                                trust_remote_code=trust_remote_code,
                                                allow_pickle=allow_pickle)
        batches = iter_samples(model, tokenizer, prompts, settings, batch_size, progress,
                               desc=f"generate ({role})")
        responses[role] = [s[0] for _, batch, _ in batches for s in batch]
        if pairs:
            logps[role] = pair_logps(model, tokenizer, pairs, batch_size=batch_size,
                                     max_length=max_length, source=pairs_source,
                                     chat_template=settings.chat_template)
        del model
        gc.collect()
    wins, judged, per_response = _judge_responses(judge, options, pairwise, texts, responses)
    per_prompt_wins, wins = wins, wins[~np.isnan(wins)]  # unparseable replies: no verdict
    return {
        "trained": str(trained), "baseline": str(baseline),
        "judge": judge if isinstance(judge, str) else getattr(judge, "__name__", "callable"),
        "num_prompts": len(prompts), "num_judged": int(len(wins)),
        **win_summary(wins, n_resamples, settings.seed),
        **judged,
        "implicit_reward": implicit_reward_accuracy(logps["trained"], logps["baseline"], beta)
        if pairs else None,
        "sampling": asdict(settings),
        "per_prompt": [{"prompt_id": p.prompt_id, "trained_response": responses["trained"][i],
                        "baseline_response": responses["baseline"][i],
                        "win": None if np.isnan(per_prompt_wins[i]) else float(per_prompt_wins[i]),
                        **per_response[i]}
                       for i, p in enumerate(prompts)],
    }

