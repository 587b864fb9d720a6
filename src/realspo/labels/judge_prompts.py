"""What an LLM judge (local ``llm:PATH`` or served ``openai:NAME``) is asked, in each mode.

``--judge-mode pairwise`` (the default) shows both responses and asks for a letter, A or B
(:data:`DEFAULT_TEMPLATE`, placeholders ``{prompt}``, ``{response_a}``, ``{response_b}``);
each pair is asked in both orders. ``--judge-mode pointwise`` shows one response and asks Yes
or No (:data:`POINTWISE_TEMPLATE`, placeholders ``{prompt}``, ``{response}``): MT-Bench's
single-answer grading (Zheng et al. 2023), whose grade is P("Yes") against P("No").
``--judge-template FILE`` replaces the text; it must use each placeholder of its mode and no
other (``{{``/``}}`` for literal braces).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from realspo.errors import ConfigError, InputError

DEFAULT_TEMPLATE = """\
Please act as an impartial judge and decide which of two responses answers the user's prompt \
better. Consider helpfulness, correctness and relevance. Do not let the order of the responses \
or their length influence your decision.

[User prompt]
{prompt}

[Response A]
{response_a}

[Response B]
{response_b}

Which response is better? Answer with one letter: A or B."""

POINTWISE_TEMPLATE = """\
[Question]
{prompt}

[Answer]
{response}

Is this answer correct and helpful? Answer Yes or No."""


@dataclass(frozen=True)
class JudgeMode:
    """One way of asking: its default template, the placeholders a template must use, and the
    two answers whose probabilities are compared (the first is the favourable one)."""

    name: str
    template: str
    placeholders: tuple[str, ...]
    answers: tuple[str, str]


PAIRWISE = JudgeMode("pairwise", DEFAULT_TEMPLATE, ("prompt", "response_a", "response_b"), ("A", "B"))
POINTWISE = JudgeMode("pointwise", POINTWISE_TEMPLATE, ("prompt", "response"), ("Yes", "No"))
JUDGE_MODES = {mode.name: mode for mode in (PAIRWISE, POINTWISE)}
PLACEHOLDERS = PAIRWISE.placeholders
JUDGE_MODE_HELP = ("an LLM judge (llm:PATH, openai:NAME): pairwise shows both responses, in both "
                   "orders; pointwise grades each alone, P(Yes) against P(No), no position bias")
TIE_MARGIN_HELP = "--judge-mode pointwise: grades closer than this are a tie"
ANSWERS = PAIRWISE.answers


def judge_mode(name: str) -> JudgeMode:
    """The :class:`JudgeMode` called ``name``; ConfigError if none is."""
    if name not in JUDGE_MODES:
        raise ConfigError(f"--judge-mode must be one of {', '.join(JUDGE_MODES)}, got {name!r}")
    return JUDGE_MODES[name]


def check_template(text: str, source: str, placeholders: tuple[str, ...] = PLACEHOLDERS) -> str:
    """``text`` if it uses each of ``placeholders`` and no other; else InputError."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise InputError(source, f"not a valid template ({exc}); write a literal brace as {{{{ "
                                 "or }}") from None
    unknown = sorted({f"{{{name}}}" for name in fields} - {f"{{{p}}}" for p in placeholders})
    missing = [f"{{{p}}}" for p in placeholders if p not in fields]
    if unknown or missing:
        wanted = ", ".join(f"{{{p}}}" for p in placeholders)
        raise InputError(source, ", ".join(
            ([f"unknown placeholder {', '.join(unknown)}"] if unknown else [])
            + ([f"missing placeholder {', '.join(missing)}"] if missing else []))
            + f"; a judge template uses exactly {wanted}")
    return text


def read_template(path: str | None, mode: JudgeMode = PAIRWISE) -> str:
    """The template in file ``path`` (checked for ``mode``), or ``mode``'s default for None."""
    if path is None:
        return mode.template
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such template file") from None
    except UnicodeDecodeError:
        raise InputError(path, "the template is not UTF-8 text") from None
    except OSError as exc:
        raise InputError(path, f"cannot read the template ({exc.strerror or exc})") from None
    return check_template(text, path, mode.placeholders)
