"""What a format is: a name, what its rows look like, how to recognise it, how to read it.

Each format module (:mod:`~realspo.formats.hh`, :mod:`~realspo.formats.shp`,
:mod:`~realspo.formats.trl`, :mod:`~realspo.formats.multi`) defines one :class:`Format` entry,
``FORMAT``; :data:`realspo.formats.registry.FORMATS` lists them in detection order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from realspo.schema import PromptGroup
from realspo.sources import Row

# detect(columns, head_rows): columns = the non-empty columns of head_rows, the first rows
Detect = Callable[[set[str], list[Row]], bool]
# read(rows, skipped): prompt groups; rows skipped by design are counted into skipped (reason -> rows)
Read = Callable[[list[Row], dict[str, int]], list[PromptGroup]]


@dataclass(frozen=True)
class Format:
    """One input format: ``name`` (the ``--format`` value), ``description`` (its columns, as the
    undetectable-input error lists them), ``detect`` (its detection rule, asked only after the
    rules of the entries before it said no) and ``read`` (rows -> prompt groups)."""

    name: str
    description: str
    detect: Detect
    read: Read
