"""``llmtool evaluate``: judge a model on labelled data (classifiers) or held-out text (LMs).

Sequence classifiers: accuracy, macro-F1, per-class precision/recall/F1/support and the
confusion matrix, against a CSV label column. Gold labels may be the model's label names or
its label ids; anything else is reported (with its line) before the model loads.

Encoder-decoders: BLEU, chrF and ROUGE of the model's translations or summaries against references
(:mod:`llmtool.tasks.evaluate_seq2seq`).

Causal and masked LMs: the corpus perplexity of a text file or CSV column, each line scored
with :mod:`llmtool.tasks.score` and pooled by token count (pseudo-perplexity for masked LMs).

Metrics are computed here in plain Python, with scikit-learn's conventions: precision of a class
never predicted is 0, and macro-F1 averages over the classes that occur in the gold labels or
the predictions (a class of the model that appears in neither does not drag the average down).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import IO, Any

from llmtool.engines import choice as engines
from llmtool.errors import InputError, ModelError, UsageError
from llmtool.io.console import Console
from llmtool.io.formats import Formatter
from llmtool.io.streams import read_records
from llmtool.io.tables import csv_rows, is_table
from llmtool.kinds import ENCODER_DECODER, model_kind
from llmtool.metrics import classification_metrics
from llmtool.models import ModelRef, architecture
from llmtool.settings import ClassifyOptions, EvaluateOptions, ModelOptions, ScoreOptions
from llmtool.tasks.base import locate
from llmtool.tasks.classify import Classifier, load_classifier, read_examples
from llmtool.tasks.evaluate_qa import evaluate_qa, is_qa_data, qa_summary, qa_tsv_rows
from llmtool.tasks.evaluate_seq2seq import evaluate_seq2seq, seq2seq_summary, seq2seq_tsv_rows
from llmtool.tasks.evaluate_similarity import (
    evaluate_similarity,
    is_sentence_encoder,
    similarity_summary,
    similarity_tsv_rows,
    sts_layout,
)
from llmtool.tasks.evaluate_tag import evaluate_tags, is_tag_data, tagging_summary, tagging_table, tagging_tsv_rows
from llmtool.tasks.score import lm_objective, load_scorer
from llmtool.tasks.seq2seq_pairs import seq2seq_folder

__all__ = ["EvaluateOptions", "classification_metrics", "evaluate", "label_id"]


# --------------------------------------------------------------------------- metrics


def label_id(value: str, label2id: dict[str, int], num_labels: int) -> int | None:
    """The model's id for a gold label written as a name (preferred) or an id ("1", "1.0")."""
    if value in label2id:
        return label2id[value]
    try:
        number = float(value)
    except ValueError:
        return None
    if number.is_integer() and 0 <= number < num_labels:
        return int(number)
    return None


# --------------------------------------------------------------------------- evaluation


def evaluate(
    data: str,
    *,
    model: str | None = None,
    options: EvaluateOptions | None = None,
    model_options: ModelOptions | None = None,
    console: Console | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluate a model on DATA; returns one plain dict (the record ``--json`` prints: the CLI calls this too).

    ``kwargs`` are :class:`EvaluateOptions` fields (``text_column="sentence"``).

    >>> evaluate("dev.csv", model="./sst2-model")["accuracy"]  # doctest: +SKIP
    """
    opts = options or EvaluateOptions(**kwargs)
    if model_options is None:
        if model is None:
            raise UsageError("evaluate needs a model")
        model_options = ModelOptions(model=model)
    opts.check()
    console = console or Console(quiet=True)
    # JSON Lines tokens and tags have no text field to check; an encoder-decoder's pairs are checked by
    # evaluate_seq2seq
    if not is_tag_data(data, opts.encoding) and not seq2seq_folder(model_options.model):
        _check_data(data, opts)
    ref = locate("evaluate", model_options)
    if ENCODER_DECODER in model_kind(ref.folder).kinds:
        return evaluate_seq2seq(data, ref, opts, console)
    config = engines.model_config(ref)
    if is_sentence_encoder(ref, config):
        return evaluate_similarity(data, ref, opts, console)
    recorded = getattr(config, "architectures", None) or []
    if any(name.endswith("ForTokenClassification") for name in recorded):
        return evaluate_tags(data, ref, opts, console)
    if any(name.endswith("ForQuestionAnswering") for name in recorded):
        return evaluate_qa(data, ref, opts, console)
    if any(name.endswith("ForSequenceClassification") for name in recorded):
        return _evaluate_classifier(data, ref, opts, console, config)
    objective = lm_objective(config)
    if objective is not None:
        return _evaluate_lm(data, ref, opts, console, objective)
    raise ModelError(
        f"{ref.name} ({architecture(config)}) is not a model evaluate measures "
        "(a classifier, tagger, QA model, sentence encoder or language model)"
    )


def _check_data(data: str, opts: EvaluateOptions) -> None:
    """DATA exists, is readable and (for a table) has a header: checked before the model's config is read.

    Which columns a table needs depends on the kind of model, so they are checked later."""
    if data == "-" or is_qa_data(data, opts.encoding):  # read whole by evaluate_qa, before the model loads
        return
    if is_table(data):
        if not sts_layout(data, opts.encoding):  # the STS Benchmark's headerless file: evaluate_similarity
            csv_rows(data, opts.encoding)
    else:
        read_records(None, data, opts.text_column, encoding=opts.encoding)


def _evaluate_classifier(
    data: str, ref: ModelRef, opts: EvaluateOptions, console: Console, config: Any
) -> dict[str, Any]:
    if not is_table(data):
        raise UsageError(f"{data}: a classifier is evaluated on a .csv or .tsv file with a label column")
    if opts.plot is not None:
        from llmtool import plots

        plots.require("--plot")  # before the model loads
    id2label = {int(k): str(v) for k, v in config.id2label.items()}
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
    label2id = label2id or {v: k for k, v in id2label.items()}
    labels = [id2label[i] for i in sorted(id2label)]
    rows = _check_labels(data, opts, label2id, labels)  # the cheap pass, before any weights load
    tokenizer, encoder = engines.open_encoder(ref, "classify", load_classifier)
    classifier = Classifier(tokenizer, encoder, ClassifyOptions(batch_size=opts.batch_size, max_length=opts.max_length))
    confusion = [[0] * len(labels) for _ in labels]
    examples = read_examples(
        None,
        None,
        data,
        text_column=opts.text_column,
        pair_column=opts.pair_column,
        label_column=opts.label_column,
        encoding=opts.encoding,
    )
    with console.progress("examples", total=rows) as bar:
        for example, record in classifier.results(examples.items):
            gold = label_id(example.label or "", label2id, len(labels))
            assert gold is not None  # checked in the first pass
            confusion[gold][record["predictions"][0]["id"]] += 1
            bar.advance()
    metrics = classification_metrics(confusion, labels)
    result = {"task": "classification", "model": ref.name, "data": data, **metrics}
    if opts.plot is not None:
        from llmtool import plots

        plots.confusion_matrix(labels, confusion, opts.plot, console=console)
        result["plot"] = opts.plot
    return result


def _check_labels(data: str, opts: EvaluateOptions, label2id: dict[str, int], labels: list[str]) -> int:
    """Read DATA once: every text present and every label known to the model; return the row count."""
    examples = read_examples(
        None,
        None,
        data,
        text_column=opts.text_column,
        pair_column=opts.pair_column,
        label_column=opts.label_column,
        encoding=opts.encoding,
    )
    unknown: dict[str, int] = {}
    rows = 0
    for example in examples.items:
        rows += 1
        if example.error is not None:
            raise InputError(example.error, source=example.source, line=example.line)
        if not example.label:
            raise InputError(f"empty label in column {opts.label_column!r}", source=data, line=example.line)
        if label_id(example.label, label2id, len(labels)) is None:
            unknown.setdefault(example.label, example.line)
    if rows == 0:
        raise InputError("no rows to evaluate", source=data)
    if unknown:
        shown = ", ".join(f"{name!r} (line {line})" for name, line in list(unknown.items())[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        known = ", ".join(f"{name!r} ({i})" for i, name in enumerate(labels))
        raise InputError(
            f"labels the model does not know: {shown}{more}; its labels (and ids) are {known}", source=data
        )
    return rows


def _evaluate_lm(data: str, ref: ModelRef, opts: EvaluateOptions, console: Console, objective: Any) -> dict[str, Any]:
    if opts.pair_column is not None:
        raise UsageError("--text-pair-column applies to sentence-pair classifiers, not language models")
    if opts.plot is not None:
        raise UsageError("--plot draws a classifier's confusion matrix; a language model has none")
    records = read_records(None, data, opts.text_column, encoding=opts.encoding)
    score_options = ScoreOptions(
        batch_size=opts.batch_size, max_length=opts.max_length, stride=opts.stride, bos=opts.bos
    )
    score_options.check()
    scorer = load_scorer(ref, objective, score_options)
    with console.progress("lines") as bar:
        for _ in scorer(records):
            bar.advance()
    total = scorer.total()
    if total["tokens"] == 0:
        raise InputError("no text to score", source=data)
    return {
        "task": "perplexity",
        "objective": objective,
        "model": ref.name,
        "data": data,
        "lines": total["lines"],
        "tokens": total["tokens"],
        "log_likelihood": total["log_likelihood"],
        "perplexity": total["perplexity"],
    }


# --------------------------------------------------------------------------- output


def _table(rows: Sequence[Sequence[object]]) -> list[str]:
    """Left-aligned columns, two spaces apart, no trailing spaces."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(max(len(r) for r in cells))]
    return ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in cells]


def _summary(result: dict[str, Any]) -> list[tuple[str, str]]:
    if result["task"] == "classification":
        return [
            ("examples", str(result["examples"])),
            ("accuracy", f"{result['accuracy']:.4f}"),
            ("macro-F1", f"{result['macro_f1']:.4f}"),
        ]
    if result["task"] == "similarity":
        return similarity_summary(result)
    if result["task"] == "tagging":
        return tagging_summary(result)
    if result["task"] == "qa":
        return qa_summary(result)
    if result["task"] == "seq2seq":
        return seq2seq_summary(result)
    name = "perplexity" if result["objective"] == "clm" else "pseudo-perplexity"
    return [
        ("lines", str(result["lines"])),
        ("tokens", str(result["tokens"])),
        ("log-likelihood", f"{result['log_likelihood']:.4f}"),
        (name, f"{result['perplexity']:.4f}"),
    ]


def _per_class_rows(result: dict[str, Any]) -> list[list[str]]:
    return [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"])]
        for name, m in result["per_class"].items()
    ]


def render_text(result: dict[str, Any]) -> str:
    """The plain report for pipes and files (documented in the README, tested exactly)."""
    lines = [f"{key}: {value}" for key, value in _summary(result)]
    if result["task"] == "tagging":
        lines += ["", *tagging_table(result)]
    if result["task"] == "classification":
        labels = result["labels"]
        lines += ["", *_table([["label", "precision", "recall", "f1", "support"], *_per_class_rows(result)])]
        lines += ["", "confusion (rows: true label, columns: predicted)"]
        lines += _table(
            [["", *labels], *([name, *row] for name, row in zip(labels, result["confusion_matrix"], strict=True))]
        )
    return "\n".join(lines)


def render_rich(result: dict[str, Any], out: IO[str]) -> None:
    """The same report as Rich tables, for a terminal."""
    from rich.console import Console as RichConsole
    from rich.markup import escape
    from rich.table import Table

    console = RichConsole(file=out)
    summary = Table(show_header=False, box=None)
    for key, value in _summary(result):
        summary.add_row(key, value)
    console.print(summary)
    if result["task"] != "classification":
        return
    per_class = Table(title="per class")
    for name in ("label", "precision", "recall", "f1", "support"):
        per_class.add_column(name, justify="left" if name == "label" else "right")
    for row in _per_class_rows(result):
        per_class.add_row(escape(row[0]), *row[1:])
    console.print(per_class)
    confusion = Table(title="confusion (rows: true, columns: predicted)")
    confusion.add_column("true \\ predicted")
    for name in result["labels"]:
        confusion.add_column(name, justify="right")
    for i, (name, row) in enumerate(zip(result["labels"], result["confusion_matrix"], strict=True)):
        confusion.add_row(escape(name), *(f"[bold]{v}[/bold]" if i == j else str(v) for j, v in enumerate(row)))
    console.print(confusion)


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    """Long format, one number per row: ``metric, label, predicted, value``."""
    if result["task"] == "similarity":
        yield from similarity_tsv_rows(result)
        return
    if result["task"] == "tagging":
        yield from tagging_tsv_rows(result)
        return
    if result["task"] == "qa":
        yield from qa_tsv_rows(result)
        return
    if result["task"] == "seq2seq":
        yield from seq2seq_tsv_rows(result)
        return
    if result["task"] != "classification":
        for key in ("lines", "tokens", "log_likelihood", "perplexity"):
            yield [key, "", "", result[key]]
        return
    for key in ("examples", "accuracy", "macro_f1"):
        yield [key, "", "", result[key]]
    for name, m in result["per_class"].items():
        for key in ("precision", "recall", "f1", "support"):
            yield [key, name, "", m[key]]
    for name, row in zip(result["labels"], result["confusion_matrix"], strict=True):
        for predicted, count in zip(result["labels"], row, strict=True):
            yield ["confusion", name, predicted, count]


FORMATTER = Formatter(text=render_text, tsv_header=("metric", "label", "predicted", "value"), tsv_rows=_tsv_rows)
