"""Sampling candidate responses from a causal LM (the ``generate`` stage).

Input: a prompts table (``prompt`` as text or a ``[{role, content}, ...]`` message list,
optional ``prompt_id``/``id``). Output: one multi-completion row per prompt,
``{prompt_id, prompt, responses: [K strings]}``, the format ``realspo select`` reads.

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

**Resuming.** Finished prompts are appended to ``OUT.partial.jsonl`` (flushed and fsynced
after each batch; its first line records the settings). ``resume=True`` checks the settings,
drops a torn last line, and continues with the next prompt. When every prompt is done the
final table is written atomically and the sidecar is removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from realspo.errors import ConfigError, RealspoError
from realspo.faults import after_batch
from realspo.outputs import check_writable, write_rows
from realspo.sources import Row, read_rows

log = logging.getLogger(__name__)

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class PromptRecord:
    """One prompt to sample for: its position in the file, its id, the prompt as given."""

    index: int
    prompt_id: str
    prompt: Prompt


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
        if self.chat_template not in ("auto", "on", "off"):
            raise ConfigError(f"'chat_template' must be auto, on or off, got {self.chat_template!r}")


# ---------------------------------------------------------------------------------------
# Reading prompts


ROLES = ("system", "user", "human", "assistant")


def _check_prompt(row, value: Any) -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise row.error("is empty; expected the prompt text", "prompt")
        return value
    if isinstance(value, list) and value:
        for n, msg in enumerate(value):
            if not (isinstance(msg, dict) and isinstance(msg.get("role"), str)
                    and isinstance(msg.get("content"), str)):
                raise row.error(f"message {n} is not an object with string 'role' and 'content'",
                                "prompt")
            if msg["role"] not in ROLES:
                raise row.error(f"message {n} has role {msg['role']!r}; expected one of "
                                f"{', '.join(ROLES)}", "prompt")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise row.error(f"expected a string or a list of {{role, content}} messages, got "
                    f"{type(value).__name__} {value!r:.60}", "prompt")


def _auto_id(prompt: Prompt) -> str:
    # the convention of realspo.formats.registry: a hash of the (HH-rendered) prompt text
    text = prompt if isinstance(prompt, str) else render_messages(prompt)
    return "p-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def read_prompts(source: str | os.PathLike, split: str = "train") -> list[PromptRecord]:
    """Read a prompts table (JSONL/JSON/CSV/Parquet/dataset dir) into :class:`PromptRecord`.

    Each row needs ``prompt`` (non-empty text, or a non-empty list of ``{role, content}``
    messages). ``prompt_id`` (or ``id``) is used as the id when present and must be unique;
    otherwise the id is ``"p-"`` + 12 hex digits of the prompt's SHA-256, with ``#2``, ``#3``...
    appended to repeated prompts. Bad rows raise :class:`InputError` naming row and field.
    """
    rows = read_rows(str(source), split)
    if not rows:
        raise RealspoError(f"{source}: no prompts (the file has no rows)")
    records: list[PromptRecord] = []
    seen: dict[str, str] = {}
    for index, row in enumerate(rows):
        if "prompt" not in row.data:
            raise row.error("missing; expected the prompt text or a list of {role, content} "
                            f"messages (columns: {', '.join(map(str, row.data)) or 'none'})", "prompt")
        prompt = _check_prompt(row, row.data["prompt"])
        field = "prompt_id" if "prompt_id" in row.data else "id"
        given = row.data.get(field)
        given = given.strip() if isinstance(given, str) else given
        if given is None or given == "":
            base = _auto_id(prompt)
            prompt_id, n = base, 1
            while prompt_id in seen:
                n += 1
                prompt_id = f"{base}#{n}"
        elif isinstance(given, (str, int)) and not isinstance(given, bool):
            prompt_id = str(given)
            if prompt_id in seen:
                raise row.error(f"duplicate id {prompt_id!r} (first at {seen[prompt_id]})", field)
        else:
            raise row.error(f"expected a string or integer id, got {type(given).__name__}", field)
        seen[prompt_id] = row.where
        records.append(PromptRecord(index, prompt_id, prompt))
    return records


# ---------------------------------------------------------------------------------------
# Sampling


def render_messages(messages: list[dict[str, str]]) -> str:
    """Validated messages as HH-RLHF text ending in ``\n\nAssistant:``: the same rendering as
    :func:`realspo.conversations.prompt_text`, so prompt ids agree between generate and select."""
    from realspo.conversations import prompt_text

    return prompt_text(messages, Row({}, "messages", "prompt"), "prompt")


def uses_chat_template(tokenizer, chat_template: str) -> bool:
    """Whether prompts go through ``tokenizer.apply_chat_template`` (``on`` needs one)."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "on" and not has:
        raise ConfigError("--chat-template on: this tokenizer has no chat template")
    return chat_template == "on" or (chat_template == "auto" and has)


def prompt_text(prompt: Prompt, tokenizer, templated: bool) -> str:
    """The text the model continues: chat-templated (with generation prompt) or plain."""
    if templated:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return prompt if isinstance(prompt, str) else render_messages(prompt)


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


@torch.inference_mode()
def sample_batch(model, tokenizer, prompts: Sequence[PromptRecord],
                 settings: SamplingSettings) -> list[list[str]]:
    """``settings.num_responses`` samples for each prompt: a list (per prompt) of K strings.

    All ``len(prompts) * K`` sequences go through one left-padded ``model.generate`` call;
    row ``b * K + j`` is sample ``j`` of prompt ``b``, seeded by :func:`row_seed`.
    """
    k = settings.num_responses
    templated = uses_chat_template(tokenizer, settings.chat_template)
    texts = [prompt_text(p.prompt, tokenizer, templated) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True,
                        add_special_tokens=not templated)
    finally:
        tokenizer.padding_side = side
    device = next(model.parameters()).device
    input_ids = enc["input_ids"].repeat_interleave(k, dim=0).to(device)
    attention_mask = enc["attention_mask"].repeat_interleave(k, dim=0).to(device)
    sampler = GumbelSampler([row_seed(settings.seed, p.index, j) for p in prompts for j in range(k)],
                            settings.temperature, settings.top_p, device)
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
        temperature=None, top_p=None, top_k=None,  # sampling happens in GumbelSampler
        max_new_tokens=settings.max_new_tokens, min_new_tokens=1,
        pad_token_id=tokenizer.pad_token_id, logits_processor=[sampler],
    )
    decoded = tokenizer.batch_decode(out[:, input_ids.shape[1]:], skip_special_tokens=True)
    responses = [d.strip() for d in decoded]
    return [responses[b * k:(b + 1) * k] for b in range(len(prompts))]


def load_generator_model(name: str, *, device: str = "auto", dtype: str = "auto",
                         trust_remote_code: bool = False, allow_pickle: bool = False):
    """(model in eval mode, tokenizer) for sampling, loaded through :mod:`realspo.models`."""
    from realspo.models import load_model, load_tokenizer, pick_device, pick_dtype

    dev = pick_device(device)
    tokenizer = load_tokenizer(name, trust_remote_code=trust_remote_code)
    model = load_model(name, "causal-lm", dtype=pick_dtype(dev, dtype), device=dev,
                       trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    model.eval()
    return model, tokenizer


def iter_samples(model, tokenizer, prompts: Sequence[PromptRecord], settings: SamplingSettings,
                 batch_size: int = 4, progress: bool = True, initial: int = 0,
                 desc: str = "generate") -> Iterator[tuple[list[PromptRecord], list[list[str]]]]:
    """Yield ``(batch of prompts, their samples)`` for consecutive batches, with a progress bar."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ConfigError(f"'batch_size' must be at least 1, got {batch_size}")
    settings.validate()
    uses_chat_template(tokenizer, settings.chat_template)  # fail before the first batch
    with tqdm(total=initial + len(prompts), initial=initial, unit="prompt", desc=desc,
              disable=not progress) as bar:
        for start in range(0, len(prompts), batch_size):
            batch = list(prompts[start:start + batch_size])
            samples = sample_batch(model, tokenizer, batch, settings)
            bar.update(len(batch))
            yield batch, samples


# ---------------------------------------------------------------------------------------
# The resumable `generate` stage


def partial_path(out: str | os.PathLike) -> Path:
    """The progress sidecar of ``out``: ``OUT.partial.jsonl``."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def _read_partial(sidecar: Path, header: dict[str, Any],
                  prompts: Sequence[PromptRecord]) -> list[dict[str, Any]]:
    """Finished rows from a sidecar; a torn last line (from a kill mid-write) is cut off."""
    raw = sidecar.read_bytes()
    lines = raw.split(b"\n")
    complete = lines[:-1]  # text after the last newline was never finished
    if lines[-1]:
        log.info("%s: dropping an unfinished last line", sidecar)
    good = sum(len(line) + 1 for line in complete)
    if good != len(raw):
        with sidecar.open("r+b") as fh:
            fh.truncate(good)
    try:
        parsed = [json.loads(line) for line in complete if line.strip()]
    except json.JSONDecodeError:
        raise RealspoError(f"{sidecar}: corrupt progress file; pass --overwrite to start over") from None
    if not parsed:  # killed while writing the first batch: nothing was finished
        sidecar.unlink()
        return []
    if parsed[0].get("realspo_generate") is None:
        raise RealspoError(f"{sidecar}: not a realspo generate progress file; pass --overwrite")
    saved = parsed[0]["realspo_generate"]
    differ = [k for k in header if saved.get(k) != header[k]]
    if differ:
        raise ConfigError(
            f"{sidecar}: cannot resume, settings differ from the interrupted run: "
            + ", ".join(f"{k}={saved.get(k)!r} then, {header[k]!r} now" for k in differ))
    rows = parsed[1:]
    for row, prompt in zip(rows, prompts, strict=False):
        if row.get("prompt_id") != prompt.prompt_id:
            raise RealspoError(f"{sidecar}: row for {row.get('prompt_id')!r} does not match prompt "
                               f"{prompt.prompt_id!r}; pass --overwrite to start over")
    if len(rows) > len(prompts):
        raise RealspoError(f"{sidecar}: holds more rows than there are prompts; pass --overwrite")
    return rows


def generate_candidates(model_name: str, prompts: Sequence[PromptRecord], out: str | os.PathLike,
                        settings: SamplingSettings, *, batch_size: int = 4, resume: bool = False,
                        overwrite: bool = False, device: str = "auto", dtype: str = "auto",
                        trust_remote_code: bool = False, progress: bool = True,
                        on_batch: Callable[[int, int], None] | None = None,
                        allow_pickle: bool = False) -> list[dict[str, Any]]:
    """Sample K responses per prompt with ``model_name`` and write ``out`` (multi-completion).

    Returns the rows written. ``on_batch(done, total)`` is called after each batch has been
    saved to the sidecar (a test hook: raising there simulates an interruption).
    """
    settings.validate()
    out = check_writable(out, overwrite)
    sidecar = partial_path(out)
    header = {"model": str(model_name), "prompts": len(prompts), **asdict(settings)}
    done: list[dict[str, Any]] = []
    if sidecar.exists():
        if resume:
            done = _read_partial(sidecar, header, prompts)
            log.info("resuming after %d of %d prompts", len(done), len(prompts))
        elif overwrite:
            sidecar.unlink()
        else:
            raise RealspoError(f"{sidecar}: an interrupted run left its progress here; pass "
                               "--resume to continue it or --overwrite to start over")
    elif resume:
        log.info("%s: nothing to resume, starting from the first prompt", sidecar)
    # The header goes in with the first finished batch, so a run that fails before any
    # prompt is done (bad model, bad option) leaves no sidecar behind.
    pending = [] if sidecar.exists() else [{"realspo_generate": header}]
    remaining = prompts[len(done):]
    if remaining:
        model, tokenizer = load_generator_model(model_name, device=device, dtype=dtype,
                                                trust_remote_code=trust_remote_code,
                                                allow_pickle=allow_pickle)
        for batch, samples in iter_samples(model, tokenizer, remaining, settings, batch_size,
                                           progress, initial=len(done)):
            rows = [{"prompt_id": p.prompt_id, "prompt": p.prompt, "responses": s}
                    for p, s in zip(batch, samples, strict=True)]
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            _append(sidecar, pending + rows)
            pending = []
            done.extend(rows)
            if on_batch is not None:
                on_batch(len(done), len(prompts))
            after_batch()  # a no-op outside the kill-and-resume tests
    final = _drop_empty(done)
    write_rows(out, final, overwrite=overwrite)
    sidecar.unlink()
    return final


def _drop_empty(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without empty responses (the multi-completion format has no empty ones); a prompt
    whose every sample is empty is left out. Both are logged as warnings."""
    kept = [{**r, "responses": [s for s in r["responses"] if s]} for r in rows]
    empty = sum(len(r["responses"]) for r in rows) - sum(len(r["responses"]) for r in kept)
    if empty:
        log.warning("dropped %d empty response(s) (the model stopped at once)", empty)
    lost = [r["prompt_id"] for r in kept if not r["responses"]]
    if lost:
        log.warning("left out %d prompt(s) whose every sample was empty, e.g. %s", len(lost), lost[0])
    return [r for r in kept if r["responses"]]


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
