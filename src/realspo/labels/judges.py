"""The judges registry: what scores responses, by name.

A judge is one of two kinds. A *reward* judge (:data:`Judge`) scores each (prompt, response):
``(prompts, responses) -> (N,) rewards``. A *pairwise* judge (entry flag ``pairwise``;
:class:`realspo.labels.pairwise.PairwiseJudge`) compares two responses to a prompt:
``compare(prompts, responses_a, responses_b) ->`` a ``Comparison``, the probability that A
is preferred, asked in both orders.

``realspo label --judge``/``--oracle`` and ``realspo evaluate --judge`` resolve their value
here (:func:`find_judge`): the first entry of :data:`JUDGES` whose ``matches`` accepts it; a
value no entry accepts is an error listing the known judges. Adding a judge is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from realspo.errors import ConfigError, InputError
from realspo.labels.judge_prompts import judge_mode, read_template
from realspo.labels.pairwise import PairwiseJudge
from realspo.served.options import ServedOptions, check_base_url, served_name

Judge = Callable[[Sequence[str], Sequence[str]], np.ndarray]  # (prompts, responses) -> (N,) rewards


@dataclass(frozen=True)
class JudgeOptions:
    """Settings of judges that load a model (ignored by the others)."""

    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16
    max_length: int = 1024  # longest input in tokens, cut from the left
    trust_remote_code: bool = False
    allow_pickle: bool = False
    template: str | None = None  # a pairwise judge's prompt template file (None: its default)
    progress: bool = True
    chat_template: str = "auto"  # how a reward model reads prompt + response (realspo.chat_format)
    mode: str = "pairwise"  # an LLM judge's --judge-mode: pairwise or pointwise
    tie_margin: float = 0.0  # pointwise: grades closer than this are a tie
    served: ServedOptions | None = None  # the server of an openai:NAME judge


@dataclass(frozen=True)
class JudgeEntry:
    """One kind of judge.

    ``name``: the value that selects it, or a placeholder (``PATH``) for an entry that accepts
    a family of values through ``matches``. ``make(value, options)`` builds the judge: a
    :data:`Judge`, or a :class:`PairwiseJudge` when ``pairwise``. ``check(value, options,
    prompts)``, when given, is a cheap early check that the judge can be made and can judge
    these prompts, run before expensive work (``evaluate`` runs it before generating).
    ``uses_model_options``: whether :class:`JudgeOptions` matter to it; ``uses_template``:
    whether it reads ``JudgeOptions.template``, ``mode`` and ``tie_margin`` (an LLM judge). ``label_source``: the ``label_source`` of the
    rows ``label --judge`` writes with it.
    """

    name: str
    description: str
    matches: Callable[[str], bool]
    make: Callable[[str, JudgeOptions], Judge | PairwiseJudge]
    check: Callable[[str, JudgeOptions, Sequence[str]], None] | None = None
    uses_model_options: bool = False
    pairwise: bool = False
    uses_template: bool = False
    label_source: str = "judge"


def _proving_ground_judge(value: str, options: JudgeOptions) -> Judge:
    from realspo.proving_ground.world import build_world

    oracle = build_world().oracle

    def judge(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.asarray(oracle.score_batch(prompts, responses), dtype=np.float64)

    return judge


def _check_proving_ground(value: str, options: JudgeOptions, prompts: Sequence[str]) -> None:
    from realspo.proving_ground.world import build_world

    oracle = build_world().oracle
    for prompt in prompts:
        oracle.question(prompt)  # InputError: not a proving-ground question


REWARD_MODEL_NEEDED = ("a reward model must be a sequence classifier (AutoModelForSequenceClassification "
                       "with one output); to judge with a chat model, pass --judge llm:PATH")


def check_reward_model(name: str, options: JudgeOptions = JudgeOptions(),
                       prompts: Sequence[str] = ()) -> None:
    """Refuse (InputError) anything but a one-output sequence classifier, in one line that says
    what a reward model must be and how to judge with a chat model instead (``llm:PATH``).

    A ``.gguf`` file (or a directory of one) is refused before transformers is imported: the
    format holds causal LMs, whose config transformers cannot even read from it.

    Args:
        name: the reward model's directory, file or hub id.
        options: the judge options (``trust_remote_code`` is read).
        prompts: unused (the registry's check signature).
    """
    from realspo.gguf import find_gguf

    if find_gguf(name) is not None:
        raise InputError(name, f"a .gguf file holds a causal LM, not a reward model; {REWARD_MODEL_NEEDED}")
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(name, f"could not load model config ({str(exc).splitlines()[0]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise InputError(name, f"not a sequence classifier (architectures: {', '.join(archs) or 'none'});"
                         f" {REWARD_MODEL_NEEDED}")
    if config.num_labels != 1:
        raise InputError(name, f"a reward model needs one output (num_labels=1), this one has "
                         f"{config.num_labels}; {REWARD_MODEL_NEEDED}")


def reward_model_judge(name: str, options: JudgeOptions = JudgeOptions()) -> Judge:
    """The rewards of a one-output ``AutoModelForSequenceClassification`` (path or hub id).

    The text scored is prompt + response as :class:`realspo.chat_format.PromptFormat` renders
    them for the reward model's tokenizer (``options.chat_template``): the conversation with the
    assistant turn under its chat template, else HH text (a space after ``"Assistant:"``);
    truncated from the left to ``max_length`` tokens so the response is kept. Anything that is
    not a one-label sequence classifier is refused.
    """
    import torch

    from realspo.chat_format import PromptFormat
    from realspo.models import load_model, load_tokenizer, pick_device, pick_dtype

    check_reward_model(name, options)
    dev = pick_device(options.device)
    tokenizer = load_tokenizer(name, trust_remote_code=options.trust_remote_code)
    tokenizer.truncation_side = "left"
    fmt = PromptFormat.of(tokenizer, options.chat_template)
    model = load_model(name, "sequence-classifier", dtype=pick_dtype(dev, options.dtype), device=dev,
                       trust_remote_code=options.trust_remote_code, allow_pickle=options.allow_pickle)
    model.eval()
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id  # it finds each row's last token

    @torch.inference_mode()
    def judge(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        texts = [fmt.joint_text(p, r) for p, r in zip(prompts, responses, strict=True)]
        out = []
        for lo in range(0, len(texts), options.batch_size):
            enc = tokenizer(texts[lo:lo + options.batch_size], return_tensors="pt", padding=True,
                            truncation=True, max_length=options.max_length,
                            add_special_tokens=not fmt.templated).to(dev)
            out.append(model(**enc).logits[:, 0].float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    return judge


def _is_model_location(value: str) -> bool:
    """A local path that exists, or a hub id (``org/name``)."""
    return Path(value).exists() or "/" in value


def _llm_judge(value: str, options: JudgeOptions) -> PairwiseJudge:
    from realspo.labels.llm_judge import LLMJudge

    o = options
    return LLMJudge(value.removeprefix("llm:"), template=o.template, device=o.device, dtype=o.dtype,
                    batch_size=o.batch_size, max_length=o.max_length, progress=o.progress,
                    trust_remote_code=o.trust_remote_code, allow_pickle=o.allow_pickle,
                    mode=judge_mode(o.mode), tie_margin=o.tie_margin)


def _check_llm_judge(value: str, options: JudgeOptions, prompts: Sequence[str]) -> None:
    from realspo.labels.llm_judge import check_llm_judge

    check_llm_judge(value.removeprefix("llm:"), options.template, options.trust_remote_code,
                    judge_mode(options.mode))


def _served_options(value: str, options: JudgeOptions) -> ServedOptions:
    """The judge's server: ``options.served``, else the defaults at ``$OPENAI_BASE_URL``."""
    return options.served or ServedOptions(base_url=check_base_url(None, "--judge-base-url"))


def _served_judge(value: str, options: JudgeOptions) -> PairwiseJudge:
    from realspo.labels.served_judge import ServedJudge

    return ServedJudge(served_name(value, "--judge"), _served_options(value, options),
                       template=options.template, mode=judge_mode(options.mode),
                       tie_margin=options.tie_margin, progress=options.progress)


def _check_served_judge(value: str, options: JudgeOptions, prompts: Sequence[str]) -> None:
    from realspo.served.client import ServedClient

    served = _served_options(value, options)
    read_template(options.template, judge_mode(options.mode))
    if not served.dry_run:
        ServedClient(served_name(value, "--judge"), served).check_reachable()


PROVING_GROUND = JudgeEntry(
    name="proving-ground",
    description="the oracle of the default proving-ground world (proving-ground prompts only)",
    matches=lambda value: value == "proving-ground",
    make=_proving_ground_judge,
    check=_check_proving_ground,
    label_source="proving-ground",
)
LLM = JudgeEntry(
    name="llm:PATH",
    description="an LLM judge: a causal LM, directory, .gguf file or hub id, asked which of "
                "two responses is better, in both orders; --judge-template sets its prompt",
    matches=lambda value: value.startswith("llm:") and len(value) > 4,
    make=_llm_judge,
    check=_check_llm_judge,
    uses_model_options=True,
    pairwise=True,
    uses_template=True,
    label_source="llm-judge",
)
SERVED = JudgeEntry(
    name="openai:NAME",
    description="an LLM judge behind an OpenAI-compatible server (vLLM, llama.cpp, TGI, Ollama, "
                "a hosted API) at --judge-base-url, asked as llm:PATH is; cached and resumable",
    matches=lambda value: value.startswith("openai:"),
    make=_served_judge,
    check=_check_served_judge,
    pairwise=True,
    uses_template=True,
    label_source="served-judge",
)
REWARD_MODEL = JudgeEntry(
    name="PATH",
    description="a reward model: a local directory or hub id (org/name) of a one-output "
                "AutoModelForSequenceClassification",
    matches=_is_model_location,
    make=reward_model_judge,
    check=check_reward_model,
    uses_model_options=True,
    label_source="reward-model",
)
# The order is the matching order: ``llm:/models/x`` and ``openai:org/name`` also look like a
# PATH, so LLM and SERVED come first.
JUDGES: tuple[JudgeEntry, ...] = (PROVING_GROUND, LLM, SERVED, REWARD_MODEL)


def judges_help() -> str:
    """The known judges in one line, for CLI help and error messages."""
    return "; ".join(f"{entry.name} ({entry.description})" for entry in JUDGES)


def find_judge(value: str) -> JudgeEntry:
    """The entry of :data:`JUDGES` that accepts ``value``; ConfigError listing them if none does."""
    for entry in JUDGES:
        if entry.matches(value):
            return entry
    raise ConfigError(f"unknown judge {value!r}; known judges: {judges_help()}")


def check_judge(value: str, options: JudgeOptions = JudgeOptions(),
                prompts: Sequence[str] = ()) -> JudgeEntry:
    """Resolve ``value``, run its entry's early check on ``prompts``, return the entry."""
    entry = find_judge(value)
    llm_judges = ', '.join(e.name for e in JUDGES if e.uses_template)
    for flag, changed in (("--judge-template", options.template is not None),
                          ("--judge-mode", judge_mode(options.mode).name != "pairwise"),
                          ("--tie-margin", options.tie_margin != 0.0)):
        if changed and not entry.uses_template:
            raise ConfigError(f"{flag} has no effect with judge {value!r} (only with {llm_judges})")
    if entry.check is not None:
        entry.check(value, options, prompts)
    return entry


def make_judge(value: str, options: JudgeOptions = JudgeOptions()) -> Judge:
    """The reward judge ``value`` names (see :data:`JUDGES`); a pairwise one is refused."""
    entry = find_judge(value)
    if entry.pairwise:
        raise ConfigError(f"judge {value!r} compares pairs and gives no rewards; it cannot "
                          "serve here (use it with label --judge or evaluate --judge)")
    return cast(Judge, entry.make(value, options))


def make_pairwise_judge(value: str, options: JudgeOptions = JudgeOptions()) -> PairwiseJudge:
    """The pairwise judge ``value`` names (see :data:`JUDGES`)."""
    entry = find_judge(value)
    if not entry.pairwise:
        raise ConfigError(f"judge {value!r} gives rewards, not pairwise comparisons")
    return cast(PairwiseJudge, entry.make(value, options))
