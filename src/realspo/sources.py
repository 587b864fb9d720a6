"""Reading raw rows from where users keep data.

:func:`read_rows` turns a path or hub id into a list of :class:`Row` (a dict plus where it
came from, for error messages). Supported: JSON Lines (``.jsonl``), JSON (an array of
objects, or an object whose ``data``/``rows`` member is one), Parquet, CSV (quoted newlines
allowed; cells holding JSON arrays or objects are decoded), a directory saved with
``datasets.Dataset.save_to_disk`` or laid out as data files, and a Hugging Face Hub
dataset id through ``datasets.load_dataset``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from realspo.errors import InputError
from realspo.outputs import CSV_ESCAPE, csv_needs_escape

FILE_SUFFIXES = {".jsonl", ".json", ".parquet", ".csv"}
CSV_FIELD_LIMIT = 2**31 - 1  # the largest csv.field_size_limit accepts on every platform


@dataclass(frozen=True)
class Row:
    """One input record and its location: ``source`` plus ``where`` (e.g. ``line 12``)."""

    data: dict[str, Any]
    source: str
    where: str

    def error(self, message: str, field: str | None = None) -> InputError:
        return InputError(self.source, message, where=self.where, field=field)


def read_rows(source: str | Path, split: str = "train") -> list[Row]:
    """Read every row of ``source`` (a file, a dataset directory, or a hub dataset id)."""
    path = Path(source)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix not in FILE_SUFFIXES:
            raise InputError(
                str(path), f"unknown file type '{suffix}': expected one of .jsonl, .json, .parquet, .csv"
            )
        return {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet, ".csv": _read_csv}[
            suffix
        ](path)
    if path.is_dir():
        return _read_dataset_dir(path, split)
    if path.exists():  # a FIFO, socket or device: reading one could block or never end
        raise InputError(str(path), "not a regular file (expected a data file, a dataset "
                                    "directory or a hub id)")
    if str(source).endswith(tuple(FILE_SUFFIXES)) or "/" not in str(source) and "." in str(source):
        raise InputError(str(source), "no such file")
    return _read_hub(str(source), split)


def _text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise InputError(str(path), "invalid UTF-8", where=f"line {line}") from None


def _object(value: Any, source: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(source, f"expected a JSON object, got {type(value).__name__}", where=where)
    check_unicode(value, source, where)
    return value


class DuplicateKey(ValueError):
    """A JSON object names one key twice; ``json`` would silently keep the last value."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def _loads(text: str, source: str, where: str | None) -> Any:
    """``json.loads`` whose every failure is an :class:`InputError` naming ``source``."""
    try:
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except DuplicateKey as exc:
        raise InputError(source, f"duplicate key {str(exc)[:60]!r} in one JSON object (which one "
                                 "is meant?)", where=where) from None
    except json.JSONDecodeError as exc:
        raise InputError(source, f"malformed JSON ({exc.msg})",
                         where=where or f"line {exc.lineno}") from None
    except RecursionError:
        raise InputError(source, "JSON nested too deeply", where=where) from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InputError(source, f"malformed JSON ({str(exc).splitlines()[0][:120]})",
                         where=where) from None


def check_unicode(value: Any, source: str, where: str) -> None:
    """Refuse strings that are not valid Unicode: JSON's ``"\\ud800"`` escapes decode to lone
    surrogates, which no UTF-8 writer, tokenizer or hash accepts later."""
    stack = [value]
    while stack:  # iterative: the depth of a value is not bounded here
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(source, f"invalid Unicode: a lone surrogate "
                                         f"({item[exc.start]!r}) in a string", where=where) from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _read_jsonl(path: Path) -> list[Row]:
    rows = []
    # Split on "\n" only: str.splitlines() also breaks at U+2028/U+0085, which JSON allows
    # unescaped inside strings (writers using ensure_ascii=False emit them).
    for n, line in enumerate(_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"line {n}"
        value = _loads(line, str(path), where)
        rows.append(Row(_object(value, str(path), where), str(path), where))
    return rows


def _reject_constant(name: str) -> float:
    # NaN/Infinity are not JSON; keep them so the format readers report the field.
    return float(name.replace("Infinity", "inf"))


def _read_json(path: Path) -> list[Row]:
    value = _loads(_text(path), str(path), None)
    if isinstance(value, dict):
        for key in ("data", "rows", "examples"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
    if not isinstance(value, list):
        raise InputError(str(path), "expected a JSON array of objects (or {'data': [...]})")
    return [Row(_object(v, str(path), f"row {i}"), str(path), f"row {i}") for i, v in enumerate(value)]


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise InputError(str(path), f"unreadable Parquet file ({exc})") from None
    return [Row(r, str(path), f"row {i}") for i, r in enumerate(records)]


def _decode_cell(value: str) -> Any:
    """A CSV cell as written by :func:`realspo.outputs.csv_cell`: text escaped with a leading
    ``'`` comes back without it (a ``'`` before text that needs no escape is kept: a foreign
    ``'Tis`` is read as written); a JSON list or object is decoded."""
    if value.startswith(CSV_ESCAPE) and csv_needs_escape(value[1:]):
        return value[1:]
    stripped = value.strip()
    if stripped.startswith(("[", "{")):
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):  # text that merely starts with a bracket
            return value
    return value


CSV_DELIMITERS = (",", "\t", ";")


def _sniff_delimiter(text: str) -> str:
    """The delimiter of a CSV text, judged by its header line: ``,`` unless the header has
    none and has tabs or semicolons (a spreadsheet saved in another locale or as TSV)."""
    header = text.split("\n", 1)[0]
    return next((d for d in CSV_DELIMITERS if d in header), ",")


def csv_delimiter(path: str | Path) -> str:
    """The delimiter :func:`read_rows` uses for this CSV file (see :func:`_sniff_delimiter`)."""
    return _sniff_delimiter(_text(Path(path)))


def _read_csv(path: Path) -> list[Row]:
    """CSV rows; ``where`` is the spreadsheet's row number (the header is row 1, so the first
    data row is row 2)."""
    import io

    csv.field_size_limit(CSV_FIELD_LIMIT)  # the default (128 KiB) refuses realspo's own long cells
    text = _text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
    rows = []
    try:
        for i, record in enumerate(reader, start=2):
            if None in record:
                raise InputError(str(path), "more cells than header columns", where=f"row {i}")
            data = {k: _decode_cell(v) if isinstance(v, str) else v for k, v in record.items()}
            check_unicode(data, str(path), f"row {i}")
            rows.append(Row(data, str(path), f"row {i}"))
    except csv.Error as exc:
        raise InputError(str(path), f"malformed CSV ({exc})", where=f"line {reader.line_num}") from None
    return rows


def _read_dataset_dir(path: Path, split: str) -> list[Row]:
    import datasets

    try:
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path), split=split)
    except Exception as exc:
        raise InputError(str(path), f"could not load dataset directory ({exc})") from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputError(str(path), f"split '{split}' not found; available: {sorted(ds)}")
        ds = ds[split]
    return [Row(r, str(path), f"row {i}") for i, r in enumerate(ds)]


def _read_hub(name: str, split: str) -> list[Row]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:
        raise InputError(name, f"not a local file or directory, and loading it as a hub dataset failed ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    return [Row(r, name, f"row {i}") for i, r in enumerate(ds)]


def finite_float(row: Row, value: Any, field: str) -> float:
    """Parse a score cell: a finite number (strings from CSV are accepted)."""
    if isinstance(value, bool):
        raise row.error(f"expected a number, got {value!r}", field)
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float (JSON 1000...0)
        raise row.error("expected a finite number, got an integer too large for a float",
                        field) from None
    except (TypeError, ValueError):
        raise row.error(f"expected a number, got {type(value).__name__} {value!r}", field) from None
    if not math.isfinite(number):
        raise row.error(f"expected a finite number, got {value!r}", field)
    return number
