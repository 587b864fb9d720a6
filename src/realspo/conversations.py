"""Conversations as HH text: the one validation and rendering of ``[{role, content}]``
messages that every stage shares (the format readers in :mod:`realspo.formats`, prompts in
:mod:`realspo.generation.prompts`), so prompt ids agree across stages.

``user``/``human`` -> ``Human``, ``assistant`` -> ``Assistant``, ``system`` -> ``System``; turns
are joined as ``"\n\n{Label}: {content}"`` and a first system turn is written ``"System: ..."``.

Two validations share the role table :data:`ROLE_LABELS`: :func:`turns_of` for messages that
are only rendered (roles in any case, content may be a list of text parts), and
:func:`chat_messages` for messages that are also kept as given and may go to a tokenizer's
chat template (``generate``'s prompts: roles spelled exactly, string content).
"""

from __future__ import annotations

from typing import Any

from realspo.sources import Row

HH_ASSISTANT = "\n\nAssistant:"
ROLE_LABELS = {"system": "System", "user": "Human", "human": "Human", "assistant": "Assistant"}

Turns = list[tuple[str, str]]  # (HH label, content) per message


def split_hh_transcript(text: str) -> tuple[str, str]:
    """Split an HH transcript: prompt = up to and including the last ``"\\n\\nAssistant:"``.

    Raises ``ValueError`` when the marker is absent (callers turn it into an InputError).
    """
    cut = text.rfind(HH_ASSISTANT)
    if cut < 0:
        raise ValueError("no '\\n\\nAssistant:' in transcript")
    end = cut + len(HH_ASSISTANT)
    return text[:end], text[end:]


def _content(value: Any, row: Row, field: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise row.error("missing (a message needs role and content)", field)
    # Multimodal-style content: [{"type": "text", "text": ...}, ...]; only text parts are usable.
    if isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value
    ):
        return "".join(p["text"] for p in value)
    raise row.error(f"expected message content as a string, got {type(value).__name__}", field)


def turns_of(messages: Any, row: Row, field: str) -> Turns:
    """``[{role, content}, ...]`` -> ``[(label, content), ...]``; an InputError names the bad
    message (``field[i]``), an unknown role or non-text content."""
    if not isinstance(messages, list):
        raise row.error(f"expected a list of {{role, content}} messages, got {type(messages).__name__}", field)
    turns = []
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise row.error(f"expected a {{role, content}} message, got {type(message).__name__}", where)
        role = message.get("role")
        label = ROLE_LABELS.get(role.lower()) if isinstance(role, str) else None
        if label is None:
            raise row.error(f"unknown role {role!r}: expected one of {', '.join(ROLE_LABELS)}", f"{where}.role")
        turns.append((label, _content(message.get("content"), row, f"{where}.content")))
    return turns


def chat_messages(messages: list, row: Row, field: str) -> list[dict[str, str]]:
    """Messages kept as given (a chat template may read them): each a ``{role, content}`` object
    with string content and one of the roles of :data:`ROLE_LABELS` spelled exactly; returns
    copies holding only role and content. An InputError names ``field`` and the message."""
    for n, message in enumerate(messages):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):
            raise row.error(f"message {n} is not an object with string 'role' and 'content'", field)
        if message["role"] not in ROLE_LABELS:
            raise row.error(f"message {n} has role {message['role']!r}; expected one of "
                            f"{', '.join(ROLE_LABELS)}", field)
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def render_turns(turns: Turns, at_start: bool = True) -> str:
    # A leading system turn has no "\n\n" so the text starts "System: ..." (schema convention).
    return "".join(
        f"{label}: {content}" if at_start and i == 0 and label == "System" else f"\n\n{label}: {content}"
        for i, (label, content) in enumerate(turns)
    )


def render_messages(messages: list, row: Row, field: str) -> str:
    """Render ``[{role, content}, ...]`` as HH text: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``.

    Roles: ``user``/``human`` -> Human, ``assistant`` -> Assistant, ``system`` -> System (a
    first system turn is written ``"System: ..."``). Any other role is an InputError naming
    ``field`` and the role.
    """
    return render_turns(turns_of(messages, row, field))


def prompt_text(messages: list, row: Row, field: str) -> str:
    """A conversational prompt as HH text ending in ``"\n\nAssistant:"`` (the schema's
    rendering; :mod:`realspo.generation.prompts` uses it too, so prompt ids agree across stages)."""
    return prompt_from_turns(turns_of(messages, row, field))


def prompt_from_turns(turns: Turns) -> str:
    """HH prompt text ending in ``"\\n\\nAssistant:"`` (unless the last turn is the assistant's)."""
    if not turns:
        return ""
    text = render_turns(turns)
    return text if turns[-1][0] == "Assistant" else text + HH_ASSISTANT


def response_from_turns(turns: Turns) -> str:
    """A conversational response: the assistant's content, later turns appended in HH style."""
    if turns and turns[0][0] == "Assistant":
        return turns[0][1] + render_turns(turns[1:], at_start=False)
    return render_turns(turns, at_start=False)
