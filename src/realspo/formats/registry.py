"""The input formats and their detection: raw rows (:mod:`realspo.sources`) ->
:class:`~realspo.schema.PromptGroup`.

Each format is one :class:`~realspo.formats.format.Format` entry in its own module
(:mod:`~realspo.formats.hh`, :mod:`~realspo.formats.shp`, :mod:`~realspo.formats.trl`,
:mod:`~realspo.formats.multi`; their docstrings give the columns); :data:`FORMATS` lists them.
Adding a format is one such module plus one line in :data:`FORMATS`.

Conversations render as HH text (:mod:`realspo.conversations`); string prompts stay verbatim
(they may already carry a chat template). ``prompt_id`` is the row's ``prompt_id``, ``id`` or
``post_id`` (first present), else ``"p-"`` + 12 hex digits of the prompt's SHA-256; repeats get
``"#2"``, ``"#3"``, ... (a TRL row is a pair, and several pairs may share a prompt's id), except
a repeated explicit id in the multi format, which is an error (a multi row is a prompt's whole
candidate set). The user-facing description is ``docs/reference/formats.md``.
"""

from __future__ import annotations

import logging

from realspo.errors import ConfigError, InputError
from realspo.formats import hh, multi, shp, trl
from realspo.formats.fields import make_ids_unique
from realspo.formats.format import Format
from realspo.schema import PromptGroup
from realspo.sources import Row, read_rows

log = logging.getLogger(__name__)

DETECT_ROWS = 10  # rows whose columns decide the format

# Detection order: ``format="auto"`` takes the first entry whose rule accepts the columns. The
# rules overlap (a table may carry the columns of several formats), so the most specific comes
# first: shp (its post and comment columns name SHP alone), then multi (a prompt with
# responses or completions is a candidate set, even if chosen/rejected columns ride along),
# then trl and hh, which exclude each other (hh: no prompt and an HH-transcript chosen).
FORMATS: tuple[Format, ...] = (
    shp.FORMAT,
    multi.FORMAT,
    trl.FORMAT,
    hh.FORMAT,
)


def format_names() -> tuple[str, ...]:
    """The names of :data:`FORMATS`, in detection order (the ``--format`` choices after ``auto``)."""
    return tuple(entry.name for entry in FORMATS)


def get_format(name: str) -> Format:
    """The entry called ``name`` (case and surrounding blanks ignored); anything else is a
    ConfigError listing the known names."""
    key = name.strip().lower() if isinstance(name, str) else name
    for entry in FORMATS:
        if entry.name == key:
            return entry
    raise ConfigError(f"format: unknown format {name!r}: expected auto or one of {', '.join(format_names())}")


def detect_format(rows: list[Row]) -> str:
    """The name of the format of ``rows``: the first entry of :data:`FORMATS` whose rule accepts
    the non-empty columns of the first :data:`DETECT_ROWS` rows."""
    if not rows:
        raise InputError("input", "the dataset is empty (no rows)")
    head = rows[:DETECT_ROWS]
    columns = {k for r in head for k, v in r.data.items() if v is not None}
    for entry in FORMATS:
        if entry.detect(columns, head):
            return entry.name
    expected = [f"{entry.name} ({entry.description})" for entry in FORMATS]
    raise InputError(
        rows[0].source,
        f"cannot detect the format from the columns {sorted(columns)}: expected "
        f"{', '.join(expected[:-1])} or {expected[-1]}",
    )


def parse_rows(rows: list[Row], format: str = "auto",
               skipped: dict[str, int] | None = None) -> tuple[list[PromptGroup], str]:
    """Turn rows into prompt groups; returns ``(groups, format used)``.

    ``format`` is ``"auto"`` or one of :func:`format_names` (anything else is a ConfigError).
    Group ids are unique: repeats of an id get ``"#2"``, ``"#3"``, ... in input order, except
    that a repeated *explicit* id in the multi format is an InputError naming both rows.
    Rows skipped by design (HH rows whose transcripts diverge before the last Assistant turn,
    :data:`realspo.formats.hh.SKIP_HH_DIVERGENT`) are counted into ``skipped`` (reason -> rows)
    when it is given; if every row is skipped, that is an InputError.
    """
    auto = isinstance(format, str) and format.strip().lower() == "auto"
    entry = None if auto else get_format(format)
    if not rows:
        raise InputError("input", "the dataset is empty (no rows)")
    if entry is None:
        entry = get_format(detect_format(rows))
    counts: dict[str, int] = {}
    groups = entry.read(rows, counts)
    if not groups:
        reasons = ", ".join(f"{n} {reason}" for reason, n in counts.items())
        raise InputError(rows[0].source, f"no usable rows: all {len(rows)} were skipped ({reasons})")
    if skipped is not None:
        for reason, n in counts.items():
            skipped[reason] = skipped.get(reason, 0) + n
    make_ids_unique(groups)
    return groups, entry.name


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
