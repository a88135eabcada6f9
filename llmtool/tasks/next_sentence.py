"""``llmtool next-sentence``: BERT's next-sentence-prediction head, P(B follows A) for each pair.

The head was trained (in BERT's pre-training) on pairs where B was the real next sentence half
the time and a random one otherwise; its first logit means "is next". A ``BertForPreTraining``
checkpoint (what ``llmtool pretrain --objective mlm --nsp`` writes, and what bert-base-uncased
ships) has the head; a model without it is refused rather than run with a random one.

Pairs come from two arguments, ``A<TAB>B`` lines (stdin or a text file), or two columns of a
.csv/.tsv file with a header. They are batched by similar token length; output keeps input order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from llmtool.engines import choice as engines
from llmtool.errors import InputError, ModelError, UsageError
from llmtool.io.formats import Formatter
from llmtool.io.inputs import ARGUMENT, Record
from llmtool.io.streams import read_records
from llmtool.io.tables import csv_rows, find_column, is_table
from llmtool.models import MissingHeadError, ModelRef, architecture, load, load_config, max_input_length, supports_task
from llmtool.settings import ModelOptions, NextSentenceOptions
from llmtool.tasks.base import BatchedTask, locate
from llmtool.tasks.classify import probabilities
from llmtool.tasks.registry import command

COMMAND = command("next-sentence")
DEFAULT_MODEL = COMMAND.default_model or ""
Encoding = dict[str, list[int]]  # input_ids and token_type_ids of one pair


@dataclass(frozen=True, slots=True)
class Pair:
    index: int  # 0-based position in the input
    line: int  # 1-based line (row) in the source
    first: str
    second: str
    source: str = ARGUMENT


# --------------------------------------------------------------------------- input


def read_pairs(
    first: str | None = None,
    second: str | None = None,
    input_path: str | None = None,
    *,
    first_column: str | None = None,
    second_column: str | None = None,
    encoding: str = "utf-8",
) -> Iterator[Pair]:
    """Pairs from FIRST SECOND, else ``--input`` (.csv/.tsv columns, or A<TAB>B lines), else stdin."""
    if first is not None and first != "-":
        if input_path is not None:
            raise UsageError("give either two sentences or --input, not both")
        if second is None:
            raise UsageError("give two sentences, A and B (or A<TAB>B lines on stdin)")
        for name, text in (("first", first), ("second", second)):
            if not text.strip():
                raise InputError(f"the {name} sentence is empty", source=ARGUMENT)
        return iter([Pair(0, 1, first, second)])
    if second is not None:
        raise UsageError("'-' reads pairs from stdin; a second argument does not go with it")
    if (first_column or second_column) and not is_table(input_path):
        raise UsageError("--first-column/--second-column need --input FILE.csv (or .tsv)")
    if input_path is not None and is_table(input_path):
        return _table_pairs(input_path, first_column, second_column, encoding)
    return _tab_pairs(read_records(first, input_path, encoding=encoding))


def _tab_pairs(records: Iterable[Record]) -> Iterator[Pair]:
    """``A<TAB>B`` lines (blank lines are skipped by the reader)."""
    for record in records:
        fields = record.text.split("\t")
        if len(fields) != 2:
            found = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated fields"
            raise InputError(f"expected A<TAB>B, found {found}", source=record.source, line=record.line)
        a, b = fields
        if not a.strip() or not b.strip():
            which = "first" if not a.strip() else "second"
            raise InputError(f"empty {which} sentence", source=record.source, line=record.line)
        yield Pair(record.index, record.line, a, b, record.source)


def _table_pairs(path: str, first_column: str | None, second_column: str | None, encoding: str) -> Iterator[Pair]:
    header, rows = csv_rows(path, encoding)
    if len(header) < 2 and (first_column is None or second_column is None):
        raise InputError(f"need two text columns, found {len(header)}", source=path, line=1)
    a = find_column(header, first_column, path, "--first-column") if first_column else 0
    b = find_column(header, second_column, path, "--second-column") if second_column else (1 if a != 1 else 0)
    if a == b:
        raise UsageError(f"the first and second sentences are both column {header[a]!r}")

    def pairs() -> Iterator[Pair]:
        for index, (lineno, row) in enumerate(rows):
            for col in (a, b):
                if not row[col].strip():
                    raise InputError(f"empty text in column {header[col]!r}", source=path, line=lineno)
            yield Pair(index, lineno, row[a], row[b], path)

    return pairs()


def as_pairs(inputs: Iterable[tuple[str, str] | Pair]) -> Iterator[Pair]:
    for index, item in enumerate(inputs):
        if isinstance(item, Pair):
            yield item
        else:
            yield Pair(index, index + 1, item[0], item[1])


# --------------------------------------------------------------------------- model


def load_nsp(ref: ModelRef) -> engines.LoadedModel:
    """Tokenizer and next-sentence model for the torch engine; models without a trained NSP head are refused."""
    from transformers import AutoModelForNextSentencePrediction

    config = load_config(ref)
    if not supports_task(config, "MODEL_FOR_NEXT_SENTENCE_PREDICTION_MAPPING_NAMES"):
        raise ModelError(
            f"{ref.name} ({architecture(config)}) has no next-sentence head; next-sentence needs a BERT-style "
            "model pre-trained with NSP (BertForPreTraining, BertForNextSentencePrediction)"
        )
    try:
        return load(AutoModelForNextSentencePrediction, ref, require_head="next-sentence head")
    except MissingHeadError as exc:
        raise ModelError(f"{exc}; pre-train one with `llmtool pretrain --objective mlm --nsp`") from None


class NextSentence(BatchedTask[Pair, Encoding, float]):
    """A next-sentence model (any engine) that turns pairs into probability records."""

    def __init__(self, tokenizer: Any, encoder: Any, options: NextSentenceOptions) -> None:
        options.check()
        super().__init__(options.batch_size, options.window)
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.options = options
        self.max_length = options.max_length or max_input_length(tokenizer, encoder)

    def encode(self, chunk: list[Pair]) -> list[Encoding]:
        # Both sentences are cut evenly from their ends when a pair exceeds the model's limit.
        enc = self.tokenizer(
            [p.first for p in chunk],
            [p.second for p in chunk],
            truncation="longest_first",
            max_length=self.max_length,
        )
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        return [{k: enc[k][i] for k in keys} for i in range(len(chunk))]

    def length(self, encoded: Encoding) -> int:
        return len(encoded["input_ids"])

    def predict(self, batch: list[Encoding]) -> list[float]:
        # label 0 is "B is the continuation of A" in BERT's NSP head
        return [float(p) for p in probabilities(self.encoder.sequence_logits(batch))[:, 0]]

    def record(self, pair: Pair, is_next: float) -> dict[str, Any]:
        return {"index": pair.index, "first": pair.first, "second": pair.second, "is_next": is_next}


# --------------------------------------------------------------------------- formats


def _text(result: dict[str, Any]) -> str:
    """``probability<TAB>A<TAB>B``, the probability with 4 decimals."""
    return f"{result['is_next']:.4f}\t{result['first']}\t{result['second']}"


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    yield [result["index"], f"{result['is_next']:.6g}", result["first"], result["second"]]


FORMATTER = Formatter(text=_text, tsv_header=("index", "is_next", "first", "second"), tsv_rows=_tsv_rows)


# --------------------------------------------------------------------------- Python API


def next_sentence(
    pairs: Iterable[tuple[str, str] | Pair],
    *,
    model: str = DEFAULT_MODEL,
    options: NextSentenceOptions | None = None,
    model_options: ModelOptions | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """P(B follows A) for each ``(A, B)``; yields one dict per pair, in order (the records
    ``llmtool next-sentence --json`` prints: the CLI calls this too).

    >>> for r in next_sentence([("I went to the shop.", "I bought milk.")]):
    ...     print(r["is_next"])  # doctest: +SKIP
    """
    opts = options or NextSentenceOptions(**kwargs)
    opts.check()
    ref = locate(COMMAND.name, model_options or ModelOptions(model=model))
    tokenizer, encoder = engines.open_encoder(ref, "next-sentence", load_nsp)
    return NextSentence(tokenizer, encoder, opts)(as_pairs(pairs))
