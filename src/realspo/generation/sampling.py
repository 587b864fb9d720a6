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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from realspo.chat_format import CHAT_TEMPLATE_MODES, PromptFormat
from realspo.errors import ConfigError
from realspo.generation.prompts import PromptRecord


@dataclass(frozen=True)
class SamplingSettings:
    """Everything that determines the samples (besides the model and the prompts)."""

    num_responses: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    chat_template: str = "auto"  # auto | on | off

    def validate(self) -> None:
        if self.num_responses < 1:
            raise ConfigError(f"'num_responses' must be at least 1, got {self.num_responses}")
        if not self.temperature >= 0:
            raise ConfigError(f"'temperature' must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"'top_p' must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"'max_new_tokens' must be at least 1, got {self.max_new_tokens}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ConfigError(f"'chat_template' must be auto, on or off, got {self.chat_template!r}")


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed for sample ``sample_index`` of prompt ``prompt_index`` under ``seed``."""
    digest = hashlib.sha256(f"{seed}/{prompt_index}/{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class GumbelSampler:
    """A ``generate`` logits processor that turns greedy decoding into seeded sampling.

    scores ``(rows, vocab)`` -> ``warp(scores) + G`` where ``warp`` applies temperature and
    top-p (non-nucleus tokens become -inf) and ``G[r]`` is Gumbel(0, 1) noise from row ``r``'s
    private generator; argmax of the result is a sample from ``softmax(warp(scores))``.
    ``temperature == 0`` adds no noise: greedy decoding.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float,
                 device: torch.device) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.greedy = temperature == 0
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.warpers: list = []
        if not self.greedy and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if not self.greedy and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.float()
        if self.greedy:
            return scores
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        vocab = scores.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g, device=scores.device)
                               for g in self.generators])
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
    All ``len(prompts) * K`` sequences go through one left-padded ``model.generate`` call;
    row ``b * K + j`` is sample ``j`` of prompt ``b``, seeded by :func:`row_seed`.
    """
    k = settings.num_responses
    fmt = PromptFormat.of(tokenizer, settings.chat_template)
    ids = [fmt.prompt_ids(p.prompt) for p in prompts]
    width = max(len(i) for i in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # left padding: generation appends on the right
    input_ids = torch.tensor([[pad] * (width - len(i)) + i for i in ids])
    attention_mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    device = next(model.parameters()).device
    input_ids = input_ids.repeat_interleave(k, dim=0).to(device)
    attention_mask = attention_mask.repeat_interleave(k, dim=0).to(device)
    sampler = GumbelSampler([row_seed(settings.seed, p.index, j) for p in prompts for j in range(k)],
                            settings.temperature, settings.top_p, device)
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
        temperature=None, top_p=None, top_k=None,  # sampling happens in GumbelSampler
        max_new_tokens=settings.max_new_tokens, min_new_tokens=1,
        pad_token_id=tokenizer.pad_token_id, logits_processor=[sampler],
    )
    generated = out[:, input_ids.shape[1]:]
    stops = torch.tensor(sorted(stop_token_ids(model, tokenizer)), device=generated.device)
    ended = torch.isin(generated, stops).any(dim=1).tolist()
    decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
    responses = [d.strip() for d in decoded]
    return ([responses[b * k:(b + 1) * k] for b in range(len(prompts))],
            [ended[b * k:(b + 1) * k] for b in range(len(prompts))])


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
