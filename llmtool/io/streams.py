"""Inputs from an argument, a file or piped stdin, as records.

The reading rule: TEXT, else ``--input FILE`` (.txt a line each, .jsonl a field, .csv/.tsv a column),
else piped stdin. This module imports neither torch nor transformers: the CLI uses it before any model
loads. The names it re-exports from :mod:`llmtool.io.inputs`, :mod:`llmtool.io.formats` and
:mod:`llmtool.io.console` keep older imports working; new code imports them from there.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from llmtool.errors import InputError, UsageError
from llmtool.io.console import Console, ProgressHandle, stdout_isatty
from llmtool.io.formats import Formatter, OutputFormat, json_line, tsv_field, write_records
from llmtool.io.inputs import (
    ARGUMENT,
    STDIN,
    Record,
    as_records,
    check_readable,
    chunked,
    decode_lines,
    error_record,
    is_terminal,
    open_binary,
    records_of,
    suggest,
)
from llmtool.io.tables import column_records

__all__ = [
    "ARGUMENT",
    "STDIN",
    "Console",
    "Formatter",
    "OutputFormat",
    "ProgressHandle",
    "Record",
    "as_records",
    "check_readable",
    "chunked",
    "decode_lines",
    "error_record",
    "json_line",
    "open_binary",
    "read_file",
    "read_records",
    "records_of",
    "stdout_isatty",
    "suggest",
    "tsv_field",
    "write_records",
]


def read_records(
    text: str | None = None,
    input_path: str | None = None,
    column: str | None = None,
    *,
    encoding: str = "utf-8",
    stdin: IO[bytes] | None = None,
    stdin_is_tty: bool | None = None,
) -> Iterator[Record]:
    """Records from TEXT, else ``--input FILE``, else piped stdin (``-`` means stdin).

    Blank lines are skipped. A terminal on stdin with no other input is a usage error, never a
    wait. Reading is lazy: records come as lines arrive, so a long stdin streams.
    """
    if text is not None and input_path is not None:
        raise UsageError("give either TEXT or --input, not both")
    if text is not None and text != "-":
        if not text.strip():
            raise InputError("TEXT is empty", source=ARGUMENT)
        return iter([Record(0, 1, text, ARGUMENT)])
    if input_path is not None and input_path != "-":
        # The first record is read now, before any model loads: a bad file fails in a moment.
        return _primed(read_file(input_path, column, encoding=encoding))
    if column is not None:
        raise UsageError("--column applies to --input FILE (.csv, .tsv, .jsonl), not to stdin")
    binary = stdin if stdin is not None else sys.stdin.buffer if sys.stdin is not None else None
    if binary is None:
        raise UsageError("no input: give TEXT, --input FILE, or pipe lines on stdin")
    tty = stdin_is_tty if stdin_is_tty is not None else is_terminal(binary)
    if tty:
        raise UsageError("no input: give TEXT, --input FILE, or pipe lines on stdin (stdin is a terminal)")
    return records_of(decode_lines(binary, STDIN, encoding), STDIN)


def _primed(records: Iterator[Record]) -> Iterator[Record]:
    """The same records, with the first one already read (so its errors are raised here)."""
    for first in records:
        return itertools.chain([first], records)
    return iter(())


def read_file(path: str, column: str | None = None, *, encoding: str = "utf-8") -> Iterator[Record]:
    """Records from a ``.txt`` (a line each), ``.jsonl`` (a field) or ``.csv``/``.tsv`` (a column)."""
    check_readable(path)
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_records(path, column or "text", encoding)
    if suffix in (".csv", ".tsv"):
        return column_records(path, column, encoding)
    if column is not None:
        raise UsageError(f"--column applies to .csv, .tsv and .jsonl input, not {path}")
    return records_of(decode_lines(open_binary(path), path, encoding), path)


def _jsonl_records(path: str, field: str, encoding: str) -> Iterator[Record]:
    index = 0
    for lineno, line in decode_lines(open_binary(path), path, encoding):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", source=path, line=lineno, column=exc.colno) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object with a {field!r} field", source=path, line=lineno)
        if field not in obj:
            raise InputError(f"no {field!r} field{suggest(field, list(obj))}", source=path, line=lineno)
        value = obj[field]
        if not isinstance(value, str):
            raise InputError(f"field {field!r} is not a string", source=path, line=lineno)
        if value.strip():
            yield Record(index, lineno, value, path)
            index += 1
