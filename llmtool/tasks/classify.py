"""``llmtool classify``: label each text (or text pair) with a fine-tuned sequence classifier.

Labels come back as the names in the model config's ``id2label`` (what ``llmtool finetune``
saves), so a model trained on "positive"/"negative" answers "positive"/"negative". Inputs are
batched by similar token length and results stream back in input order, as in fill-mask.
For CSV input, ``--format csv`` echoes each input row with the prediction columns appended.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from llmtool.engines import choice as engines
from llmtool.errors import InputError, ModelError, UsageError
from llmtool.io.formats import Formatter
from llmtool.io.inputs import ARGUMENT, Record
from llmtool.io.streams import read_records
from llmtool.io.tables import csv_rows, find_column, is_table, text_column
from llmtool.models import (
    MissingHeadError,
    ModelRef,
    architecture,
    ensure_pad_token,
    load,
    load_config,
    max_input_length,
    supports_task,
)
from llmtool.settings import ClassifyOptions, ModelOptions
from llmtool.tasks.base import BatchedTask, Invalid, locate
from llmtool.tasks.registry import command

COMMAND = command("classify")
HEAD = COMMAND.head
Encoding = dict[str, list[int]]  # input_ids (and token_type_ids) of one input
Top = list[tuple[int, float]]  # the top-k (label id, probability) of one input


# --------------------------------------------------------------------------- input


@dataclass(frozen=True, slots=True)
class Example:
    """One input: a text, maybe a second text (sentence-pair models), and where it came from."""

    index: int  # 0-based position in the input
    line: int  # 1-based line (CSV: the row's first line)
    text: str
    pair: str | None = None
    source: str = ARGUMENT
    row: tuple[str, ...] | None = None  # the whole CSV row, echoed back by --format csv
    label: str | None = None  # the gold label (evaluate)
    error: str | None = None  # why this input cannot be classified (an empty cell)


@dataclass
class Examples:
    """The header of tabular input (None for text lines) and the examples, read lazily."""

    header: list[str] | None
    items: Iterator[Example]
    has_pair: bool = False


def read_examples(
    text: str | None = None,
    pair: str | None = None,
    input_path: str | None = None,
    *,
    text_column: str | None = None,
    pair_column: str | None = None,
    label_column: str | None = None,
    encoding: str = "utf-8",
) -> Examples:
    """Examples from TEXT [PAIR], else a .csv/.tsv file's columns, else text lines (file or stdin).

    Only tabular input has second-text and label columns. Empty cells become examples with an
    ``error`` (so a CSV row is never silently dropped); blank text lines are skipped as usual.
    """
    if pair is not None and text is None:
        raise UsageError("a second text needs a first")
    if pair is not None and (text == "-" or input_path is not None):
        raise UsageError("a second TEXT argument goes with a first TEXT argument, not with --input or stdin")
    if is_table(input_path) and text is None:
        assert input_path is not None
        return _table_examples(input_path, text_column, pair_column, label_column, encoding)
    if pair_column is not None:
        raise UsageError("--text-pair-column needs --input FILE.csv (or .tsv)")
    if label_column is not None:
        raise UsageError("labels need --input FILE.csv (or .tsv) with a label column")
    if text is not None and text != "-" and pair is not None:
        if not pair.strip():
            raise InputError("the second TEXT is empty", source=ARGUMENT)
        records = read_records(text, None)
        return Examples(None, (Example(r.index, r.line, r.text, pair, r.source) for r in records), has_pair=True)
    records = read_records(text, input_path, text_column, encoding=encoding)
    return Examples(None, (Example(r.index, r.line, r.text, None, r.source) for r in records))


def _table_examples(
    path: str, text_column_name: str | None, pair_column: str | None, label_column: str | None, encoding: str
) -> Examples:
    header, rows = csv_rows(path, encoding)
    # A missing column is an error now, before any model loads.
    p = find_column(header, pair_column, path, "--text-pair-column") if pair_column is not None else None
    lab = find_column(header, label_column, path, "--label-column") if label_column is not None else None
    taken = [header[i] for i in (p, lab) if i is not None]
    t = text_column(header, path, requested=text_column_name, taken=taken, encoding=encoding)
    if p == t:
        raise UsageError(f"--text-pair-column {pair_column!r} is also the text column")
    if lab is not None and lab in (t, p):
        raise UsageError(f"--label-column {label_column!r} is also a text column")

    def items() -> Iterator[Example]:
        for index, (line, row) in enumerate(rows):
            error = None
            for col in (t, p):
                if col is not None and not row[col].strip():
                    error = error or f"empty text in column {header[col]!r}"
            yield Example(
                index,
                line,
                row[t],
                row[p] if p is not None else None,
                path,
                tuple(row),
                row[lab].strip() if lab is not None else None,
                error,
            )

    return Examples(header, items(), has_pair=p is not None)


def as_examples(inputs: str | Iterable[str] | Iterable[tuple[str, str]] | Iterable[Example]) -> Iterator[Example]:
    """Examples from a string, strings, (text, pair) tuples, or Examples (the Python API)."""
    items: Iterable[Any] = [inputs] if isinstance(inputs, str) else inputs
    for index, item in enumerate(items):
        if isinstance(item, Example):
            yield item
        elif isinstance(item, tuple):
            yield Example(index, index + 1, item[0], item[1])
        elif isinstance(item, Record):
            yield Example(item.index, item.line, item.text, None, item.source)
        elif item.strip():
            yield Example(index, index + 1, item)


# --------------------------------------------------------------------------- model


def check_classifier(ref: ModelRef) -> Any:
    """The model's config, after checking (without loading weights) that it can be a classifier."""
    config = load_config(ref)
    if not supports_task(config, "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES"):
        raise ModelError(f"{ref.name} ({architecture(config)}) cannot be a sequence classifier")
    if getattr(config, "problem_type", None) == "regression" or config.num_labels < 2:
        raise ModelError(f"{ref.name} is a regression model (one output); classify needs two or more classes")
    return config


def load_classifier(ref: ModelRef) -> engines.LoadedModel:
    """Tokenizer and classifier for the torch engine; a checkpoint without a trained head is refused."""
    from transformers import AutoModelForSequenceClassification

    check_classifier(ref)
    try:
        tokenizer, model = load(AutoModelForSequenceClassification, ref, require_head=HEAD)
    except MissingHeadError as exc:
        raise ModelError(f"{exc}; train one with `llmtool finetune --task classify`") from None
    ensure_pad_token(tokenizer, ref.name)
    if getattr(model.config, "pad_token_id", None) is None:
        # Decoder classifiers read the last non-pad token, so they must know the pad id.
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


class Classifier(BatchedTask[Example, Encoding, Top]):
    """A sequence classifier (any engine) that turns examples into prediction records."""

    def __init__(self, tokenizer: Any, encoder: Any, options: ClassifyOptions) -> None:
        options.check()
        super().__init__(options.batch_size, options.window, options.skip_invalid)
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.options = options
        self.max_length = options.max_length or max_input_length(tokenizer, encoder)
        config = encoder.config
        self.id2label: dict[int, str] = {int(k): str(v) for k, v in config.id2label.items()}
        # Multi-label models score each label on its own (sigmoid); others share one softmax.
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"

    @property
    def labels(self) -> list[str]:
        return [self.id2label[i] for i in sorted(self.id2label)]

    # ------------------------------------------------------------------ the loop's steps (tasks.base)

    def encode(self, chunk: list[Example]) -> list[Encoding | Invalid]:
        """Token ids (and segment ids) per example, or why it is invalid (an empty cell)."""
        valid = [i for i, e in enumerate(chunk) if e.error is None]
        encoded = iter(self._encode([chunk[i] for i in valid]))
        return [Invalid(e.error) if e.error is not None else next(encoded) for e in chunk]

    def length(self, encoded: Encoding) -> int:
        return len(encoded["input_ids"])

    def predict(self, batch: list[Encoding]) -> list[Top]:
        """For each input, the top-k (label id, probability)."""
        probs = probabilities(self.encoder.sequence_logits(batch), self.multi_label)
        k = min(self.options.top_k, probs.shape[-1])
        order = (-probs).argsort(axis=-1, kind="stable")[:, :k]
        values = [[float(row[i]) for i in idx] for row, idx in zip(probs, order, strict=True)]
        return [list(zip(idx.tolist(), vals, strict=True)) for idx, vals in zip(order, values, strict=True)]

    def record(self, example: Example, preds: Top) -> dict[str, Any]:
        predictions = [{"label": self.id2label.get(i, str(i)), "id": i, "score": s} for i, s in preds]
        record: dict[str, Any] = {"index": example.index, "input": example.text}
        if example.pair is not None:
            record["input_pair"] = example.pair
        record.update(label=predictions[0]["label"], score=predictions[0]["score"], predictions=predictions)
        return record

    # ------------------------------------------------------------------ internals

    def _encode(self, examples: Sequence[Example]) -> list[dict[str, list[int]]]:
        """Token ids (and segment ids) per example; single texts and pairs are encoded apart."""
        out: list[dict[str, list[int]]] = [{} for _ in examples]
        for is_pair in (False, True):
            group = [i for i, e in enumerate(examples) if (e.pair is not None) == is_pair]
            if not group:
                continue
            texts = [examples[i].text for i in group]
            pairs = [examples[i].pair or "" for i in group] if is_pair else None
            enc = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
            keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
            for n, i in enumerate(group):
                out[i] = {k: enc[k][n] for k in keys}
        return out


def probabilities(logits: Any, multi_label: bool = False) -> Any:
    """Softmax over each row (float32), or a sigmoid per label for multi-label models."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float32)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def open_classifier(model_options: ModelOptions, options: ClassifyOptions) -> Classifier:
    """Locate and load a classifier (on the engine :mod:`llmtool.engines.choice` chooses)."""
    ref = locate(COMMAND.name, model_options)
    tokenizer, encoder = engines.open_encoder(ref, "classify", load_classifier)
    return Classifier(tokenizer, encoder, options)


# --------------------------------------------------------------------------- formats


def _text(result: dict[str, Any]) -> str:
    """``label<TAB>probability`` (4 decimals), a pair per --top-k; an empty line for a skipped row."""
    if "error" in result:
        return ""
    return "\t".join(f"{p['label']}\t{p['score']:.4f}" for p in result["predictions"])


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    if "error" in result:
        yield [result["index"], "", "", "", "", result["error"]]
        return
    for rank, p in enumerate(result["predictions"], start=1):
        yield [result["index"], rank, p["label"], p["id"], f"{p['score']:.6g}", ""]


FORMATTER = Formatter(
    text=_text,
    tsv_header=("index", "rank", "label", "label_id", "score", "error"),
    tsv_rows=_tsv_rows,
)


def prediction_columns(top_k: int, skip_invalid: bool) -> list[str]:
    """The columns --format csv appends: ``predicted_label, predicted_score`` (numbered for top-k > 1)."""
    if top_k == 1:
        names = ["predicted_label", "predicted_score"]
    else:
        names = [f"predicted_{what}_{k}" for k in range(1, top_k + 1) for what in ("label", "score")]
    return [*names, "error"] if skip_invalid else names


def csv_formatter(header: Sequence[str] | None, has_pair: bool, top_k: int, skip_invalid: bool) -> Formatter:
    """A Formatter whose CSV output is each input row (or text) followed by the prediction columns."""
    inputs = list(header) if header is not None else ["text", "text_pair"] if has_pair else ["text"]
    added = prediction_columns(top_k, skip_invalid)
    clash = [c for c in added if c in inputs]
    if clash:
        raise UsageError(f"the input already has a column named {clash[0]!r}; --format csv would duplicate it")

    def rows(result: dict[str, Any]) -> Iterator[list[object]]:
        cells: list[object] = list(result["row"])
        if "error" in result:
            cells += [""] * (2 * top_k) + [result["error"]]
        else:
            for p in result["predictions"]:
                cells += [p["label"], f"{p['score']:.6g}"]
            cells += [""] * (2 * (top_k - len(result["predictions"])))  # fewer labels than --top-k
            if skip_invalid:
                cells.append("")
        yield cells

    return Formatter(FORMATTER.text, FORMATTER.tsv_header, FORMATTER.tsv_rows, [*inputs, *added], rows)


def _with_rows(pairs: Iterable[tuple[Example, dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    """Records carrying their input row, for --format csv (the row never reaches JSON output)."""
    for example, record in pairs:
        row = example.row
        if row is None:
            row = (example.text,) if example.pair is None else (example.text, example.pair)
        yield {**record, "row": row}


# --------------------------------------------------------------------------- Python API


def classify(
    inputs: str | Iterable[str] | Iterable[tuple[str, str]] | Iterable[Example],
    *,
    model: str = "",
    options: ClassifyOptions | None = None,
    model_options: ModelOptions | None = None,
    with_rows: bool = False,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Classify each input (a text, or a ``(text, pair)`` tuple); yields one dict per input, in order
    (the records ``llmtool classify --json`` prints: the CLI calls this too).

    ``kwargs`` are :class:`ClassifyOptions` fields (``top_k=2``). ``with_rows``: each record also
    carries its input row (``row``), for ``--format csv``.

    >>> for r in classify(["a great film"], model="./sst2-model"):
    ...     print(r["label"], r["score"])  # doctest: +SKIP
    """
    opts = options or ClassifyOptions(**kwargs)
    opts.check()
    classifier = open_classifier(model_options or ModelOptions(model=model), opts)
    pairs = classifier.results(as_examples(inputs))
    return _with_rows(pairs) if with_rows else (record for _, record in pairs)
