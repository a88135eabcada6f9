"""Token-classification training data (``finetune --task tag``): CoNLL columns, JSON Lines tokens and tags,
or character spans (doccano), read into one shape and checked before a model loads.

Three formats, told apart by the file and its first record:

- **CoNLL** (any file but ``.jsonl``): a token per line, its tag in the last column (space- or
  tab-separated), a blank line between sentences; ``-DOCSTART-`` lines are dropped;
- **tokens** (``.jsonl`` with ``tokens``): ``{"tokens": [...], "tags": [...]}`` (or ``ner_tags``), tag names;
- **spans** (``.jsonl`` with ``text``): doccano's ``{"text": ..., "label": [[start, end, "TYPE"], ...]}``
  (or ``entities``: ``[{"start_offset", "end_offset", "label"}]``). The text is cut into words (runs of
  letters and digits, each punctuation mark, each CJK character); a span that does not fall on word
  boundaries is reported (a warning naming file, line and span) and labels the words it touches.

Tags in IOB1, IOB2, BIOES or BMES (``B-``, ``I-``, ``M-``, ``E-``, ``S-``) become IOB2: an entity's first
word ``B-TYPE``, the rest ``I-TYPE``. Tags without those prefixes (parts of speech) are kept as they are.
Each row becomes ``{"text", "starts", "ends", "tags", "line"}``: the sentence (CoNLL and tokens: the
tokens joined by spaces), its words' character spans, their IOB2 tags, and the line it began on. A
malformed file is one :class:`InputError` naming the file and line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import check_readable
from llmtool.training.data import Layout, json_records

PREFIXES = frozenset("BIMESLU")  # IOB, BIOES (BILOU), BMES
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
WORD = re.compile(rf"[{CJK}]|[^\W{CJK}]+|[^\w\s]")
DOCSTART = "-DOCSTART-"
SHOWN_WARNINGS = 3  # off-boundary spans named one by one; the rest counted
Sentence = tuple[int, list[tuple[int, int]], list[str], str]  # (line, word spans, tags as written, text)


@dataclass(frozen=True)
class TagLayout(Layout):
    """A token-classification file: its format (``conll``, ``tokens`` or ``spans``)."""

    format: str = "conll"
    scheme: str = "iob"  # the tags: "iob" (converted to IOB2) or "plain" (kept)

    def describe(self) -> str:
        return {
            "conll": "CoNLL columns (token ... tag)",
            "tokens": "JSON Lines tokens and tags",
            "spans": "JSON Lines text and character spans",
        }[self.format]


def tag_layout(path: str, encoding: str) -> TagLayout:
    """The file's format, from its name and first record (nothing else is read yet)."""
    check_readable(path)
    if Path(path).suffix.lower() not in (".jsonl", ".ndjson"):
        return TagLayout(path, "lines", "tokens", encoding=encoding, format="conll")
    first = next(json_records(path, encoding), None)
    if first is None:
        raise InputError("no data rows", source=path)
    line, record = first
    if "tokens" in record:
        return TagLayout(path, "jsonl", "tokens", encoding=encoding, format="tokens")
    if "text" in record:
        return TagLayout(path, "jsonl", "text", encoding=encoding, format="spans")
    raise InputError(
        'each record needs "tokens" and "tags", or "text" and "label" spans (doccano)', source=path, line=line
    )


# --------------------------------------------------------------------------- reading


def raw_sentences(
    layout: TagLayout, warnings: list[str] | None = None
) -> Iterator[tuple[int, list[tuple[int, int]], list[str], str]]:
    """(line, word spans, tags as written, text) per sentence, checked as it is read."""
    if layout.format == "conll":
        yield from _conll(layout.path, layout.encoding)
    elif layout.format == "tokens":
        for line, record in json_records(layout.path, layout.encoding):
            tokens, tags = record.get("tokens"), record.get("tags", record.get("ner_tags"))
            if not _strings(tokens) or not tokens:
                raise InputError('"tokens" must be a non-empty list of strings', source=layout.path, line=line)
            if not _strings(tags):
                raise InputError('"tags" must be a list of tag names (strings)', source=layout.path, line=line)
            assert isinstance(tokens, list) and isinstance(tags, list)
            if len(tags) != len(tokens):
                raise InputError(f"{len(tokens)} tokens but {len(tags)} tags", source=layout.path, line=line)
            if any(not t or any(c.isspace() for c in t) for t in tokens):
                raise InputError("a token is empty or holds a space", source=layout.path, line=line)
            yield _sentence(line, tokens, tags)
    else:
        off: list[str] = []
        for line, record in json_records(layout.path, layout.encoding):
            yield _spans(layout.path, line, record, off)
        if warnings is not None and off:
            more = f" (and {len(off) - SHOWN_WARNINGS} more)" if len(off) > SHOWN_WARNINGS else ""
            warnings += off[:SHOWN_WARNINGS]
            if more:
                warnings.append(f"{layout.path}: {len(off)} spans in all do not fall on word boundaries{more}")


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _sentence(line: int, tokens: Sequence[str], tags: list[str]) -> Sentence:
    """The tokens joined by spaces, with each one's characters."""
    spans, at = [], 0
    for token in tokens:
        spans.append((at, at + len(token)))
        at += len(token) + 1
    return line, spans, tags, " ".join(tokens)


def _conll(path: str, encoding: str) -> Iterator[Sentence]:
    tokens: list[str] = []
    tags: list[str] = []
    first = 0
    with open(path, encoding=encoding, errors="strict") as f:
        for line, raw in enumerate(f, 1):
            fields = raw.split()
            if not fields or fields[0] == DOCSTART:
                if tokens:
                    yield _sentence(first, tokens, tags)
                tokens, tags = [], []
                continue
            if len(fields) < 2:
                raise InputError(
                    f"expected a token and its tag (columns separated by spaces or tabs), got {raw.strip()!r}",
                    source=path,
                    line=line,
                )
            if not tokens:
                first = line
            tokens.append(fields[0])
            tags.append(fields[-1])
    if tokens:
        yield _sentence(first, tokens, tags)


def _spans(
    path: str, line: int, record: dict[str, Any], off: list[str]
) -> tuple[int, list[tuple[int, int]], list[str], str]:
    text = record.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError('"text" must be a non-empty string', source=path, line=line)
    spans = _span_list(record, path, line)
    words = [(m.start(), m.end()) for m in WORD.finditer(text)]
    tags = ["O"] * len(words)
    taken: list[tuple[int, int]] = []
    for start, end, kind in sorted(spans):
        if not 0 <= start < end <= len(text):
            raise InputError(
                f"span [{start}, {end}) is outside the text ({len(text)} characters)", source=path, line=line
            )
        if any(start < e and s < end for s, e in taken):
            raise InputError(
                f"span [{start}, {end}) {kind!r} overlaps another; IOB tags cannot nest", source=path, line=line
            )
        taken.append((start, end))
        touched = [i for i, (s, e) in enumerate(words) if s < end and start < e]
        if not touched or words[touched[0]][0] != start or words[touched[-1]][1] != end:
            off.append(
                f"{path}:{line}: span [{start}, {end}) {text[start:end]!r} ({kind}) does not fall on word "
                "boundaries; the words it touches are labelled"
            )
        for n, i in enumerate(touched):
            tags[i] = ("B-" if n == 0 else "I-") + kind
    return line, words, tags, text


def _span_list(record: dict[str, Any], path: str, line: int) -> list[tuple[int, int, str]]:
    raw = record.get("label", record.get("labels"))
    out: list[tuple[int, int, str]] = []
    if raw is None and isinstance(record.get("entities"), list):
        for e in record["entities"]:
            if not isinstance(e, dict):
                raise InputError(
                    '"entities" must be objects with start_offset, end_offset, label', source=path, line=line
                )
            raw_e = [e.get("start_offset"), e.get("end_offset"), e.get("label")]
            out.append(_span(raw_e, path, line))
        return out
    if raw is None:
        return out  # a text without entities
    if not isinstance(raw, list):
        raise InputError('"label" must be a list of [start, end, "TYPE"] spans', source=path, line=line)
    return [_span(item, path, line) for item in raw]


def _span(item: object, path: str, line: int) -> tuple[int, int, str]:
    if (
        not isinstance(item, list | tuple)
        or len(item) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in item[:2])
        or not isinstance(item[2], str)
        or not item[2].strip()
    ):
        raise InputError(f'a span must be [start, end, "TYPE"], not {json.dumps(item)[:60]}', source=path, line=line)
    return int(item[0]), int(item[1]), item[2].strip()


# --------------------------------------------------------------------------- tags


def scheme_of(tags: set[str]) -> str:
    """``iob`` (IOB1/IOB2, BIOES, BMES: converted to IOB2) when every tag is ``O`` or prefixed, ``plain``
    when none is prefixed (parts of speech), else ``mixed``."""
    prefixed = {t for t in tags if len(t) > 2 and t[1] == "-" and t[0] in PREFIXES}
    rest = tags - prefixed - {"O"}
    if not prefixed:
        return "plain"
    return "iob" if not rest else "mixed"


def to_iob2(tags: Sequence[str]) -> list[str]:
    """IOB1, IOB2, BIOES/BILOU or BMES tags as IOB2: ``B-`` at an entity's first word, ``I-`` after it.

    ``B``/``S``/``U`` start an entity (``S``/``U`` a one-word one); ``I``/``M``/``E``/``L`` continue the
    open entity of their type, or start one when there is none (IOB1's ``I`` after ``O``)."""
    out: list[str] = []
    open_type: str | None = None
    for tag in tags:
        if tag == "O":
            out.append("O")
            open_type = None
            continue
        prefix, kind = tag[0], tag[2:]
        if prefix in "BSU":
            out.append("B-" + kind)
            open_type = kind if prefix == "B" else None
        else:
            out.append(("I-" if open_type == kind else "B-") + kind)
            open_type = kind if prefix in "IM" else None
    return out


def first_bad_tag(layout: TagLayout) -> tuple[int, str] | None:
    """In a file whose tags mix IOB-style and plain tags, the first plain one (line, tag)."""
    for line, _, tags, _ in raw_sentences(layout):
        for i, tag in enumerate(tags):
            if tag != "O" and not (len(tag) > 2 and tag[1] == "-" and tag[0] in PREFIXES):
                return (line + i if layout.format == "conll" else line), tag  # CoNLL: a token per line
    return None


def sentences(layout: TagLayout, scheme: str, warnings: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of the dataset: ``{"text", "starts", "ends", "tags", "line"}``, tags in IOB2 (``iob``)."""
    for line, words, tags, text in raw_sentences(layout, warnings):
        yield {
            "text": text,
            "starts": [s for s, _ in words],
            "ends": [e for _, e in words],
            "tags": to_iob2(tags) if scheme == "iob" else list(tags),
            "line": line,
        }


def tag_set(layout: TagLayout) -> set[str]:
    """Every tag the file uses, as written (a streaming pass)."""
    found: set[str] = set()
    count = 0
    for _, _, tags, _ in raw_sentences(layout):
        found.update(tags)
        count += 1
    if count == 0:
        raise InputError("no sentences (only blank or -DOCSTART- lines)", source=layout.path)
    return found


def label_order(tags: set[str]) -> list[str]:
    """The labels in id order: ``O`` first, then by type, ``B-`` before ``I-``; every ``B-X`` has its ``I-X``
    (a continuation a model can predict, and --label-all-subwords uses)."""
    labels = set(tags)
    for tag in tags:
        if tag.startswith("B-"):
            labels.add("I-" + tag[2:])
    named = sorted(labels - {"O"}, key=lambda t: (t[2:], t[:2]) if t[1:2] == "-" else (t, ""))
    return (["O"] if "O" in labels else []) + named


def check_scheme(layout: TagLayout) -> str:
    """The file's tag scheme; a file mixing IOB-style and plain tags is an error naming the first plain one."""
    scheme = scheme_of(tag_set(layout))
    if scheme == "mixed":
        found = first_bad_tag(layout)
        assert found is not None
        line, tag = found
        raise InputError(
            f"tag {tag!r} is neither O nor B-/I-/E-/S-/M- and a type, though other tags are",
            source=layout.path,
            line=line,
        )
    return scheme


def check_options(text_column: str | None, label_column: str | None) -> None:
    if text_column or label_column:
        raise UsageError("--text-column and --label-column do not apply to --task tag (see docs/commands/tag.md)")
