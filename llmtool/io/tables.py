"""Tables (.csv and .tsv files with a header): the rules every command applies to them, stated once.

- The kind of a file and its delimiter come from its name: ``.csv`` (comma), ``.tsv`` (tab).
- The text column, when no flag names one: ``text``, else ``sentence``; else the only column left
  once the label column (``label``, or the one named) and a second-text column are set aside; else
  the only one of those left whose cells are not all numbers (an ``id`` column is passed over).
  Otherwise the command stops with "which column is the text? pass --text-column (columns: ...)".

finetune, classify, evaluate, score, fill-mask and generate all pick their text column with
:func:`text_column`, so one table gets one answer everywhere. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from llmtool.errors import InputError, UsageError
from llmtool.io.inputs import Record, check_readable, decode_lines, open_binary, suggest

TEXT_COLUMNS = ("text", "sentence")  # tried in this order when no column is named
LABEL_COLUMN = "label"  # the label column when none is named
SNIFF_ROWS = 200  # rows looked at to tell text columns from numeric ones
TEXT_FLAG = "--text-column"

Kind = Literal["csv", "tsv"]


def table_kind(path: str | None) -> Kind | None:
    """``csv`` or ``tsv`` for a table's file name, else None (text lines, JSON Lines, stdin)."""
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    return "csv" if suffix == ".csv" else "tsv" if suffix == ".tsv" else None


def is_table(path: str | None) -> bool:
    return table_kind(path) is not None


def delimiter(path: str) -> str:
    return "\t" if table_kind(path) == "tsv" else ","


def csv_rows(path: str, encoding: str = "utf-8") -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header (cells stripped, BOM dropped) and ``(line, row)`` for each row after it.

    Ragged rows, unclosed quotes, blank or duplicate header names are errors with a location.
    Rows are read lazily: memory stays flat for any file size.
    """
    check_readable(path)
    lines = decode_lines(open_binary(path), path, encoding)
    line_of: list[int] = [0]

    def text_lines() -> Iterator[str]:
        for lineno, line in lines:
            line_of[0] = lineno
            yield line + "\n"

    reader = csv.reader(text_lines(), delimiter=delimiter(path), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError("empty file (no header row)", source=path) from None
    except csv.Error as exc:
        raise InputError(f"bad CSV: {exc}", source=path, line=line_of[0]) from None
    header = [h.strip() for h in header]
    for i, name in enumerate(header):
        if not name:
            raise InputError("blank column name in the header", source=path, line=1, column=i + 1)
        if name in header[:i]:
            raise InputError(f"duplicate column name {name!r} in the header", source=path, line=1, column=i + 1)

    def rows() -> Iterator[tuple[int, list[str]]]:
        start = line_of[0] + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                text = str(exc)
                what = "unclosed quote" if "EOF" in text or "end of data" in text else text
                raise InputError(f"bad CSV: {what}", source=path, line=start) from None
            if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                start = line_of[0] + 1
                continue  # blank line
            if len(row) != len(header):
                raise InputError(f"{len(row)} fields, but the header has {len(header)}", source=path, line=start)
            yield start, row
            start = line_of[0] + 1

    return header, rows()


def find_column(header: Sequence[str], name: str, source: str, flag: str = TEXT_FLAG) -> int:
    """The index of column ``name``; a missing one is an error that lists the columns (and the likely cause)."""
    if name in header:
        return header.index(name)
    columns = ", ".join(repr(h) for h in header)
    hint = _headerless_hint(header)
    raise InputError(f"no column {name!r}{suggest(name, header)}; columns: {columns}{hint}", source=source, line=1)


def text_column(
    header: Sequence[str],
    source: str,
    *,
    requested: str | None = None,
    taken: Sequence[str] = (),
    encoding: str = "utf-8",
    flag: str = TEXT_FLAG,
) -> int:
    """The text column's index, by the module's rule; ``taken``: columns that hold something else."""
    if requested is not None:
        return find_column(header, requested, source, flag)
    set_aside = {*taken, LABEL_COLUMN}
    for name in TEXT_COLUMNS:
        if name in header and name not in taken:
            return header.index(name)
    rest = [h for h in header if h not in set_aside]
    if len(rest) == 1:
        return header.index(rest[0])
    if rest and source and Path(source).is_file():
        texty = _text_valued(source, encoding, header, rest)
        if len(texty) == 1:
            return header.index(texty[0])
    columns = ", ".join(repr(h) for h in header)
    raise InputError(f"which column is the text? pass {flag} (columns: {columns})", source=source, line=1)


def _text_valued(path: str, encoding: str, header: Sequence[str], candidates: Sequence[str]) -> list[str]:
    """The candidates with a cell that is not a number in the first rows (read afresh from the file)."""
    _, rows = csv_rows(path, encoding)
    numeric = dict.fromkeys(candidates, True)
    for count, (_line, row) in enumerate(rows):
        if count >= SNIFF_ROWS:
            break
        for name in candidates:
            cell = row[header.index(name)].strip()
            if cell and not is_number(cell):
                numeric[name] = False
    return [name for name in candidates if not numeric[name]]


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip()) is not None


def _headerless_hint(header: Sequence[str]) -> str:
    """The first row looks like data rather than column names: say so, it is the usual cause."""
    if any(is_number(h) or len(h.split()) >= 4 for h in header):
        return "; the first line should be a header naming the columns, and this one looks like data"
    return ""


def column_records(path: str, column: str | None, encoding: str = "utf-8") -> Iterator[Record]:
    """Records from one column of a table (``--input FILE.csv``): the named one, or the text column."""
    if not is_table(path):
        raise UsageError(f"{path}: not a .csv or .tsv file")
    header, rows = csv_rows(path, encoding)
    col = text_column(header, path, requested=column, encoding=encoding)
    index = 0
    for lineno, row in rows:
        value = row[col]
        if value.strip():
            yield Record(index, lineno, value, path)
            index += 1
