"""Sampling K responses per prompt from a causal LM, reproducibly (``generate`` and ``evaluate``).

**Reproducibility.** Sampling is done with the Gumbel-max trick instead of
``torch.multinomial`` on the global RNG: at every step, row ``(prompt i, sample j)`` adds
Gumbel noise drawn from its own ``torch.Generator`` seeded from ``(seed, i, j)`` to its
temperature-scaled, top-p-filtered logits, and ``generate`` takes the argmax. Since
``argmax(logits / T + G)`` with ``G ~ Gumbel(0, 1)`` is an exact sample from
``softmax(logits / T)``, this is ordinary sampling, but the random numbers a prompt sees
depend only on ``(seed, prompt index)``, not on which prompts share its batch. Results are
therefore identical across batch sizes and across an interrupted-and-resumed run, up to the
floating-point rounding of padded batches (which can, very rarely, tip a near-tie between
two tokens). Noise comes from a generator on the model's device, so CPU and GPU runs differ.

**Speed.** :func:`decode` is a plain KV-cache decoding loop instead of ``model.generate``:
each prompt is encoded once for its K samples (the cache is then repeated K times), and a
sample that has ended leaves the batch (its rows are dropped from the cache), so a batch
no longer runs every row until its longest sample ends. Its samples are those the earlier
``model.generate`` loop gave, token for token (up to the rounding noted above;
``tests/test_generation.py``); ``benchmarks/bench_generation.py`` measures the gain.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from typing import Any

import torch

from realspo.chat_format import PromptFormat
from realspo.errors import ConfigError
from realspo.generation.prompts import PromptRecord
from realspo.generation.settings import SamplingSettings

log = logging.getLogger(__name__)


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed for sample ``sample_index`` of prompt ``prompt_index`` under ``seed``."""
    digest = hashlib.sha256(f"{seed}/{prompt_index}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class GumbelSampler:
    """A ``generate`` logits processor that turns greedy decoding into seeded sampling.

    scores ``(rows, vocab)`` -> ``warp(scores) + G`` where ``warp`` applies temperature, top-k
    and top-p, in ``model.generate``'s order (tokens outside them become -inf), and ``G[r]`` is
    Gumbel(0, 1) noise from row ``r``'s private generator; argmax of the result is a sample
    from ``softmax(warp(scores))``. ``temperature == 0`` adds no noise: greedy decoding.
    ``repetition_penalty`` is applied by :func:`decode`, which knows the text so far.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float,
                 device: torch.device, top_k: int = 0, repetition_penalty: float = 1.0) -> None:
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        self.greedy = temperature == 0
        self.repetition_penalty = repetition_penalty
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.warpers: list = []
        if not self.greedy and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if not self.greedy and top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k))
        if not self.greedy and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.perturb(scores)

    def perturb(self, scores: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Perturbed scores; row ``i`` of ``scores`` is sampler row ``rows[i]`` (default: all)."""
        scores = scores.float()
        if self.greedy:
            return scores
        for warp in self.warpers:
            scores = warp(None, scores)  # the warpers read the scores only
        vocab = scores.shape[-1]
        generators = self.generators if rows is None else [self.generators[r] for r in rows]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device)
                               for g in generators])
        return scores - torch.log(-torch.log(uniform))


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Ids that end a response: the tokenizer's EOS and the generation config's EOS id(s)."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
    return {i for i in ids if i is not None}


@torch.inference_mode()
def sample_batch(model: Any, tokenizer: Any, prompts: Sequence[PromptRecord],
                 settings: SamplingSettings) -> tuple[list[list[str]], list[list[bool]]]:
    """``settings.num_responses`` samples for each prompt: ``(texts, finished)``, each a list
    (per prompt) of K entries; ``finished`` is True where the sample ended at an end-of-sequence
    or end-of-turn token, False where ``max_new_tokens`` cut it.

    Prompts are rendered by :class:`realspo.chat_format.PromptFormat` (``settings.chat_template``).
    All ``len(prompts) * K`` sequences are decoded together (:func:`decode`); row ``b * K + j``
    is sample ``j`` of prompt ``b``, seeded by :func:`row_seed`.
    """
    k = settings.num_responses
    fmt = PromptFormat.of(tokenizer, settings.chat_template)
    budget = prompt_budget(model, settings.max_new_tokens)
    fitted = [fitted_prompt_ids(fmt, p.prompt, budget) for p in prompts]
    ids = [i for i, _ in fitted]
    cut = sum(c for _, c in fitted)
    if cut:
        log.warning("%d of %d prompts were longer than the model's context leaves room for (%d "
                    "tokens: its positions less --max-new-tokens) and were cut from the left",
                    cut, len(prompts), budget)
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    # left padding: generation appends on the right
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids], device=device)
    attention_mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids], device=device)
    sampler = GumbelSampler([row_seed(settings.seed, p.index, j) for p in prompts for j in range(k)],
                            settings.temperature, settings.top_p, device, top_k=settings.top_k,
                            repetition_penalty=settings.repetition_penalty)
    tokens, ended = decode(model, input_ids, attention_mask, k, sampler, settings.max_new_tokens,
                           sorted(stop_token_ids(model, tokenizer)))
    responses = [d.strip() for d in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    return ([responses[b * k:(b + 1) * k] for b in range(len(prompts))],
            [ended[b * k:(b + 1) * k] for b in range(len(prompts))])


def prompt_budget(model: Any, max_new_tokens: int) -> int | None:
    """The longest prompt, in tokens, that leaves ``max_new_tokens`` positions free in the
    model's context (``max_position_embeddings``); None if the config names no context.

    Args:
        model: the causal LM.
        max_new_tokens: the longest response.

    Returns:
        The prompt's token budget, or None.
    """
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(context, int) or context <= 0:
        return None
    if context - max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the "
                          f"model's context of {context} positions")
    return context - max_new_tokens


def fitted_prompt_ids(fmt: PromptFormat, prompt: Any, budget: int | None) -> tuple[list[int], bool]:
    """``prompt``'s token ids, at most ``budget`` of them (the end kept: the question and the
    turn the model answers), and whether it was cut. The text is first cut to ``budget *
    CHARS_PER_TOKEN`` characters (each message's, for a conversation), so a megabyte prompt
    is never tokenized whole (:func:`realspo.models.clip_texts`)."""
    from realspo.models import CHARS_PER_TOKEN

    if budget is None:
        return fmt.prompt_ids(prompt), False
    limit = budget * CHARS_PER_TOKEN
    cut = False
    if isinstance(prompt, str) and len(prompt) > limit:
        prompt, cut = prompt[-limit:], True
    elif isinstance(prompt, list):
        clipped = [{**m, "content": m["content"][-limit:]} if isinstance(m, dict) and
                   isinstance(m.get("content"), str) and len(m["content"]) > limit else m for m in prompt]
        cut = any(a is not b for a, b in zip(clipped, prompt, strict=True))
        prompt = clipped
    ids = fmt.prompt_ids(prompt)
    if len(ids) > budget:
        ids, cut = ids[-budget:], True
    return ids, cut


def decode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int,
           sampler: GumbelSampler, max_new_tokens: int, stops: Sequence[int]
           ) -> tuple[list[list[int]], list[bool]]:
    """K continuations of each left-padded prompt (B, W): ``(tokens, ended)`` for the B*K rows
    (row ``b * k + j``: sample j of prompt b), each row's tokens up to and including its first
    stop token, or ``max_new_tokens`` of them (``ended`` False).

    The first token is never a stop token (an empty response is no candidate). Tokens are the
    argmax of ``sampler``'s scores. Prompts are encoded once, then repeated K times in the KV
    cache; rows that ended are dropped from the batch and the cache. A ``sampler`` with a
    repetition penalty ``p != 1`` divides the positive scores (multiplies the negative ones) of
    every token already in a row's prompt or response by ``p`` first (Keskar et al. 2019, CTRL;
    ``model.generate``'s ``repetition_penalty``).
    """
    import inspect

    from transformers import DynamicCache

    rows = input_ids.shape[0] * k
    try:
        cache = DynamicCache(config=model.config)  # transformers 5: layers fit to the model
    except TypeError:
        cache = DynamicCache()
    # transformers renamed `past_key_values` to `cache` (5.x); pass the name this model takes
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                   use_cache=True, logits_to_keep=1, **{name: cache}).logits
    _on_cache(cache, "batch_repeat_interleave", k)
    scores = logits[:, -1].float().repeat_interleave(k, dim=0)
    mask = attention_mask.repeat_interleave(k, dim=0)
    position = positions[:, -1:].repeat_interleave(k, dim=0)
    live = list(range(rows))  # the row each batch row is
    penalty = getattr(sampler, "repetition_penalty", 1.0)
    seen = _tokens_seen(input_ids, attention_mask, scores.shape[-1]).repeat_interleave(k, dim=0) \
        if penalty != 1.0 else None
    stop = torch.tensor(list(stops), dtype=torch.long, device=input_ids.device)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    ended = [False] * rows
    for step in range(max_new_tokens):
        if step == 0 and len(stop):
            scores[:, stop] = float("-inf")
        if seen is not None:
            scores = torch.where(seen, torch.where(scores < 0, scores * penalty, scores / penalty),
                                 scores)
        next_tokens = sampler.perturb(scores, live).argmax(dim=-1)
        if seen is not None:
            seen[torch.arange(len(live), device=seen.device), next_tokens] = True
        done = torch.isin(next_tokens, stop)
        for row, token, finished in zip(live, next_tokens.tolist(), done.tolist(), strict=True):
            tokens[row].append(token)
            ended[row] = finished
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            _on_cache(cache, "batch_select_indices", keep)
            live = [live[i] for i in keep.tolist()]
            next_tokens, mask, position = next_tokens[keep], mask[keep], position[keep]
            seen = seen[keep] if seen is not None else None
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        position = position + 1
        scores = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=position,
                       use_cache=True, **{name: cache}).logits[:, -1].float()
    return tokens, ended


def _tokens_seen(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """(B, vocab) bool: which tokens each left-padded prompt (B, W) holds (padding left out)."""
    counts = torch.zeros((input_ids.shape[0], vocab), dtype=torch.long, device=input_ids.device)
    return counts.scatter_add_(1, input_ids, attention_mask.long()) > 0


def _on_cache(cache: Any, method: str, arg: Any) -> None:
    """Apply a batch method to every layer of ``cache`` (transformers 5), or to the cache (4.x)."""
    for part in getattr(cache, "layers", None) or [cache]:
        getattr(part, method)(arg)


def load_generator_model(name: str, *, device: str = "auto", dtype: str = "auto",
                         trust_remote_code: bool = False, allow_pickle: bool = False) -> tuple[Any, Any]:
    """(model in eval mode, tokenizer) for sampling, loaded through :mod:`realspo.models`."""
    from realspo.models import load_model, load_tokenizer, pick_device, pick_dtype

    dev = pick_device(device)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    model = load_model(name, "causal-lm", dtype=pick_dtype(dev, dtype), device=dev,
                       trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    model.eval()
    return model, tokenizer


def sample_reply(model: Any, tokenizer: Any, messages: list[dict[str, str]], settings: SamplingSettings,
                 turn: int = 0) -> tuple[str, bool]:
    """The model's next turn in a conversation (``chat``): ``(text, finished)``.

    Args:
        model: a causal LM in eval mode.
        tokenizer: its tokenizer.
        messages: the conversation so far, ``[{role, content}]``, ending with the user's turn.
        settings: the sampling settings (``num_responses`` is ignored: one reply).
        turn: the reply's number in the conversation; with ``settings.seed`` it fixes the noise,
            so the same conversation gets the same replies.

    Returns:
        the reply, and whether it ended on its own (False: cut at ``max_new_tokens``).
    """
    one = SamplingSettings(**{**asdict(settings), "num_responses": 1})
    texts, finished = sample_batch(model, tokenizer, [PromptRecord(turn, f"turn-{turn}", messages)], one)
    return texts[0][0], finished[0][0]


def iter_samples(model: Any, tokenizer: Any, prompts: Sequence[PromptRecord], settings: SamplingSettings,
                 batch_size: int = 4, progress: bool = True, initial: int = 0,
                 desc: str = "generate"
                 ) -> Iterator[tuple[list[PromptRecord], list[list[str]], list[list[bool]]]]:
    """Yield ``(batch of prompts, their samples, which samples finished)`` for consecutive
    batches (see :func:`sample_batch`), with a progress bar."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"'batch_size' must be at least 1, got {batch_size}")
    settings.validate()
    PromptFormat.of(tokenizer, settings.chat_template)  # fail before the first batch
    with tqdm(total=initial + len(prompts), initial=initial, unit="prompt", desc=desc,
              disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start:start + batch_size])
            samples, finished = sample_batch(model, tokenizer, batch, settings)
            bar.update(len(batch))
            yield batch, samples, finished
