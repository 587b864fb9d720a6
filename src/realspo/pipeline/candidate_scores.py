"""Per-response scores for the selection strategies beyond REAL, computed here (a layer that may
load models and judges) and handed to :func:`realspo.selection.strategies.select_pairs` as arrays:
implicit rewards from policy and reference log-probs (``margin``, ``margin-large``, ``design``'s
weights) and reward-model rewards (``reward-gap``, ``reward-uncertain``).

``realspo select --strategy margin`` (Yang et al., arXiv 2406.17312) ranks a prompt's candidate
pairs by the DPO implicit-reward margin ``m_ab = rho_a - rho_b`` with

    rho_i = beta (log pi(y_i | x) - log pi_ref(y_i | x)),

``pi`` the current policy and ``pi_ref`` the reference. Each log-prob is scored exactly as
training scores a response: :func:`realspo.training.tokenization.tokenize_response` (the one
prompt renderer, joint prompt/response tokenization, EOS only on finished responses, the same
truncation) and :func:`realspo.training.logprobs.response_logps`; one forward per candidate
per model, sorted by length and batched under ``inference_mode``.

(In training a pair shares one prompt, the common prefix of both joint tokenizations; scored
alone, a candidate's prompt is its own. They differ only when a token merges across the
prompt/response boundary, which :mod:`realspo.training.tokenization` marks ``merged``.)

The reference's log-probs never change for a given model and candidate set, so
:func:`load_or_compute_candidate_logps` caches them like the training reference pass
(:mod:`realspo.training.reference`: same key scheme, model content hash, atomic safetensors).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from realspo.chat_format import prompt_format
from realspo.errors import InputError
from realspo.outputs import atomic_path
from realspo.schema import PromptGroup
from realspo.training.reference import reference_cache_key, score_sequences
from realspo.training.tokenization import tokenize_response

log = logging.getLogger(__name__)


def candidates_fingerprint(groups: Sequence[PromptGroup]) -> str:
    """sha256 of every group's prompt, responses and finished flags, in order."""
    h = hashlib.sha256(b"candidates\n")
    for g in groups:
        finished = [g.is_finished(j) for j in range(len(g.responses))]
        h.update(json.dumps([g.prompt, list(g.responses), finished], ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def candidate_logps(
    model: Any, tokenizer: Any, groups: Sequence[PromptGroup], *, max_length: int = 1024,
    truncation: str = "keep_end", chat_template: str = "auto", batch_size: int = 8,
    source: str = "candidates",
) -> np.ndarray:
    """Summed response log-probs (N,) float64 of every candidate, in flattened order (group
    order, then response order), scored as training scores them (see the module docs)."""
    fmt = prompt_format(tokenizer, chat_template)
    sequences: list[tuple[list[int], int]] = []
    for gi, g in enumerate(groups):
        for j, response in enumerate(g.responses):
            try:
                ids, start, _ = tokenize_response(fmt, g.prompt, response, max_length, truncation,
                                                  finished=g.is_finished(j))
            except ValueError as exc:
                raise InputError(source, str(exc), where=f"prompt {gi + 1}", field="prompt") from None
            sequences.append((ids, start))
    return score_sequences(model, tokenizer, sequences, batch_size)


def embed_and_score(
    model: Any, tokenizer: Any, groups: Sequence[PromptGroup], *, max_length: int = 1024,
    chat_template: str = "auto", batch_size: int = 8, source: str = "candidates",
) -> tuple[np.ndarray, np.ndarray]:
    """Conditioned REAL embeddings and summed response log-probs of every candidate from one
    forward per candidate: ``(embeddings (N, H) float32 unit rows, logps (N,) float64)``, in
    flattened order.

    When the embedding model is the reference (``select --strategy margin --conditioned``
    with ``--model`` the reference), the two passes read the same final hidden states: the
    log-prob sequence is the embedding's prompt + response with the end-of-turn tokens of a
    finished response appended, which a causal model's earlier hidden states do not see. So
    the pooled response tokens give :func:`realspo.embeddings.embed.embed_with_causal_lm`'s
    rows (with ``prompts``) and the LM head at the response positions gives
    :func:`candidate_logps`, each within rounding (``tests/test_reference.py``). Sequences must
    fit ``max_length`` (the two passes cut long ones differently): a longer one raises
    :class:`InputError`.
    """
    from realspo.embeddings.embed import pool_last_hidden
    from realspo.training.logprobs import last_hidden_states, logps_from_hidden
    from realspo.training.tokenization import collate

    fmt = prompt_format(tokenizer, chat_template)
    sequences: list[tuple[list[int], int, int]] = []  # ids, response start, end of the pooled tokens
    for gi, g in enumerate(groups):
        for j, response in enumerate(g.responses):
            scored = fmt.encode(g.prompt, [response], [g.is_finished(j)])
            pooled = fmt.encode(g.prompt, [response], [False]).response_ids[0]
            prompt, full = scored.prompt_ids, scored.response_ids[0]
            if len(prompt) + len(full) > max_length or full[:len(pooled)] != pooled or not pooled:
                raise InputError(source, f"response {j + 1} does not fit max_length={max_length} "
                                 "(or has no tokens); embed and score it in separate passes",
                                 where=f"prompt {gi + 1}")
            sequences.append((prompt + full, len(prompt), len(prompt) + len(pooled)))
    n = len(sequences)
    logps = np.zeros(n, dtype=np.float64)
    emb: np.ndarray | None = None
    order = sorted(range(n), key=lambda i: -len(sequences[i][0]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, n, batch_size):
                idx = order[lo: lo + batch_size]
                batch = {k: v.to(device) for k, v in
                         collate([sequences[i][:2] for i in idx], pad_id).items()}
                hidden = last_hidden_states(model, batch["input_ids"], batch["attention_mask"])
                pool = torch.zeros_like(batch["attention_mask"])
                for row, i in enumerate(idx):
                    pool[row, sequences[i][1]: sequences[i][2]] = 1
                rows = pool_last_hidden(hidden, pool).cpu().numpy()
                if emb is None:
                    emb = np.empty((n, rows.shape[1]), dtype=np.float32)
                emb[idx] = rows
                sums, _ = logps_from_hidden(model, hidden, batch["input_ids"], batch["response_mask"])
                logps[idx] = sums.double().cpu().numpy()
    finally:
        model.train(was_training)
    return (emb if emb is not None else np.zeros((0, 0), dtype=np.float32)), logps


def load_or_compute_candidate_logps(
    model_name: str, groups: Sequence[PromptGroup], cache_dir: str | Path | None, *,
    max_length: int = 1024, truncation: str = "keep_end", chat_template: str = "auto",
    batch_size: int = 8, dtype: torch.dtype | None = None, device: torch.device | None = None,
    trust_remote_code: bool = False, allow_pickle: bool = False,
) -> tuple[np.ndarray, str]:
    """``(logps (N,), status)``, status ``cached`` or ``computed``; the model is loaded only on a
    cache miss. ``cache_dir=None`` disables the cache."""
    from realspo.models import load_model, load_tokenizer

    key = reference_cache_key(model_name, candidates_fingerprint(groups), max_length, truncation,
                              extra=f"candidates|{dtype or 'auto'}|chat-template={chat_template}")
    path = Path(cache_dir) / f"{key}.safetensors" if cache_dir is not None else None
    n = sum(len(g.responses) for g in groups)
    if path is not None and path.exists():
        from safetensors.numpy import load_file

        try:
            cached = load_file(str(path))["logps"]
            if cached.shape == (n,) and np.isfinite(cached).all():
                return cached.astype(np.float64), "cached"
        except Exception as exc:  # a damaged or foreign file: recompute rather than fail
            log.warning("ignoring unreadable candidate log-prob cache %s (%s)", path, exc)
    tokenizer = load_tokenizer(model_name, trust_remote_code=trust_remote_code)
    model = load_model(model_name, dtype=dtype, device=device, trust_remote_code=trust_remote_code,
                       allow_pickle=allow_pickle)
    logps = candidate_logps(model, tokenizer, groups, max_length=max_length, truncation=truncation,
                            chat_template=chat_template, batch_size=batch_size)
    del model
    if path is not None:
        from safetensors.numpy import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, overwrite=True) as tmp:
            save_file({"logps": logps}, str(tmp), metadata={"model": str(model_name), "responses": str(n)})
    return logps, "computed"


def shared_embed_and_score(
    model_name: str, groups: Sequence[PromptGroup], *, max_length: int, batch_size: int = 8,
    device: str | None = None, dtype: str = "auto", trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`embed_and_score` with ``model_name`` loaded as :func:`candidate_scores` loads the
    reference; None when a sequence does not fit ``max_length`` (then the two passes run
    separately, each cutting it its own way)."""
    from realspo.models import load_model, load_tokenizer, pick_device, pick_dtype

    dev = pick_device(device)
    tokenizer = load_tokenizer(model_name, trust_remote_code=trust_remote_code)
    model = load_model(model_name, dtype=pick_dtype(dev, dtype), device=dev,
                       trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    try:
        return embed_and_score(model, tokenizer, groups, max_length=min(max_length, SCORING_MAX_LENGTH),
                               batch_size=batch_size)
    except InputError as exc:
        log.info("embedding and reference log-probs in separate passes: %s", exc)
        return None


def implicit_rewards(policy_logps: np.ndarray, reference_logps: np.ndarray, beta: float) -> np.ndarray:
    """``rho_i = beta (log pi(y_i|x) - log pi_ref(y_i|x))`` (N,): DPO's implicit reward."""
    return beta * (np.asarray(policy_logps, dtype=np.float64) - np.asarray(reference_logps, dtype=np.float64))


# Candidates are scored for margins as ``realspo train`` scores responses at its defaults.
SCORING_MAX_LENGTH = 1024


def check_scorers(policy: str | None, reference: str | None, reward_model: str | None, *,
                  trust_remote_code: bool = False) -> None:
    """Cheap checks before any model loads (ConfigError / InputError): the policy's tokenizer
    must match the reference's (else their log-probs score different token sequences), and a
    reward model must be a one-output sequence classifier."""
    from realspo.errors import ConfigError
    from realspo.labels.judges import JudgeOptions, check_reward_model
    from realspo.models import load_tokenizer

    if policy is not None:
        why = tokenizer_mismatch(load_tokenizer(policy, trust_remote_code=trust_remote_code),
                                 load_tokenizer(reference or "", trust_remote_code=trust_remote_code))
        if why:
            raise ConfigError(f"--policy {policy}: its tokenizer differs from the reference's "
                              f"({reference}): {why}; margins need the same tokens under both")
    if reward_model is not None:
        check_reward_model(reward_model, JudgeOptions(trust_remote_code=trust_remote_code))


def candidate_scores(
    groups: Sequence[PromptGroup], *, policy: str | None = None, reference: str | None = None,
    beta: float = 0.1, reward_model: str | None = None, cache_dir: str | Path | None = None,
    device: str | None = None, dtype: str = "auto", batch_size: int = 8, progress: bool = True,
    trust_remote_code: bool = False, allow_pickle: bool = False, reference_logps: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``{"implicit_rewards": (N,), "rewards": (N,)}`` (each only when its model is given), in
    flattened order. Implicit rewards: :func:`implicit_rewards` of the policy's and the
    reference's :func:`candidate_logps` (the reference's cached in ``cache_dir``). Rewards: the
    reward-model judge of :mod:`realspo.labels.judges` (prompt + response rendered with the
    reward model's chat template). ``reference_logps``: the reference's log-probs, already
    computed (by :func:`shared_embed_and_score`)."""
    from realspo.models import pick_device, pick_dtype

    scores: dict[str, np.ndarray] = {}
    if policy is not None:
        dev = pick_device(device)
        common: dict[str, Any] = dict(max_length=SCORING_MAX_LENGTH, batch_size=batch_size, device=dev,
                                      dtype=pick_dtype(dev, dtype), trust_remote_code=trust_remote_code,
                                      allow_pickle=allow_pickle)
        ref = reference_logps
        if ref is None:
            ref, _ = load_or_compute_candidate_logps(reference or "", groups, cache_dir, **common)
        pol, _ = load_or_compute_candidate_logps(policy, groups, None, **common)
        scores["implicit_rewards"] = implicit_rewards(pol, ref, beta)
    if reward_model is not None:
        from realspo.labels.judges import JudgeOptions, reward_model_judge

        judge = reward_model_judge(reward_model, JudgeOptions(
            device=device or "auto", dtype=dtype, batch_size=batch_size, trust_remote_code=trust_remote_code,
            allow_pickle=allow_pickle, progress=progress))
        scores["rewards"] = np.asarray(judge([g.prompt for g in groups for _ in g.responses],
                                             [r for g in groups for r in g.responses]), dtype=np.float64)
    return scores


def tokenizer_mismatch(policy: Any, reference: Any) -> str | None:
    """Why two tokenizers would not score the same token ids (None: they match): the
    vocabulary, the special tokens and the chat template must all be equal."""
    if policy.get_vocab() != reference.get_vocab():
        return "their vocabularies differ"
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(policy, name, None) != getattr(reference, name, None):
            return f"their {name} differ"
    if getattr(policy, "chat_template", None) != getattr(reference, "chat_template", None):
        return "their chat templates differ"
    return None
