"""``shp``: SHP / SHP-2 comparisons ``{post_id, history, human_ref_A, human_ref_B, labels,
score_A?, score_B?, domain?}``, grouped by ``post_id``.

Prompt = the post as one HH turn (``"\\n\\nHuman: {history}\\n\\nAssistant:"``, the HH
convention); responses = the distinct comment texts (a text seen with different scores keeps
the largest); one preference per comparison (``labels`` 1 means A is preferred).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from realspo.conversations import HH_ASSISTANT
from realspo.formats.fields import (
    nonempty_response,
    optional_cell,
    required_cell,
    row_id,
    string_cell,
)
from realspo.formats.format import Format
from realspo.schema import PromptGroup
from realspo.sources import Row, finite_float


def detect(columns: set[str], head_rows: list[Row]) -> bool:
    """``post_id``, ``history``, ``human_ref_A`` and ``human_ref_B``."""
    return {"post_id", "history", "human_ref_A", "human_ref_B"} <= columns


@dataclass
class _Post:
    """An SHP post being assembled from its comparison rows."""

    history: str
    first: Row
    index: dict[str, int] = field(default_factory=dict)  # response text -> response index
    scores: list[float] = field(default_factory=list)
    preferences: list[tuple[int, int]] = field(default_factory=list)


def _label(row: Row) -> int:
    value = required_cell(row, "labels", "0 or 1 (1 means A is preferred)", "shp")
    if isinstance(value, str) and value.strip() in ("0", "1"):  # CSV cells
        return int(value.strip())
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        return int(value)
    raise row.error(f"expected 0 or 1 (1 means A is preferred), got {value!r}", "labels")


def read(rows: list[Row], skipped: dict[str, int]) -> list[PromptGroup]:
    """One group per post, in order of first appearance."""
    # Scores are read when the first row has them; then every row must.
    with_scores = optional_cell(rows[0], "score_A") is not None
    posts: dict[str, _Post] = {}
    for row in rows:
        post_id = row_id(row, "", ("post_id",)) if optional_cell(row, "post_id") is not None else None
        if post_id is None:
            raise row.error("missing (the shp format needs the post's id)", "post_id")
        history = string_cell(row, "history", "the post text", "shp")
        label = _label(row)
        post = posts.setdefault(post_id, _Post(history, row))
        if history != post.history:
            raise row.error(f"differs from the history of post {post_id!r} at {post.first.where}", "history")
        pair = []
        for side in ("A", "B"):
            name = f"human_ref_{side}"
            text = nonempty_response(string_cell(row, name, "a comment string", "shp"), row, name)
            j = post.index.setdefault(text, len(post.index))
            if with_scores:
                score = finite_float(row, required_cell(row, f"score_{side}", "a number", "shp"), f"score_{side}")
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


FORMAT = Format("shp", "post_id, history, human_ref_A, human_ref_B, labels", detect, read)
