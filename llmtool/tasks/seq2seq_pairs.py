"""(source, target) pairs for the encoder-decoder's ``score`` and ``evaluate``: from ``SOURCE<TAB>TARGET``
lines (an argument, stdin, a .txt file: the layout of Tatoeba's fra-eng.txt), a .csv/.tsv table (the
columns named below, or the first two), or JSON Lines objects (``{"source": ..., "target": ...}``).

A row's problem is an :class:`~llmtool.errors.InputError` naming its file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llmtool.errors import InputError
from llmtool.io.inputs import Record, check_readable, decode_lines, open_binary
from llmtool.io.tables import csv_rows, find_column, is_table

# Column (and JSON field) names, first found wins; else a table's first two columns.
SOURCE_COLUMNS = ("source", "src", "input", "text", "document", "article", "dialogue", "en")
TARGET_COLUMNS = ("target", "tgt", "reference", "references", "summary", "translation", "output", "label")
# Names that mean the pairs are summaries, not translations (evaluate then runs summarize).
SUMMARY_COLUMNS = ("summary", "highlights", "abstract", "document", "article", "dialogue")


@dataclass(frozen=True, slots=True)
class Pair:
    index: int  # 0-based position among the pairs read
    line: int  # 1-based line (row) in the source
    source: str
    target: str
    where: str  # the file (or <stdin>, <argument>)


def pairs_of_records(records: Iterable[Record]) -> Iterator[Pair]:
    """``SOURCE<TAB>TARGET`` records (more tab-separated fields: the first two; Tatoeba adds attribution)."""
    for record in records:
        fields = record.text.split("\t")
        if len(fields) < 2:
            raise InputError(
                "expected SOURCE<TAB>TARGET, found no tab (or give a .csv/.tsv/.jsonl file of source and target)",
                source=record.source,
                line=record.line,
            )
        source, target = fields[0], fields[1]
        if not source.strip() or not target.strip():
            which = "source" if not source.strip() else "target"
            raise InputError(f"empty {which}", source=record.source, line=record.line)
        yield Pair(record.index, record.line, source, target, record.source)


def is_pair_file(path: str | None) -> bool:
    """A table or JSON Lines file, read by :func:`read_pair_file` (other files hold TAB lines)."""
    return path is not None and path != "-" and (is_table(path) or Path(path).suffix.lower() in (".jsonl", ".ndjson"))


def pair_columns(header: list[str], path: str, source_column: str | None, target_column: str | None) -> tuple[int, int]:
    """The indexes of the source and target columns: named, else the first known names, else the first two."""
    lowered = [h.strip().lower() for h in header]

    def pick(named: str | None, names: tuple[str, ...], flag: str, other: int | None) -> int:
        if named is not None:
            return find_column(header, named, path, flag)
        for name in names:
            if name in lowered and lowered.index(name) != other:
                return lowered.index(name)
        free = [i for i in range(len(header)) if i != other]
        if len(header) < 2 or not free:
            raise InputError(f"need a source and a target column, found {len(header)} column(s)", source=path, line=1)
        return free[0]

    source = pick(source_column, SOURCE_COLUMNS, "--text-column", None)
    target = pick(target_column, TARGET_COLUMNS, "--pair-column", source)
    if source == target:
        raise InputError(f"the source and the target are both column {header[source]!r}", source=path, line=1)
    return source, target


def read_pair_file(
    path: str, source_column: str | None = None, target_column: str | None = None, encoding: str = "utf-8"
) -> tuple[tuple[str, str], Iterator[Pair]]:
    """((source column, target column), the pairs) of a .csv/.tsv or .jsonl file; the header (or the
    first object) is read now, so that a bad file fails before a model loads."""
    check_readable(path)
    if is_table(path):
        header, rows = csv_rows(path, encoding)
        s, t = pair_columns(header, path, source_column, target_column)

        def table() -> Iterator[Pair]:
            index = 0
            for line, row in rows:
                if not row[s].strip() and not row[t].strip():
                    continue
                for col in (s, t):
                    if not row[col].strip():
                        raise InputError(f"empty text in column {header[col]!r}", source=path, line=line)
                yield Pair(index, line, row[s], row[t], path)
                index += 1

        return (header[s], header[t]), table()
    lines = [(n, text) for n, text in decode_lines(open_binary(path), path, encoding) if text.strip()]
    if not lines:
        raise InputError("no JSON objects", source=path)
    first = _object(*lines[0], path)
    names = list(first)
    s, t = pair_columns(names, path, source_column, target_column)
    fields = (names[s], names[t])

    def objects() -> Iterator[Pair]:
        for index, (line, text) in enumerate(lines):
            obj = _object(line, text, path)
            values = []
            for field in fields:
                value = obj.get(field)
                if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    value = value[0]  # a list of references: the first
                if not isinstance(value, str) or not value.strip():
                    raise InputError(f"field {field!r} is missing, empty or not a string", source=path, line=line)
                values.append(value)
            yield Pair(index, line, values[0], values[1], path)

    return fields, objects()


def _object(line: int, text: str, path: str) -> dict[str, object]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", source=path, line=line, column=exc.colno) from None
    if not isinstance(obj, dict):
        raise InputError("expected a JSON object with a source and a target", source=path, line=line)
    return obj


def pair_records(
    path: str, source_column: str | None = None, target_column: str | None = None, encoding: str = "utf-8"
) -> Iterator[Record]:
    """The pairs of a table or JSON Lines file as ``SOURCE<TAB>TARGET`` records (what ``score`` reads); the
    header is read now."""
    _, pairs = read_pair_file(path, source_column, target_column, encoding)

    def records() -> Iterator[Record]:
        for pair in pairs:
            if "\t" in pair.source or "\t" in pair.target:
                raise InputError("a tab inside the source or the target", source=path, line=pair.line)
            yield Record(pair.index, pair.line, f"{pair.source}\t{pair.target}", path)

    return records()


def seq2seq_folder(model: str) -> bool:
    """Whether ``--model`` names a local folder holding an encoder-decoder (read from config.json, no torch)."""
    from llmtool.kinds import ENCODER_DECODER, model_kind

    folder = Path(model)
    return folder.is_dir() and ENCODER_DECODER in model_kind(folder).kinds
