"""Label Studio, both ways: its import JSON and labeling config out, its JSON export in.

Out (:func:`write_label_studio_tasks`): one task per pair, ``{"data": {pair_id, export_id,
prompt, A, B, A_cut_off, B_cut_off}}``, and beside the tasks (``tasks.json`` ->
``tasks.label-config.xml``) the labeling config to paste into the project's settings
(:data:`LABELING_CONFIG`): the prompt and both texts, and a ``Choices`` control named
``preference`` over them with the values ``A``, ``B``, ``tie`` and ``skip``, the answers a
CSV sheet takes.

In (:func:`read_label_studio_export`): Label Studio's JSON export, a list of tasks each with
its ``data`` and an ``annotations`` list. Every entry of that list is one annotator
(``completed_by``); cancelled annotations (``was_cancelled``) are skipped and counted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realspo.errors import InputError
from realspo.outputs import atomic_path, check_writable, write_json
from realspo.sources import Row

CONTROL = "preference"
LABELING_CONFIG = """<View>
  <Header value="Prompt"/>
  <Text name="prompt" value="$prompt"/>
  <Header value="Response A"/>
  <Text name="A" value="$A"/>
  <Header value="Response B"/>
  <Text name="B" value="$B"/>
  <Header value="Which response is better? (a response ending in [cut off here ...] reached the token limit)"/>
  <Choices name="preference" toName="A,B" choice="single-radio" required="true" showInline="true">
    <Choice value="A"/>
    <Choice value="B"/>
    <Choice value="tie"/>
    <Choice value="skip"/>
  </Choices>
  <TextArea name="comment" toName="prompt" placeholder="Comment (optional)" maxSubmissions="1"/>
</View>
"""
"""realspo's labeling config for Label Studio (what ``--task-format label-studio`` writes)."""


def config_path(tasks: str | os.PathLike) -> Path:
    """Where the labeling config of a Label Studio tasks file goes: ``t.json`` -> ``t.label-config.xml``."""
    tasks = Path(tasks)
    return tasks.with_name(tasks.stem + ".label-config.xml")


def write_label_studio_tasks(path: str | os.PathLike, tasks: Sequence[dict[str, Any]],
                             overwrite: bool = False) -> list[Path]:
    """Write Label Studio's import JSON for shown tasks and the labeling config beside it.

    Args:
        path: the tasks file (``.json``).
        tasks: shown tasks (:func:`realspo.labels.annotation.shown_task`).
        overwrite: replace existing outputs.

    Returns:
        The two paths written (tasks, config).
    """
    if Path(path).suffix.lower() != ".json":
        raise InputError(str(path), "--task-format label-studio writes a .json file")
    config = config_path(path)
    check_writable(config, overwrite)
    items = [{"data": {k: v for k, v in t.items() if k not in ("answer", "comment")}}
             for t in tasks]
    with atomic_path(config, overwrite) as tmp:
        tmp.write_text(LABELING_CONFIG, encoding="utf-8")
    write_json(path, items, overwrite)
    return [Path(path), config]


def is_label_studio_export(rows: Sequence[Row]) -> bool:
    """A Label Studio export: a list of tasks that each have ``data`` and ``annotations``."""
    return bool(rows) and all(isinstance(r.data.get("annotations"), list)
                              and isinstance(r.data.get("data"), dict) for r in rows)


def _annotator(value: Any) -> str:
    """The annotator id of ``completed_by``: its email (an expanded user) or ``user-<id>``."""
    if isinstance(value, dict):
        return str(value.get("email") or f"user-{value.get('id')}")
    return f"user-{value}"


def _choice(row: Row, annotation: dict[str, Any]) -> tuple[str | None, str | None]:
    """(the ``preference`` choice, the comment) of one annotation; another control is an error."""
    choice = comment = None
    for result in annotation.get("result") or []:
        if not isinstance(result, dict):
            raise row.error("expected result entries as objects", "annotations")
        name, value = result.get("from_name"), result.get("value") or {}
        if result.get("type") == "textarea":
            text = value.get("text")
            comment = " ".join(text) if isinstance(text, list) else text
        elif result.get("type") == "choices":
            if name != CONTROL:
                raise row.error(f"the choice control is {name!r}, not realspo's {CONTROL!r}: this "
                                "project does not use realspo's labeling config", "annotations")
            choices = value.get("choices")
            if not isinstance(choices, list) or len(choices) != 1:
                raise row.error(f"expected one choice, got {choices!r:.60}", "annotations")
            choice = choices[0]
    return choice, comment


def read_label_studio_export(path: Path, rows: Sequence[Row],
                             counts: dict[str, int]) -> list[dict[str, Any]]:
    """The answers of a Label Studio JSON export, one per non-cancelled annotation.

    Args:
        path: the export file (for messages).
        rows: its tasks, as read by :func:`realspo.sources.read_rows`.
        counts: ``cancelled`` and ``unanswered`` are incremented here.

    Returns:
        One dict per answer, the fields of :class:`realspo.labels.answers.RawAnswer`
        (checked against the key by the caller).

    Raises:
        InputError: tasks without a ``pair_id`` (another project's), naming them, or an
        annotation by another control than ``preference``.
    """
    foreign = [str(r.data.get("id", r.where)) for r in rows if not r.data["data"].get("pair_id")]
    if foreign:
        raise InputError(str(path), f"task(s) {', '.join(foreign[:5])}"
                         f"{' ...' if len(foreign) > 5 else ''} have no pair_id: not tasks "
                         "exported by realspo (another project's export?)")
    out = []
    for row in rows:
        data = row.data["data"]
        for annotation in row.data["annotations"]:
            if not isinstance(annotation, dict):
                raise row.error("expected annotations as objects", "annotations")
            if annotation.get("was_cancelled"):
                counts["cancelled"] += 1
                continue
            choice, comment = _choice(row, annotation)
            if choice is None:
                counts["unanswered"] += 1
                continue
            out.append({"pair_id": data.get("pair_id"), "value": choice, "row": row,
                        "annotator": _annotator(annotation.get("completed_by")),
                        "comment": comment, "export_id": data.get("export_id")})
    return out
