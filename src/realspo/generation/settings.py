"""What determines the samples (:class:`SamplingSettings`), and sampling defaults from the model
itself (``generate`` and ``chat``). No torch here: commands validate settings before loading it.

A model's authors often say how it should be sampled: ``generation_config.json`` beside the
weights (``temperature``, ``top_p``, ``top_k``, ``max_new_tokens``, ``repetition_penalty``),
or, in a ``.gguf`` file, llama.cpp's ``general.sampling.*`` metadata. An option left unset
(None) takes, in this order: the model's ``generation_config.json`` (for a ``.gguf``, the one
in its dequantized cache directory), the GGUF file's sampling metadata, realspo's default
(:data:`REALSPO_DEFAULTS`). A value given by a flag or ``--config`` always wins. Where each
value came from is kept, so a run can say it at start (:meth:`SamplingDefaults.describe`).

A model value that cannot be sampled with (a temperature of 0: greedy, which would give K
identical responses; a top-p outside (0, 1]) is passed over with a warning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from realspo.chat_format import CHAT_TEMPLATE_MODES
from realspo.errors import ConfigError
from realspo.gguf import find_gguf, resolve_model_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingSettings:
    """Everything that determines the samples (besides the model and the prompts)."""

    num_responses: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    chat_template: str = "auto"  # auto | on | off
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    repetition_penalty: float = 1.0  # CTRL's penalty on tokens already in the text; 1 = off

    def validate(self) -> None:
        if self.num_responses < 1:
            raise ConfigError(f"'num_responses' must be at least 1, got {self.num_responses}")
        if not self.temperature >= 0:
            raise ConfigError(f"'temperature' must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"'top_p' must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"'max_new_tokens' must be at least 1, got {self.max_new_tokens}")
        if self.top_k < 0:
            raise ConfigError(f"'top_k' must be >= 0 (0 = off), got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ConfigError(f"'repetition_penalty' must be > 0 (1 = off), got {self.repetition_penalty}")
        if self.chat_template not in CHAT_TEMPLATE_MODES:
            raise ConfigError(f"'chat_template' must be auto, on or off, got {self.chat_template!r}")


# realspo's own defaults, used where neither a flag nor the model sets a value
REALSPO_DEFAULTS: dict[str, float | int] = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 256, "repetition_penalty": 1.0,
}
SAMPLING_OPTIONS = tuple(REALSPO_DEFAULTS)
# llama.cpp's GGUF keys for the same settings (gguf.constants.Keys.General.SAMPLING_*)
GGUF_SAMPLING_KEYS = {
    "temperature": "general.sampling.temp", "top_p": "general.sampling.top_p",
    "top_k": "general.sampling.top_k", "repetition_penalty": "general.sampling.penalty_repeat",
}
# the help of a sampling option whose default comes from the model ({}: realspo's default)
FROM_MODEL = " (unset: the model's own, from its generation_config.json or .gguf metadata; else {})"
GIVEN = "given"
DEFAULT = "realspo default"


def _usable(name: str, value: Any) -> bool:
    """Whether ``value`` is a setting realspo can sample with (a model's value is checked)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if name == "top_p":
        return 0 < value <= 1
    if name == "top_k":
        return value >= 0 and float(value).is_integer()
    if name == "max_new_tokens":
        return value >= 1 and float(value).is_integer()
    return value > 0  # temperature (0 is greedy: no K distinct samples), repetition_penalty


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampling options of a run and where each came from.

    ``values``: option name -> value, for every name in :data:`SAMPLING_OPTIONS`.
    ``sources``: option name -> ``"given"`` (a flag or ``--config``), the model file it came
    from (``".../generation_config.json"``, ``"GGUF metadata"``) or ``"realspo default"``.
    """

    values: dict[str, float | int]
    sources: dict[str, str]

    def describe(self) -> str:
        """One line: ``temperature 0.7 (generation_config.json), top_p 1.0 (realspo default), ...``."""
        def shown(name: str) -> str:
            value = self.values[name]
            return "off" if name == "top_k" and value == 0 else f"{value:g}"

        return ", ".join(f"{name} {shown(name)} ({self.sources[name]})" for name in SAMPLING_OPTIONS)


def model_sampling_values(model: str, trust_remote_code: bool = False) -> dict[str, tuple[Any, str]]:
    """The sampling settings ``model`` recommends: ``{option: (value, source)}``, only those it sets.

    Reads ``generation_config.json`` through ``transformers.GenerationConfig`` (a directory,
    hub id, or a ``.gguf``'s dequantized cache directory), then fills what it leaves unset
    from a ``.gguf`` file's ``general.sampling.*`` metadata. Unusable values are skipped with a
    warning; a model without a generation config recommends nothing.

    Args:
        model: a model directory, ``.gguf`` file (or directory of one) or hub id.
        trust_remote_code: passed to transformers.

    Returns:
        option name -> (value, where it came from).
    """
    found: dict[str, tuple[Any, str]] = {}
    gguf_file = find_gguf(model)
    location = resolve_model_path(model)
    for name, value in _generation_config(location, trust_remote_code).items():
        found[name] = (value, "generation_config.json")
    if gguf_file is not None:
        for name, value in _gguf_sampling(gguf_file).items():
            found.setdefault(name, (value, "GGUF metadata"))
    for name, (value, source) in list(found.items()):
        if not _usable(name, value):
            log.warning("%s: ignoring %s %r from its %s (realspo cannot sample with it)",
                        model, name, value, source)
            del found[name]
    return {name: (int(v) if name in ("top_k", "max_new_tokens") else float(v), source)
            for name, (v, source) in found.items()}


def _generation_config(location: str, trust_remote_code: bool) -> dict[str, Any]:
    """The sampling fields a model's ``generation_config.json`` sets ({} without one)."""
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # no generation_config.json: nothing recommended
        return {}
    # to_diff_dict: only what differs from transformers' own defaults (4.x fills them in)
    written = config.to_diff_dict()
    return {name: written[name] for name in SAMPLING_OPTIONS if written.get(name) is not None}


def _gguf_sampling(path: Any) -> dict[str, Any]:
    """llama.cpp's ``general.sampling.*`` values in a ``.gguf`` file ({} if it has none)."""
    try:
        from gguf import GGUFReader
    except ImportError:  # resolve_model_path has already said how to install it
        return {}
    fields = GGUFReader(str(path)).fields
    values = {}
    for name, key in GGUF_SAMPLING_KEYS.items():
        field = fields.get(key)
        if field is not None:
            values[name] = field.contents()
    return values


def given_sampling(cfg: Any) -> dict[str, Any]:
    """The sampling options of a command's config as given (None: from the model).

    Args:
        cfg: a config with one attribute per name in :data:`SAMPLING_OPTIONS`.

    Returns:
        option name -> the given value or None.
    """
    return {name: getattr(cfg, name) for name in SAMPLING_OPTIONS}


def sampling_settings(cfg: Any, defaults: SamplingDefaults | None = None, *,
                      num_responses: int) -> SamplingSettings:
    """The :class:`SamplingSettings` of a command's config: its given options, the rest from
    ``defaults`` (None: :data:`REALSPO_DEFAULTS`, to validate the given values before the
    model is read).

    Args:
        cfg: a config with the sampling options, ``seed`` and ``chat_template``.
        defaults: what :func:`resolve_sampling` found, or None.
        num_responses: responses per prompt.

    Returns:
        the settings (not yet validated).
    """
    base = defaults.values if defaults is not None else REALSPO_DEFAULTS
    values = {**base, **{k: v for k, v in given_sampling(cfg).items() if v is not None}}
    return SamplingSettings(num_responses=num_responses, seed=cfg.seed,
                            chat_template=cfg.chat_template, **values)


def resolve_sampling(model: str, given: dict[str, Any], trust_remote_code: bool = False) -> SamplingDefaults:
    """Each sampling option: ``given`` (flag or config) > the model's > :data:`REALSPO_DEFAULTS`.

    Args:
        model: the model that will sample (see :func:`model_sampling_values`).
        given: option name -> value, None where the user left it unset.
        trust_remote_code: passed to transformers.

    Returns:
        the values and their sources.
    """
    unset = [name for name in SAMPLING_OPTIONS if given.get(name) is None]
    recommended = model_sampling_values(model, trust_remote_code) if unset else {}
    values: dict[str, float | int] = {}
    sources: dict[str, str] = {}
    for name in SAMPLING_OPTIONS:
        if given.get(name) is not None:
            values[name], sources[name] = given[name], GIVEN
        elif name in recommended:
            values[name], sources[name] = recommended[name]
        else:
            values[name], sources[name] = REALSPO_DEFAULTS[name], DEFAULT
    return SamplingDefaults(values, sources)
