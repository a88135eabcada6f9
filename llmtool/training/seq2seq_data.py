"""Parallel text for the seq2seq objective (``finetune --task seq2seq``, ``pretrain --objective seq2seq``):
(source, target) pairs, read and checked before a model loads.

Three forms, told apart by the file name:

- ``.csv``/``.tsv``: a header; the columns ``--source-column`` and ``--target-column`` (default
  ``source`` and ``target``);
- ``.jsonl``: one object a line, with those two string fields;
- any other name (``.txt``): no header, one pair a line, fields separated by TABs, as Tatoeba's
  ``fra-eng.txt`` (English TAB French) and the PyTorch translation tutorial's files are. The
  columns are numbers here (default 1 and 2; ``--source-column 2 --target-column 1`` translates
  the other way). Every line must have as many fields as the first (at least two); fields after
  the two read are ignored (newer manythings.org files add a third, the attribution).

An empty source or target, a line with fewer fields, a record without the field: one
:class:`InputError` naming file and line (and column), never a silent skip.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import check_readable, decode_lines, open_binary
from llmtool.io.tables import csv_rows, find_column
from llmtool.training.data import Layout, TrainingData, arrow_rows, file_kind, hold_out, quiet_datasets

SOURCE = "source"  # the default source column (tables) or field (JSON Lines) ...
TARGET = "target"  # ... and target
PLAIN_COLUMNS = ("1", "2")  # a headerless TAB-separated file: the source and target fields, by number


@dataclass(frozen=True)
class PairLayout(Layout):
    """A file of pairs: the source column (``text``) and the target column (``text_pair``); for a headerless
    file, their numbers (from 1) and how many fields each line has."""

    fields: int = 0

    @property
    def source(self) -> str:
        return self.text

    @property
    def target(self) -> str:
        return self.text_pair or ""

    def describe(self) -> str:
        if self.kind == "lines":
            return f"TAB-separated pairs, source=field {self.source}, target=field {self.target}"
        return f"source={self.source!r}, target={self.target!r}"


def resolve_layout(
    path: str, source: str | None, target: str | None, encoding: str = "utf-8", flag: str = ""
) -> PairLayout:
    """Check the file and its header (or first line); pick the columns. Reads only the first rows."""
    check_readable(path)
    if os.path.getsize(path) == 0:
        raise InputError("empty file", source=path)
    kind = file_kind(path)
    if kind in ("csv", "tsv"):
        header, _ = csv_rows(path, encoding)
        src = header[find_column(header, source or SOURCE, path, "--source-column")]
        tgt = header[find_column(header, target or TARGET, path, "--target-column")]
    elif kind == "jsonl":
        src, tgt = source or SOURCE, target or TARGET
    else:
        return _plain_layout(path, source, target, encoding)
    if src == tgt:
        raise UsageError("--source-column and --target-column name the same column")
    return PairLayout(path, kind, src, tgt, encoding=encoding)


def _plain_layout(path: str, source: str | None, target: str | None, encoding: str) -> PairLayout:
    fields = 0
    for line, text in decode_lines(open_binary(path), path, encoding):
        if text.strip():
            fields = text.count("\t") + 1
            if fields < 2:
                raise InputError(
                    "expected a source and a target separated by a TAB (or name the file .csv/.tsv/.jsonl)",
                    source=path,
                    line=line,
                )
            break
    if not fields:
        raise InputError("no pairs (only blank lines)", source=path)
    numbers = []
    asked = ((source, PLAIN_COLUMNS[0], "--source-column"), (target, PLAIN_COLUMNS[1], "--target-column"))
    for given, default, flag in asked:
        value = given or default
        if not value.isdigit() or not 1 <= int(value) <= fields:
            raise UsageError(f"{flag} {value!r}: {path} has no header; name a field by its number, 1 to {fields}")
        numbers.append(str(int(value)))
    if numbers[0] == numbers[1]:
        raise UsageError("--source-column and --target-column name the same column")
    return PairLayout(path, "lines", numbers[0], numbers[1], encoding=encoding, fields=fields)


def iter_pairs(layout: PairLayout) -> Iterator[dict[str, Any]]:
    """``{"source", "target", "line"}`` for each pair, checked as it is read."""
    if layout.kind in ("csv", "tsv"):
        header, rows = csv_rows(layout.path, layout.encoding)
        s, t = header.index(layout.source), header.index(layout.target)
        for line, row in rows:
            yield _pair(layout, line, row[s], row[t], (s + 1, t + 1))
        return
    for line, text in decode_lines(open_binary(layout.path), layout.path, layout.encoding):
        if not text.strip():
            continue
        if layout.kind == "lines":
            cells = text.split("\t")
            if len(cells) != layout.fields:
                found = f"{len(cells)} TAB-separated fields; the first line has {layout.fields}"
                raise InputError(found, source=layout.path, line=line)
            s, t = int(layout.source), int(layout.target)
            yield _pair(layout, line, cells[s - 1], cells[t - 1], (s, t))
            continue
        yield _json_pair(layout, line, text)


def _json_pair(layout: PairLayout, line: int, text: str) -> dict[str, Any]:
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise InputError(f"not valid JSON ({getattr(exc, 'msg', exc)})", source=layout.path, line=line) from None
    if not isinstance(record, dict):
        raise InputError("a record must be a JSON object", source=layout.path, line=line)
    values = []
    for name, flag in ((layout.source, "--source-column"), (layout.target, "--target-column")):
        if name not in record:
            fields = ", ".join(repr(k) for k in record)
            raise InputError(f"no field {name!r} ({flag}); fields: {fields}", source=layout.path, line=line)
        if not isinstance(record[name], str):
            raise InputError(f"field {name!r} is not a string", source=layout.path, line=line)
        values.append(record[name])
    return _pair(layout, line, values[0], values[1], (None, None))


def _pair(layout: PairLayout, line: int, source: str, target: str, columns: tuple[int | None, int | None]) -> dict:
    for value, what, column in ((source, "source", columns[0]), (target, "target", columns[1])):
        if not value.strip():
            raise InputError(f"empty {what}", source=layout.path, line=line, column=column)
    return {"source": source.strip(), "target": target.strip(), "line": line}


def _generate(layout_json: str) -> Iterator[dict[str, Any]]:
    """The generator handed to ``Dataset.from_generator`` (module level, so it pickles)."""
    yield from iter_pairs(PairLayout(**json.loads(layout_json)))


def load_pairs(layout: PairLayout, cache_dir: str) -> Any:
    """Every pair of a checked file as an on-disk Arrow dataset (columns ``source``, ``target``, ``line``)."""
    if next(iter_pairs(layout), None) is None:
        raise InputError("no pairs (only a header, or blank lines)", source=layout.path)
    quiet_datasets()
    from datasets import Features, Value

    features = Features({"source": Value("string"), "target": Value("string"), "line": Value("int64")})
    return arrow_rows(_generate, features, layout, cache_dir)


def prepare(
    train_path: str,
    source: str | None,
    target: str | None,
    *,
    cache_dir: str,
    valid_path: str | None = None,
    valid_split: float = 0.1,
    seed: int = 42,
    encoding: str = "utf-8",
) -> TrainingData:
    """Check and load pairs, and split off validation pairs (seeded) unless a --valid file is given."""
    layout = resolve_layout(train_path, source, target, encoding)
    valid_layout = resolve_layout(valid_path, source, target, encoding) if valid_path else None
    rows = load_pairs(layout, cache_dir)
    data = TrainingData("seq2seq", rows, None, layout, valid_source="none")  # type: ignore[arg-type]
    valid = load_pairs(valid_layout, cache_dir) if valid_layout is not None else None
    hold_out(data, valid, valid_layout.path if valid_layout else "", valid_split, seed)
    return data


# --------------------------------------------------------------------------- examples


class PairEncoder:
    """Token ids of pairs: the source as ``input_ids`` (with its attention mask), the target as ``labels``
    (the loss covers the target only); each side truncated to ``limit`` tokens when given."""

    def __init__(self, tokenizer: Any, limit: int | None) -> None:
        self.tokenizer, self.limit = tokenizer, limit

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        cut = {"truncation": True, "max_length": self.limit} if self.limit is not None else {}
        sources = self.tokenizer(list(batch["source"]), **cut)
        targets = self.tokenizer(text_target=list(batch["target"]), **cut)
        return {
            "input_ids": sources["input_ids"],
            "attention_mask": sources["attention_mask"],
            "labels": targets["input_ids"],
        }


def pair_lengths(tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
    """For --dry-run: per pair, the ids of its longer side (the limit applies to each side)."""
    encoded = PairEncoder(tokenizer, None)(batch)
    return [s if len(s) >= len(t) else t for s, t in zip(encoded["input_ids"], encoded["labels"], strict=True)]


def collator(tokenizer: Any) -> Any:
    """Pads a batch: sources with the pad token, labels with -100 (the model makes its decoder inputs
    from the labels, shifted right behind its decoder start token)."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100)


def keep_padding_row_zero(model: Any) -> None:
    """Marian's decoder starts from the padding token, whose embedding is zero; CTranslate2 (like Marian
    itself) starts from a zero vector. The embedding is tied to the output layer, so the loss's softmax
    would move that row: its gradient is zeroed, and the two engines decode alike after training (a
    fine-tuned OPUS-MT model as much as one ``pretrain --objective seq2seq`` built)."""
    pad = int(model.config.pad_token_id)
    weight = model.get_input_embeddings().weight

    def no_padding_gradient(grad: Any) -> Any:
        grad = grad.clone()
        grad[pad] = 0
        return grad

    weight.register_hook(no_padding_gradient)
