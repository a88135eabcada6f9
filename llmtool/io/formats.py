"""Records out: as text for people and filters, JSON Lines, TSV, or CSV, each written as soon as it comes.

This module imports neither torch nor transformers.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal

from llmtool.errors import UsageError

OutputFormat = Literal["text", "jsonl", "tsv", "csv"]  # csv: only for commands whose Formatter has it


def tsv_field(value: object) -> str:
    """A TSV cell: tabs, newlines and backslashes escaped as ``\\t``, ``\\n``, ``\\\\``."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def json_line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


@dataclass
class Formatter:
    """How one command writes its result records in each output format."""

    text: Callable[[dict[str, Any]], str | None]
    tsv_header: Sequence[str]
    tsv_rows: Callable[[dict[str, Any]], Iterable[Sequence[object]]]
    # CSV (RFC 4180 quoting), for commands that can echo tabular input back with columns added.
    csv_header: Sequence[str] | None = None
    csv_rows: Callable[[dict[str, Any]], Iterable[Sequence[object]]] | None = None


def write_records(
    results: Iterable[dict[str, Any]],
    fmt: OutputFormat,
    formatter: Formatter,
    out: IO[str] | None = None,
) -> int:
    """Write each result as soon as it comes; return how many were written.

    Output is flushed per record so that a downstream reader sees results while later input is
    still being computed.
    """
    stream = out if out is not None else sys.stdout
    count = 0
    if fmt == "tsv":
        stream.write("\t".join(formatter.tsv_header) + "\n")
    csv_writer = None
    if fmt == "csv":
        if formatter.csv_header is None or formatter.csv_rows is None:
            raise UsageError("--format csv is not available for this command; use text, jsonl or tsv")
        csv_writer = csv.writer(stream, lineterminator="\n")
        csv_writer.writerow(formatter.csv_header)
    for result in results:
        if fmt == "jsonl":
            stream.write(json_line(result) + "\n")
        elif csv_writer is not None and formatter.csv_rows is not None:
            csv_writer.writerows(formatter.csv_rows(result))
        elif fmt == "tsv":
            for row in formatter.tsv_rows(result):
                stream.write("\t".join(tsv_field(v) for v in row) + "\n")
        else:
            line = formatter.text(result)
            if line is not None:
                stream.write(line + "\n")
        stream.flush()
        count += 1
    return count
