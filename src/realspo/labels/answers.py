"""The human round trip, answer side: every way answers come back, read as one list.

:func:`read_answer_sets` takes any mix of

* **answer sheets** (CSV or JSONL): ``pair_id``, ``answer`` (A, B, tie or skip in the order
  shown, any case; blank = unanswered), optional ``annotator``, ``comment``, ``export_id``. A
  sheet without an ``annotator`` column is one annotator, named by the file's stem. A CSV
  saved with ``;`` or tabs is read (and said so); blank spreadsheet rows are skipped and counted;
* **event journals** (JSONL, as ``realspo annotate`` writes): ``{"event": "label", "seq",
  "pair_id", "annotator", "answer", "comment", "export_id", "time"}`` and ``{"event": "undo",
  "seq", "undoes": SEQ}``, applied in ``seq`` order (an undone label is dropped);
* **an annotate campaign directory**: every ``DIR/journals/*.jsonl``, with ``DIR/key.jsonl``
  (an export directory of ``--annotators N``: its answered ``annotator-*`` files);
* **a Label Studio JSON export** (:mod:`realspo.labels.label_studio`), one annotator per
  entry of a task's ``annotations``,

checks them against the export's key (:class:`realspo.labels.annotation.Key`) and returns
:class:`AnswerRow`\\ s in the pairs' own A/B order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from realspo.errors import InputError
from realspo.labels.annotation import ANSWERS, Key, default_key_path, read_key
from realspo.sources import Row, csv_delimiter, read_rows


@dataclass(frozen=True)
class AnswerRow:
    """One annotator's answer to one pair, in the pair's own A/B order (the key undone)."""

    pair_id: str
    answer: str  # A, B, tie or skip
    annotator: str
    comment: str | None = None
    export_id: str | None = None
    where: str = ""  # file:row, for messages


@dataclass
class Answers:
    """What :func:`read_answers` found: the answers, the key, and what it skipped."""

    rows: list[AnswerRow]
    key: Key
    counts: dict[str, int] = field(default_factory=dict)  # blank_rows, unanswered, cancelled, undone
    notes: list[str] = field(default_factory=list)

    @property
    def annotators(self) -> list[str]:
        """The annotators, in order of first appearance."""
        return list(dict.fromkeys(r.annotator for r in self.rows))


@dataclass
class RawAnswer:
    """An answer as read, before the key: the shown-order value and the row it came from."""

    pair_id: Any
    value: Any
    annotator: str
    row: Row
    comment: Any = None
    export_id: Any = None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _check_columns(rows: Sequence[Row], source: str) -> None:
    """Refuse a sheet without ``pair_id`` or ``answer`` columns, naming exactly those missing
    and the columns it has (a JSONL row may leave out an unanswered ``answer``)."""
    if not rows:
        return
    columns = list(dict.fromkeys(k for row in rows[:1] for k in row.data))
    required = ("pair_id", "answer") if source.lower().endswith(".csv") else ("pair_id",)
    missing = [c for c in required if c not in columns]
    if not missing:
        return
    shown = ", ".join(repr(str(c)[:40]) for c in columns[:6])
    delimiter = next((d for d in (";", "\t", "|") if any(d in str(c) for c in columns)), None)
    hint = (f"; the delimiter looks wrong ({delimiter!r}): save the file as comma-separated CSV"
            if delimiter else "")
    raise InputError(source, f"the header lacks {' and '.join(missing)} (columns: {shown}){hint}",
                     where="row 1" if source.lower().endswith(".csv") else "line 1")


def read_sheet(path: Path, counts: dict[str, int], notes: list[str]) -> list[RawAnswer]:
    """An answer sheet's answered rows (blank rows and blank answers counted, not returned)."""
    if path.suffix.lower() == ".csv":
        delimiter = csv_delimiter(path)
        if delimiter != ",":
            notes.append(f"{path}: read as {'tab' if delimiter == chr(9) else repr(delimiter)}"
                         "-separated")
    rows = read_rows(str(path))
    _check_columns(rows, str(path))
    out = []
    for row in rows:
        if all(_blank(v) for v in row.data.values()):
            counts["blank_rows"] += 1  # a spreadsheet's empty line: ",,,,"
            continue
        if _blank(row.data.get("answer")):
            counts["unanswered"] += 1
            continue
        who = row.data.get("annotator")
        out.append(RawAnswer(row.data.get("pair_id"), row.data.get("answer"),
                             str(who).strip() if not _blank(who) else path.stem, row,
                             row.data.get("comment"), row.data.get("export_id")))
    return out


def _int(row: Row, name: str) -> int:
    value = row.data.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise row.error(f"expected an integer, got {value!r:.40}", name)
    return value


def read_journal(path: Path, rows: Sequence[Row], counts: dict[str, int]) -> list[RawAnswer]:
    """A journal's labels that no later ``undo`` event took back."""
    events: dict[int, Row] = {}
    for row in rows:
        seq = _int(row, "seq")
        if seq in events:
            raise row.error(f"seq {seq} appears twice (first at {events[seq].where})", "seq")
        events[seq] = row
    labels: dict[int, Row] = {}
    for seq in sorted(events):
        row = events[seq]
        kind = row.data.get("event")
        if kind == "label":
            labels[seq] = row
        elif kind == "undo":
            undone = _int(row, "undoes")
            if undone not in labels:
                raise row.error(f"undoes seq {undone}, which is no earlier label still in force",
                                "undoes")
            del labels[undone]
            counts["undone"] += 1
        else:
            raise row.error(f"expected 'label' or 'undo', got {kind!r:.40}", "event")
    out = []
    for row in labels.values():
        if _blank(row.data.get("answer")):
            counts["unanswered"] += 1
            continue
        who = row.data.get("annotator")
        out.append(RawAnswer(row.data.get("pair_id"), row.data.get("answer"),
                             str(who) if not _blank(who) else path.stem, row,
                             row.data.get("comment"), row.data.get("export_id")))
    return out


def _read_file(path: Path, counts: dict[str, int], notes: list[str]) -> list[RawAnswer]:
    if not path.is_file():
        raise InputError(str(path), "no such file" if not path.exists() else
                         "not a regular file (expected an answers file or a campaign directory)")
    if path.suffix.lower() == ".json":
        from realspo.labels.label_studio import is_label_studio_export, read_label_studio_export

        rows = read_rows(str(path))
        if is_label_studio_export(rows):
            return [RawAnswer(**a) for a in read_label_studio_export(path, rows, counts)]
    if path.suffix.lower() == ".jsonl":
        rows = read_rows(str(path))
        if rows and "event" in rows[0].data:
            return read_journal(path, rows, counts)
    return read_sheet(path, counts, notes)


def campaign_files(directory: Path) -> list[Path]:
    """The answer files of a directory: the journals of an annotate campaign
    (``DIR/journals/*.jsonl``), else the per-annotator files that ``--export-tasks DIR
    --annotators N`` wrote (``DIR/annotator-*.csv``, ``.jsonl`` or ``.json``), answered."""
    journals = sorted((directory / "journals").glob("*.jsonl"))
    if journals:
        return journals
    sheets = sorted(p for p in directory.glob("annotator-*")
                    if p.suffix.lower() in (".csv", ".jsonl", ".json"))
    if not sheets:
        raise InputError(str(directory), "no journals/*.jsonl and no annotator-* files in this "
                         "directory (expected a `realspo annotate` campaign or an export directory)")
    return sheets


def find_key(paths: Sequence[str | os.PathLike], key: str | os.PathLike | None) -> Path:
    """The key of these answers: ``key`` if given; for a campaign directory ``DIR/key.jsonl``;
    else ``TASKS.key.jsonl`` beside the first file, or ``key.jsonl`` in its directory (what
    ``--export-tasks DIR --annotators N`` writes)."""
    if key is not None:
        return Path(key)
    first = Path(paths[0])
    if first.is_dir():
        return first / "key.jsonl"
    beside = default_key_path(first)
    if not beside.exists() and (first.parent / "key.jsonl").exists():
        return first.parent / "key.jsonl"
    return beside


def read_answers(paths: Sequence[str | os.PathLike], key: str | os.PathLike | None = None,
                 key_data: Key | None = None) -> Answers:
    """Read and check every answer of ``paths`` against the key (see the module docstring).

    Args:
        paths: answer sheets, journals, campaign directories and Label Studio exports.
        key: the key file (default: :func:`find_key`).
        key_data: the key, already read (then ``key`` is ignored).

    Returns:
        :class:`Answers`: the rows (key undone), the key, and counts of blank rows, unanswered
        tasks, cancelled Label Studio annotations and undone journal labels.

    Raises:
        InputError: an unknown pair id, an answer other than A/B/tie/skip, an export id that
            is not the key's, one annotator answering a pair twice differently, or an
            annotator with no answers: one line naming the file and row.
    """
    if not paths:
        raise InputError("--annotations", "no answers file given")
    key_data = key_data or read_key(find_key(paths, key))
    counts = {"blank_rows": 0, "unanswered": 0, "cancelled": 0, "undone": 0}
    notes: list[str] = []
    raw: list[RawAnswer] = []
    for given in paths:
        path = Path(given)
        for file in campaign_files(path) if path.is_dir() else [path]:
            found = _read_file(file, counts, notes)
            raw.extend(found)
            if not found and not path.is_dir():  # in a campaign, a journal may be all undone
                who = file.stem
                raise InputError(str(file), f"no answers in this file (annotator {who!r}); "
                                 "fill the answer column (A, B, tie or skip) or leave the file out")
    rows = _checked(raw, key_data)
    return Answers(rows, key_data, counts, notes)


def _checked(raw: Sequence[RawAnswer], key: Key) -> list[AnswerRow]:
    canonical = {a.lower(): a for a in ANSWERS}
    seen: dict[tuple[str, str], tuple[str, Row]] = {}
    rows = []
    for r in raw:
        pair_id = None if r.pair_id is None else str(r.pair_id).strip()
        if pair_id not in key.swapped:
            raise r.row.error(f"unknown pair id {pair_id!r} (not in {key.path})", "pair_id")
        answer = canonical.get(r.value.strip().lower()) if isinstance(r.value, str) else None
        if answer is None:
            raise r.row.error(f"expected A, B, tie or skip (or blank), got {r.value!r:.40}", "answer")
        export_id = None if _blank(r.export_id) else str(r.export_id).strip()
        if key.export_id is not None and export_id != key.export_id:
            got = (f"answers of export {export_id}" if export_id else
                   "no export_id (keep the tasks file's export_id column)")
            raise r.row.error(f"{got}, but the key {key.path} is of export {key.export_id}; "
                              "use the key written with these tasks", "export_id")
        first = seen.get((r.annotator, pair_id))
        if first is not None:
            if first[0] != answer:
                raise r.row.error(f"annotator {r.annotator!r} answered pair {pair_id!r} twice "
                                  f"differently ({first[0]} at {first[1].source}:{first[1].where},"
                                  f" {answer} here)", "answer")
            continue
        seen[(r.annotator, pair_id)] = (answer, r.row)
        comment = None if _blank(r.comment) else str(r.comment)
        rows.append(AnswerRow(pair_id, key.undo(pair_id, answer), r.annotator, comment, export_id,
                              f"{r.row.source}:{r.row.where}"))
    return rows


def read_answer_sets(paths: Sequence[str | os.PathLike],
                     key_path: str | os.PathLike | None = None) -> list[AnswerRow]:
    """Every answer of ``paths`` (sheets, journals, campaign directories, Label Studio
    exports), checked against the key and in the pairs' own A/B order.

    Args:
        paths: the files and directories to read.
        key_path: the export's key (default: see :func:`find_key`).

    Returns:
        One :class:`AnswerRow` per (annotator, pair) answered.
    """
    return read_answers(paths, key_path).rows
