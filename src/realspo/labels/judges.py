"""The judges registry: reward functions ``(prompts, responses) -> (N,) rewards`` by name.

``realspo label --oracle`` and ``realspo evaluate --judge`` resolve their value here
(:func:`find_judge`): the first entry of :data:`JUDGES` whose ``matches`` accepts it; a value
no entry accepts is an error listing the known judges. Adding a judge is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realspo.errors import ConfigError, InputError

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
    chat_template: str = "auto"  # how a reward model reads prompt + response (realspo.chat_format)


@dataclass(frozen=True)
class JudgeEntry:
    """One kind of judge.

    ``name``: the value that selects it, or a placeholder (``PATH``) for an entry that accepts
    a family of values through ``matches``. ``make(value, options)`` builds the judge;
    ``check(value, options)``, when given, is a cheap early check run before expensive work
    (``evaluate`` runs it before generating). ``uses_model_options``: whether
    :class:`JudgeOptions` matter to it.
    """

    name: str
    description: str
    matches: Callable[[str], bool]
    make: Callable[[str, JudgeOptions], Judge]
    check: Callable[[str, JudgeOptions], None] | None = None
    uses_model_options: bool = False


def _proving_ground_judge(value: str, options: JudgeOptions) -> Judge:
    from realspo.proving_ground.world import build_world

    oracle = build_world().oracle

    def judge(prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        return np.asarray(oracle.score_batch(prompts, responses), dtype=np.float64)

    return judge


def check_reward_model(name: str, options: JudgeOptions = JudgeOptions()) -> None:
    """Refuse (InputError) a path whose config is not a one-output sequence classifier."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=options.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise InputError(name, f"could not load model config ({str(exc).splitlines()[0]})") from None
    archs = list(getattr(config, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs):
        raise InputError(name, f"not a sequence classifier (architectures: {', '.join(archs) or 'none'});"
                         " expected an AutoModelForSequenceClassification reward model")
    if config.num_labels != 1:
        raise InputError(name, f"a reward model needs one output (num_labels=1), this one has "
                         f"{config.num_labels}")


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


PROVING_GROUND = JudgeEntry(
    name="proving-ground",
    description="the oracle of the default proving-ground world (proving-ground prompts only)",
    matches=lambda value: value == "proving-ground",
    make=_proving_ground_judge,
)
REWARD_MODEL = JudgeEntry(
    name="PATH",
    description="a reward model: a local directory or hub id (org/name) of a one-output "
                "AutoModelForSequenceClassification",
    matches=_is_model_location,
    make=reward_model_judge,
    check=check_reward_model,
    uses_model_options=True,
)
JUDGES: tuple[JudgeEntry, ...] = (PROVING_GROUND, REWARD_MODEL)


def judges_help() -> str:
    """The known judges in one line, for CLI help and error messages."""
    return "; ".join(f"{entry.name} ({entry.description})" for entry in JUDGES)


def find_judge(value: str) -> JudgeEntry:
    """The entry of :data:`JUDGES` that accepts ``value``; ConfigError listing them if none does."""
    for entry in JUDGES:
        if entry.matches(value):
            return entry
    raise ConfigError(f"unknown judge {value!r}; known judges: {judges_help()}")


def check_judge(value: str, options: JudgeOptions = JudgeOptions()) -> None:
    """Resolve ``value`` and run its entry's early check, if it has one."""
    entry = find_judge(value)
    if entry.check is not None:
        entry.check(value, options)


def make_judge(value: str, options: JudgeOptions = JudgeOptions()) -> Judge:
    """The judge ``value`` names (see :data:`JUDGES`)."""
    return find_judge(value).make(value, options)
