"""Format readers: raw rows (:mod:`realspo.sources`) -> :class:`~realspo.schema.PromptGroup`.

Formats (``format="auto"`` detects them from the columns of the first rows):

* ``hh``: HH-RLHF ``{chosen, rejected}`` transcripts; prompt = up to and including the last
  ``"\n\nAssistant:"``, response = the rest verbatim (``prompt + response`` = transcript).
* ``shp``: SHP / SHP-2 comparisons grouped by ``post_id``; prompt = the post as one HH turn
  (``"\n\nHuman: {history}\n\nAssistant:"``, the HH convention); responses = distinct comment
  texts (a text seen with different scores keeps the largest); a preference per comparison.
* ``trl``: ``{prompt, chosen, rejected}``, strings or ``[{role, content}]`` lists; without
  ``prompt`` the shared leading messages / HH prompt / text up to a whitespace boundary.
* ``multi``: ``{prompt, responses, scores?}`` or ``{prompt, completions: [{response, score?}]}``.

Conversations render as HH text (:func:`realspo.conversations.render_messages`); string prompts stay verbatim (they
may already carry a chat template). ``prompt_id`` is the row's ``prompt_id``, ``id`` or
``post_id`` (first present), else ``"p-"`` + 12 hex digits of the prompt's SHA-256; repeats get
``"#2"``, ``"#3"``, ... (a TRL row is a pair, and several pairs may share a prompt's id), except
a repeated explicit id in the multi format, which is an error (a multi row is a prompt's whole
candidate set). HH rows whose chosen and rejected transcripts differ before the last Assistant
turn (they occur in the real HH-RLHF data) are skipped, counted and reported with a warning.
The user-facing description is ``docs/readme/formats.md``.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from realspo.conversations import (
    HH_ASSISTANT,
    Turns,
    prompt_from_turns,
    response_from_turns,
    split_hh_transcript,
    turns_of,
)
from realspo.errors import ConfigError, InputError
from realspo.schema import PromptGroup
from realspo.sources import Row, finite_float, read_rows

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("hh", "shp", "trl", "multi")
ID_COLUMNS = ("prompt_id", "id", "post_id")
SKIP_HH_DIVERGENT = "chosen and rejected transcripts diverge before the last Assistant turn"
DETECT_ROWS = 10  # rows whose columns decide the format


# --- row helpers --------------------------------------------------------------------------


def _optional(row: Row, name: str) -> Any:
    """An optional cell; None or blank (an empty CSV cell) means absent."""
    value = row.data.get(name)
    return None if value is None or isinstance(value, str) and not value.strip() else value


def _get(row: Row, name: str, expected: str, fmt: str) -> Any:
    value = row.data.get(name)
    if value is None:
        raise row.error(f"missing (the {fmt} format needs {expected})", name)
    return value


def _string(row: Row, name: str, expected: str, fmt: str) -> str:
    value = _get(row, name, expected, fmt)
    if not isinstance(value, str):
        raise row.error(f"expected {expected}, got {type(value).__name__} {value!r:.40}", name)
    return value


def _text_or_turns(row: Row, name: str, fmt: str) -> str | Turns:
    value = _get(row, name, "a string or a list of {role, content} messages", fmt)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return turns_of(value, row, name)
    raise row.error(
        f"expected a string or a list of {{role, content}} messages, got {type(value).__name__} {value!r:.40}", name
    )


def _nonempty(text: str, row: Row, field: str) -> str:
    if not text.strip():
        raise row.error("empty response text", field)
    return text


def _response(value: Any, row: Row, field: str) -> str:
    """One response cell: a string or a message list (rendered)."""
    if isinstance(value, str):
        return _nonempty(value, row, field)
    if isinstance(value, list):
        return _nonempty(response_from_turns(turns_of(value, row, field)), row, field)
    raise row.error(f"expected a response string or message list, got {type(value).__name__} {value!r:.40}", field)


def _row_id(row: Row, prompt: str, columns: tuple[str, ...] = ID_COLUMNS) -> str:
    for column in columns:
        value = row.data.get(column)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise row.error(f"expected a string or integer id, got {type(value).__name__}", column)
        if str(value).strip():
            return str(value).strip()
    return "p-" + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


def _unique_ids(groups: list[PromptGroup]) -> None:
    """Suffix repeated ids with "#2", "#3", ... in input order (deterministic)."""
    used: set[str] = set()
    counts: dict[str, int] = {}
    for group in groups:
        base = group.prompt_id
        new = base
        while new in used:
            counts[base] = counts.get(base, 1) + 1
            new = f"{base}#{counts[base]}"
        used.add(new)
        group.prompt_id = new


def _pair_scores(row: Row) -> list[float] | None:
    """Optional ``score_chosen``/``score_rejected`` columns (both or neither)."""
    present = [_optional(row, n) is not None for n in ("score_chosen", "score_rejected")]
    if not any(present):
        return None
    if not all(present):
        missing = "score_rejected" if present[0] else "score_chosen"
        raise row.error("missing (score_chosen and score_rejected come together)", missing)
    return [finite_float(row, row.data[n], n) for n in ("score_chosen", "score_rejected")]


# --- readers ------------------------------------------------------------------------------


def _read_hh(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    groups = []
    first_divergent = None
    for row in rows:
        split = []
        for name in ("chosen", "rejected"):
            text = _string(row, name, "an HH transcript string", "hh")
            if HH_ASSISTANT not in text:
                raise row.error("expected an HH transcript containing '\\n\\nAssistant:'", name)
            split.append(split_hh_transcript(text))
        (prompt, chosen), (other, rejected) = split
        if prompt != other:
            # Real HH-RLHF has such rows (the two transcripts branch at an earlier turn): they
            # compare two conversations, not two answers to one prompt. Skipped and counted.
            skipped[SKIP_HH_DIVERGENT] = skipped.get(SKIP_HH_DIVERGENT, 0) + 1
            first_divergent = first_divergent or (row, len(os.path.commonprefix([prompt, other])))
            continue
        responses = [_nonempty(chosen, row, "chosen"), _nonempty(rejected, row, "rejected")]
        groups.append(PromptGroup(_row_id(row, prompt), prompt, responses, None, [(0, 1)], {"row": row.where}))
    if first_divergent is not None:
        row, at = first_divergent
        log.warning("%s: skipped %d of %d rows whose chosen and rejected transcripts diverge before "
                    "the last '\\n\\nAssistant:' turn (first: %s, at character %d)", row.source,
                    skipped[SKIP_HH_DIVERGENT], len(rows), row.where, at)
    return groups


def _strip_prompt_turns(turns: Turns, prompt_turns: Turns) -> Turns:
    n = len(prompt_turns)
    return turns[n:] if 0 < n < len(turns) and turns[:n] == prompt_turns else turns


def _implicit_prompt(chosen: str | Turns, rejected: str | Turns, row: Row) -> tuple[str, list[str]]:
    """Prompt and responses of a row with only chosen/rejected (see the module docstring)."""
    if isinstance(chosen, list) or isinstance(rejected, list):
        if not (isinstance(chosen, list) and isinstance(rejected, list)):
            raise row.error("chosen and rejected must both be strings or both message lists", "rejected")
        n = 0
        while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:  # keep >= 1 each
            n += 1
        prompt, responses = prompt_from_turns(chosen[:n]), [response_from_turns(chosen[n:]), response_from_turns(rejected[n:])]
    elif HH_ASSISTANT in chosen and HH_ASSISTANT in rejected and (
        split_hh_transcript(chosen)[0] == split_hh_transcript(rejected)[0]
    ):
        (prompt, c), (_, r) = split_hh_transcript(chosen), split_hh_transcript(rejected)
        responses = [c, r]
    else:
        prefix = os.path.commonprefix([chosen, rejected])
        cut = max((i for i, ch in enumerate(prefix) if ch.isspace()), default=0)
        while cut > 0 and prefix[cut - 1].isspace():  # responses start with the whitespace, as in HH
            cut -= 1
        prompt, responses = chosen[:cut], [chosen[cut:], rejected[cut:]]
    if not prompt.strip():
        raise row.error("no 'prompt' column, and chosen and rejected share no leading text to use", "chosen")
    return prompt, responses


def _read_trl(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    groups = []
    for row in rows:
        chosen, rejected = _text_or_turns(row, "chosen", "trl"), _text_or_turns(row, "rejected", "trl")
        if row.data.get("prompt") is not None:
            given = _text_or_turns(row, "prompt", "trl")
            prompt = given if isinstance(given, str) else prompt_from_turns(given)
            prompt_turns = [("Human", given)] if isinstance(given, str) else given
            responses = [
                value if isinstance(value, str) else response_from_turns(_strip_prompt_turns(value, prompt_turns))
                for value in (chosen, rejected)
            ]
        else:
            prompt, responses = _implicit_prompt(chosen, rejected, row)
        for name, text in zip(("chosen", "rejected"), responses, strict=True):
            _nonempty(text, row, name)
        groups.append(
            PromptGroup(_row_id(row, prompt), prompt, responses, _pair_scores(row), [(0, 1)], {"row": row.where})
        )
    return groups


def _multi_candidates(row: Row) -> tuple[list[str], list[Any] | None, list[str]]:
    """Responses, raw scores (or None) and each score's field name, from either multi shape."""
    if row.data.get("responses") is not None:
        items = row.data["responses"]
        if not isinstance(items, list):
            raise row.error(f"expected a list of responses, got {type(items).__name__}", "responses")
        responses = [_response(v, row, f"responses[{j}]") for j, v in enumerate(items)]
        raw = _optional(row, "scores")
        if raw is not None and not isinstance(raw, list):
            raise row.error(f"expected a list of numbers, got {type(raw).__name__}", "scores")
        if raw is not None and len(raw) != len(responses):
            raise row.error(f"expected {len(responses)} scores (one per response), got {len(raw)}", "scores")
        return responses, raw, [f"scores[{j}]" for j in range(len(responses))]
    items = _get(row, "completions", "'responses' or 'completions'", "multi")
    if not isinstance(items, list):
        raise row.error(f"expected a list of {{response, score}} objects, got {type(items).__name__}", "completions")
    responses, raw = [], []
    for j, item in enumerate(items):
        if not isinstance(item, dict):
            raise row.error(f"expected a {{response, score}} object, got {type(item).__name__}", f"completions[{j}]")
        responses.append(_response(item.get("response"), row, f"completions[{j}].response"))
        score = item.get("score")
        raw.append(item.get("overall_score") if score is None or score == "" else score)
    fields = [f"completions[{j}].score" for j in range(len(responses))]
    if all(s is None for s in raw):
        return responses, None, fields
    missing = next((j for j, s in enumerate(raw) if s is None), None)
    if missing is not None:
        raise row.error("missing score (give every completion a score, or none)", fields[missing])
    return responses, raw, fields


def _read_multi(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    groups = []
    given_ids: dict[str, str] = {}  # explicit id -> where it was first seen
    for row in rows:
        given = _text_or_turns(row, "prompt", "multi")
        prompt = given if isinstance(given, str) else prompt_from_turns(given)
        responses, raw, fields = _multi_candidates(row)
        if not responses:
            raise row.error("expected at least one response", "responses" if "responses" in row.data else "completions")
        scores = None if raw is None else [finite_float(row, s, f) for s, f in zip(raw, fields, strict=True)]
        prompt_id = _row_id(row, prompt)
        column = next((c for c in ID_COLUMNS if _optional(row, c) is not None), None)
        if column is not None:
            # A multi row is a prompt's whole candidate set: two rows with one explicit id are
            # ambiguous (which scores does `label --candidates` look up?), so refuse them.
            if prompt_id in given_ids:
                raise row.error(f"duplicate id {prompt_id!r} (first at {given_ids[prompt_id]}); "
                                "each prompt's candidates belong in one row", column)
            given_ids[prompt_id] = row.where
        groups.append(PromptGroup(prompt_id, prompt, responses, scores, [], {"row": row.where}))
    return groups


@dataclass
class _Post:
    """An SHP post being assembled from its comparison rows."""

    history: str
    first: Row
    index: dict[str, int] = field(default_factory=dict)  # response text -> response index
    scores: list[float] = field(default_factory=list)
    preferences: list[tuple[int, int]] = field(default_factory=list)


def _shp_label(row: Row) -> int:
    value = _get(row, "labels", "0 or 1 (1 means A is preferred)", "shp")
    if isinstance(value, str) and value.strip() in ("0", "1"):  # CSV cells
        return int(value.strip())
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return int(value)
    raise row.error(f"expected 0 or 1 (1 means A is preferred), got {value!r}", "labels")


def _read_shp(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    # Scores are read when the first row has them; then every row must.
    with_scores = _optional(rows[0], "score_A") is not None
    posts: dict[str, _Post] = {}
    for row in rows:
        post_id = _row_id(row, "", ("post_id",)) if _optional(row, "post_id") is not None else None
        if post_id is None:
            raise row.error("missing (the shp format needs the post's id)", "post_id")
        history = _string(row, "history", "the post text", "shp")
        label = _shp_label(row)
        post = posts.setdefault(post_id, _Post(history, row))
        if history != post.history:
            raise row.error(f"differs from the history of post {post_id!r} at {post.first.where}", "history")
        pair = []
        for side in ("A", "B"):
            text = _nonempty(_string(row, f"human_ref_{side}", "a comment string", "shp"), row, f"human_ref_{side}")
            j = post.index.setdefault(text, len(post.index))
            if with_scores:
                score = finite_float(row, _get(row, f"score_{side}", "a number", "shp"), f"score_{side}")
                if j == len(post.scores):
                    post.scores.append(score)
                else:  # the same comment in another comparison: keep its largest score
                    post.scores[j] = max(post.scores[j], score)
            pair.append(j)
        chosen, rejected = pair if label == 1 else pair[::-1]
        if chosen != rejected and (chosen, rejected) not in post.preferences:
            post.preferences.append((chosen, rejected))
    groups = []
    for post_id, post in posts.items():
        meta: dict[str, Any] = {"row": post.first.where}
        if post.first.data.get("domain") is not None:
            meta["domain"] = post.first.data["domain"]
        prompt = f"\n\nHuman: {post.history}{HH_ASSISTANT}"
        scores = post.scores if with_scores else None
        groups.append(PromptGroup(post_id, prompt, list(post.index), scores, post.preferences, meta))
    return groups


_READERS = {"hh": _read_hh, "shp": _read_shp, "trl": _read_trl, "multi": _read_multi}


# --- public entry points ------------------------------------------------------------------


def detect_format(rows: list[Row]) -> str:
    """The format of ``rows`` from the non-empty columns of the first :data:`DETECT_ROWS` rows.

    shp: ``post_id``, ``history``, ``human_ref_A``, ``human_ref_B``; multi: ``prompt`` and
    ``responses`` or ``completions``; trl: ``chosen``, ``rejected`` and ``prompt``, or no
    ``prompt`` and ``chosen`` not an HH transcript (implicit prompt); hh: ``chosen`` and
    ``rejected`` with ``chosen`` an HH transcript.
    """
    if not rows:
        raise InputError("input", "the dataset is empty (no rows)")
    head = rows[:DETECT_ROWS]
    columns = {k for r in head for k, v in r.data.items() if v is not None}
    if {"post_id", "history", "human_ref_A", "human_ref_B"} <= columns:
        return "shp"
    if "prompt" in columns and {"responses", "completions"} & columns:
        return "multi"
    if {"chosen", "rejected"} <= columns:
        if "prompt" in columns:
            return "trl"
        first = next(r.data["chosen"] for r in head if r.data.get("chosen") is not None)
        return "hh" if isinstance(first, str) and HH_ASSISTANT in first else "trl"
    raise InputError(
        rows[0].source,
        f"cannot detect the format from the columns {sorted(columns)}: expected hh (chosen, rejected "
        "transcripts), shp (post_id, history, human_ref_A, human_ref_B, labels), trl ([prompt,] "
        "chosen, rejected) or multi (prompt with responses or completions)",
    )


def parse_rows(rows: list[Row], format: str = "auto",
               skipped: dict[str, int] | None = None) -> tuple[list[PromptGroup], str]:
    """Turn rows into prompt groups; returns ``(groups, format used)``.

    ``format`` is ``"auto"`` or one of :data:`FORMATS` (anything else is a ConfigError).
    Group ids are unique: repeats of an id get ``"#2"``, ``"#3"``, ... in input order, except
    that a repeated *explicit* id in the multi format is an InputError naming both rows.
    Rows skipped by design (HH rows whose transcripts diverge before the last Assistant turn,
    :data:`SKIP_HH_DIVERGENT`) are counted into ``skipped`` (reason -> rows) when it is given;
    if every row is skipped, that is an InputError.
    """
    name = format.strip().lower() if isinstance(format, str) else format
    if name != "auto" and name not in FORMATS:
        raise ConfigError(f"format: unknown format {format!r}: expected auto or one of {', '.join(FORMATS)}")
    if not rows:
        raise InputError("input", "the dataset is empty (no rows)")
    used = detect_format(rows) if name == "auto" else name
    counts: dict[str, int] = {}
    groups = _READERS[used](rows, counts)
    if not groups:
        reasons = ", ".join(f"{n} {reason}" for reason, n in counts.items())
        raise InputError(rows[0].source, f"no usable rows: all {len(rows)} were skipped ({reasons})")
    if skipped is not None:
        for reason, n in counts.items():
            skipped[reason] = skipped.get(reason, 0) + n
    _unique_ids(groups)
    return groups, used


def load_groups(source: str, format: str = "auto", split: str = "train",
                skipped: dict[str, int] | None = None) -> tuple[list[PromptGroup], str]:
    """Read ``source`` (file, dataset directory or hub id) and parse it; ``(groups, format)``.

    ``skipped``, if given, receives the counts of rows skipped by design (see :func:`parse_rows`).
    """
    rows = read_rows(source, split)
    if not rows:
        raise InputError(str(source), "the dataset is empty (no rows)")
    groups, used = parse_rows(rows, format, skipped)
    how = "auto-detected" if str(format).strip().lower() == "auto" else "given"
    log.info("format: %s (%s)", used, how)
    return groups, used
