"""The one prompt renderer: how every stage turns a prompt (and a response) into text and tokens.

``generate`` and ``evaluate`` (sampling), ``select --conditioned`` (embeddings), ``label``
(reward-model scoring, annotator tasks), ``train`` (and its reference pass) and ``evaluate``'s
implicit-reward log-probs all go through :class:`PromptFormat`, so a model is trained and scored
on exactly the tokens it sees at inference. ``--chat-template auto|on|off`` picks the mode
(:func:`uses_chat_template`; ``auto``: the tokenizer's chat template when it has one).

**With a chat template.** A message list is rendered with ``add_generation_prompt=True``; a
plain string is one user message; HH text (``"\\n\\nHuman: ...\\n\\nAssistant:"``, optionally
``"System: ..."`` first, as :mod:`realspo.conversations` writes message lists into
``PromptGroup.prompt``) is turned back into messages (:func:`hh_messages`); a string that
already ends with the template's generation prompt is used verbatim. The response is what the
template renders for the assistant turn: its content plus the end-of-turn token, and whatever
the template writes after it (ChatML's ``"\\n"``: kept, so prompt + response tokens equal
``apply_chat_template(messages + [assistant])`` token for token, as in TRL). A model's default
system prompt stays as the template renders it.

**Without one.** The prompt is its HH text (message lists rendered by
:mod:`realspo.conversations`); a response after an HH prompt's final ``"Assistant:"`` gets the
single space HH puts there when it does not start with whitespace itself; EOS follows it.

**Token boundaries** (:meth:`PromptFormat.encode`, TRL 1.x's rule): the prompt is tokenized
alone and prompt + response jointly; the prompt part is the longest common prefix of the prompt
ids with every joint tokenization of the pair, and the rest of each joint sequence is the
response. Whitespace at the end of a prompt therefore goes where the tokenizer puts it
(``"France is "`` + ``"Paris."`` scores ``" Paris"``, not ``" "``, ``"Paris"``). When a token
merges across the boundary the merged token counts as response and the prompt loses its
last token(s): :attr:`Encoded.merged` says so (``train`` counts these pairs).

**Finished or cut.** A response that stopped at the generation limit (``finished=False``) gets
no EOS or end-of-turn; a finished one that already ends in it gets no second one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from realspo.conversations import HH_ASSISTANT, ROLE_LABELS, prompt_from_turns
from realspo.errors import ConfigError
from realspo.template_sandbox import render_guarded

CHAT_TEMPLATE_MODES = ("auto", "on", "off")
CHAT_TEMPLATE_HELP = ("render prompts with the tokenizer's chat template: auto (if it has one), on "
                      "(required) or off (HH text)")
Prompt = str | list[dict[str, str]]

_HH_TURN = re.compile(r"\n\n(Human|Assistant|System): ?")
_ROLES = {"Human": "user", "Assistant": "assistant", "System": "system"}
_SENTINEL = "\x00realspo\x00"


def uses_chat_template(tokenizer: Any, mode: str) -> bool:
    """Whether prompts go through ``tokenizer.apply_chat_template`` (``on`` needs a template)."""
    if mode not in CHAT_TEMPLATE_MODES:
        raise ConfigError(f"--chat-template: expected one of {', '.join(CHAT_TEMPLATE_MODES)}, got {mode!r}")
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        raise ConfigError("--chat-template on: this tokenizer has no chat template")
    return mode == "on" or (mode == "auto" and has)


def hh_messages(text: str) -> list[dict[str, str]] | None:
    """HH prompt text back to ``[{role, content}]`` (None if ``text`` is not HH text).

    HH text starts with ``"\\n\\nHuman: "`` (or ``"System: "``) and ends with ``"\\n\\nAssistant:"``;
    the inverse of :func:`realspo.conversations.prompt_from_turns`.
    """
    body = "\n\n" + text if text.startswith("System:") else text
    if not body.startswith("\n\n") or not body.endswith(HH_ASSISTANT):
        return None
    parts = _HH_TURN.split(body[: -len(HH_ASSISTANT)])
    if parts[0] or len(parts) < 3:
        return None
    return [{"role": _ROLES[label], "content": content}
            for label, content in zip(parts[1::2], parts[2::2], strict=True)]


@dataclass
class Encoded:
    """A prompt and its responses as token ids (:meth:`PromptFormat.encode`).

    ``prompt_ids + response_ids[i]`` is response ``i``'s sequence; ``merged[i]`` is True when
    the prompt alone tokenized differently at its end (the prompt lost tokens to the response).
    """

    prompt_ids: list[int]
    response_ids: list[list[int]]
    merged: list[bool] = field(default_factory=list)


def prompt_format(tokenizer: Any, mode: str = "auto") -> PromptFormat:
    """``tokenizer``'s :class:`PromptFormat` for ``mode`` (a PromptFormat is returned as it is)."""
    return tokenizer if isinstance(tokenizer, PromptFormat) else PromptFormat.of(tokenizer, mode)


@dataclass(frozen=True, eq=False)
class PromptFormat:
    """How one tokenizer's model sees prompts: chat-templated or HH text (see the module docs)."""

    tokenizer: Any
    templated: bool

    @classmethod
    def of(cls, tokenizer: Any, mode: str = "auto") -> PromptFormat:
        """The format for ``--chat-template mode`` (ConfigError for ``on`` without a template)."""
        return cls(tokenizer, uses_chat_template(tokenizer, mode))

    # -- text ------------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, str]], generation: bool = False) -> str:
        # the template is the model's code: sandboxed, with a time and an output limit
        return render_guarded(lambda: self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation),
            getattr(self.tokenizer, "name_or_path", "") or "the tokenizer")

    @cached_property
    def _generation_prompt(self) -> str:
        """What ``add_generation_prompt`` appends (ChatML: ``"<|im_start|>assistant\\n"``)."""
        user = [{"role": "user", "content": "x"}]
        alone, generation = self._render(user), self._render(user, True)
        return generation[len(alone):] if generation.startswith(alone) else ""

    @cached_property
    def _assistant_end(self) -> str:
        """What the template writes after an assistant turn's content (``"<|im_end|>\\n"``)."""
        user = [{"role": "user", "content": "x"}]
        full = self._render(user + [{"role": "assistant", "content": _SENTINEL}])
        return full.split(_SENTINEL, 1)[1] if _SENTINEL in full else ""

    @cached_property
    def _end_marks(self) -> tuple[str, ...]:
        """Texts that end a turn: the template's end-of-turn and EOS (not to be doubled)."""
        marks = {self._assistant_end.strip() if self.templated else "", self.tokenizer.eos_token or ""}
        return tuple(sorted((m for m in marks if m), key=len, reverse=True))

    def is_rendered(self, prompt: Prompt) -> bool:
        """A string already rendered with the template (it ends with the generation prompt)."""
        return (self.templated and isinstance(prompt, str) and bool(self._generation_prompt)
                and prompt.endswith(self._generation_prompt))

    def messages(self, prompt: Prompt) -> list[dict[str, str]]:
        """The prompt as messages: a list as given, HH text parsed back, other text one user turn."""
        if isinstance(prompt, list):
            return [{"role": m["role"], "content": m["content"]} for m in prompt]
        return hh_messages(prompt) or [{"role": "user", "content": prompt}]

    def prompt_text(self, prompt: Prompt) -> str:
        """The text the model continues (what ``generate`` samples after)."""
        if not self.templated:
            if isinstance(prompt, str):
                return prompt
            return prompt_from_turns([(ROLE_LABELS[m["role"].lower()], m["content"]) for m in prompt])
        if self.is_rendered(prompt):
            return prompt  # type: ignore[return-value]
        return self._render(self.messages(prompt), True)

    def _strip_end(self, response: str) -> str:
        stripped = response.rstrip()
        for mark in self._end_marks:
            if stripped.endswith(mark):
                return stripped[: -len(mark)]
        return response

    def joint_text(self, prompt: Prompt, response: str, finished: bool = True) -> str:
        """Prompt + response as one text: the assistant turn as the template renders it (content,
        end-of-turn and what follows) or, without a template, the HH continuation (EOS is added
        as a token by :meth:`encode`, not here). A cut response gets no end-of-turn."""
        text = self.prompt_text(prompt)
        if not self.templated:
            needs_space = text.endswith(HH_ASSISTANT) and response[:1] not in ("", " ", "\n", "\t")
            return text + (" " if needs_space else "") + response
        if not finished:
            return text + response
        content = self._strip_end(response)
        if self.is_rendered(prompt):
            return text + content + self._assistant_end
        full = self._render(self.messages(prompt) + [{"role": "assistant", "content": content}])
        return full if full.startswith(text) else text + content + self._assistant_end

    def readable(self, prompt: Prompt) -> str:
        """The conversation as an annotator reads it (:func:`readable_turns`), with the system
        prompt the model saw (the template's default one included)."""
        if self.is_rendered(prompt):
            return prompt  # type: ignore[return-value]
        return readable_turns(prompt, self._default_system() if self.templated else None)

    def _default_system(self) -> str | None:
        """The system prompt the template adds when the messages have none (SmolLM2's)."""
        user = [{"role": "user", "content": "x"}]
        bare = self._render(user)
        given = self._render([{"role": "system", "content": _SENTINEL}] + user)
        if _SENTINEL not in given:
            return None
        before, after = given.split(_SENTINEL, 1)
        if bare == given.replace(_SENTINEL, "") or not (bare.startswith(before) and bare.endswith(after)):
            return None
        return bare[len(before): len(bare) - len(after)] or None

    # -- tokens ----------------------------------------------------------------------------

    def _ids(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=not self.templated)["input_ids"])
        eos = self.tokenizer.eos_token_id
        if not self.templated and self._appends_eos and ids and ids[-1] == eos:
            ids = ids[:-1]  # a tokenizer that appends EOS by itself: encode decides about EOS
        return ids

    @cached_property
    def _appends_eos(self) -> bool:
        ids = list(self.tokenizer("a", add_special_tokens=True)["input_ids"])
        return bool(ids) and ids[-1] == self.tokenizer.eos_token_id

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """The prompt's token ids as the model reads them before its first sampled token.

        An empty prompt gets BOS (or EOS): the first response token needs a position to be
        predicted from."""
        ids = self._ids(self.prompt_text(prompt))
        if not ids:
            start = self.tokenizer.bos_token_id
            start = self.tokenizer.eos_token_id if start is None else start
            if start is None:
                raise ValueError("empty prompt and the tokenizer has no BOS or EOS token to start with")
            ids = [start]
        return ids

    def encode(self, prompt: Prompt, responses: Sequence[str],
               finished: Sequence[bool] | None = None) -> Encoded:
        """Token ids of ``prompt`` and each of ``responses`` (one shared prompt, see the
        module's boundary rule). ``finished[i]`` False: response ``i`` was cut, no EOS."""
        finished = [True] * len(responses) if finished is None else list(finished)
        alone = self.prompt_ids(prompt)
        lead = alone[:1] if not self._ids(self.prompt_text(prompt)) else []  # the empty prompt's start
        joints = []
        for response, done in zip(responses, finished, strict=True):
            ids = lead + self._ids(self.joint_text(prompt, response, done))
            eos = self.tokenizer.eos_token_id
            if done and not self.templated and eos is not None and (not ids or ids[-1] != eos):
                ids.append(eos)
            joints.append(ids)
        common = [_common_prefix(alone, ids) for ids in joints]
        cut = min(common)
        # keep at least one response token in each sequence
        cut = min([cut] + [len(ids) - 1 for ids in joints])
        if cut < 1:
            raise ValueError("the response leaves no prompt token to predict it from")
        return Encoded(alone[:cut], [ids[cut:] for ids in joints], [c < len(alone) for c in common])


def readable_turns(prompt: Prompt, default_system: str | None = None) -> str:
    """A prompt as ``"System: ...\n\nHuman: ..."`` turns (HH text and message lists; other text
    as it is), with ``default_system`` first when the prompt has no system turn of its own."""
    messages = prompt if isinstance(prompt, list) else hh_messages(prompt)
    if messages is None:
        if not default_system:
            return prompt  # type: ignore[return-value]
        messages = [{"role": "user", "content": prompt}]
    if default_system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}] + list(messages)
    return "\n\n".join(f"{ROLE_LABELS.get(m['role'].lower(), m['role'])}: {m['content']}"
                        for m in messages)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
