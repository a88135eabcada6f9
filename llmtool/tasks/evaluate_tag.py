"""``llmtool evaluate`` for token classifiers: entity-level precision, recall and F1 per type, on labelled
data in any format ``finetune --task tag`` reads (CoNLL columns, JSON Lines tokens and tags, doccano spans).

Each sentence is tagged as ``llmtool tag`` reads a line (the same windows, on either engine), and each
word gets the label of its first subword (the labelling ``finetune --task tag`` trains), as
Transformers' ``run_ner.py`` evaluates. Gold tags are converted to IOB2 as for training. The measure is
conlleval's, as ``seqeval`` computes it by default (an ``I-`` after ``O`` starts an entity: not strict
IOB2); ``strict_f1`` is seqeval's ``mode="strict", scheme=IOB2``. Both are stated in the result.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmtool.errors import UsageError
from llmtool.io.inputs import Record
from llmtool.io.streams import Console, chunked
from llmtool.models import ModelRef
from llmtool.settings import EvaluateOptions, TagOptions
from llmtool.tasks.tag_entities import Window
from llmtool.tasks.tag_scores import entity_scores

MEASURE = "conlleval (seqeval's default mode: an I- tag after O starts an entity; not strict IOB2)"


def is_tag_data(path: str, encoding: str = "utf-8") -> bool:
    """A JSON Lines file of tokens and tags (which the line readers of other evaluations would refuse)."""
    if path == "-" or Path(path).suffix.lower() not in (".jsonl", ".ndjson"):
        return False
    try:
        with open(path, encoding=encoding) as f:
            first = next((line for line in f if line.strip()), "")
        record = json.loads(first) if first else None
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "tokens" in record


def evaluate_tags(data: str, ref: ModelRef, opts: EvaluateOptions, console: Console) -> dict[str, Any]:
    """Tag every sentence of DATA; score the words' first-subword labels against the gold tags."""
    from llmtool.engines import choice as engines
    from llmtool.tasks.tag import Tagger, load_tagger
    from llmtool.training.tag_data import check_scheme, sentences, tag_layout

    if opts.plot is not None:
        raise UsageError("--plot draws a classifier's confusion matrix; use it with a sequence classifier")
    if data == "-":
        raise UsageError("a token classifier is evaluated on a file (CoNLL columns, or .jsonl), not stdin")
    layout = tag_layout(data, opts.encoding)
    layout = replace(layout, scheme=check_scheme(layout))  # the data is checked before the model loads
    tokenizer, encoder = engines.open_encoder(ref, "tag", load_tagger)
    tagger = Tagger(tokenizer, encoder, TagOptions(batch_size=opts.batch_size, max_length=opts.max_length), ref.name)
    id2label = tagger.id2label
    gold: list[list[str]] = []
    predicted: list[list[str]] = []
    with console.progress("sentences") as bar:
        for chunk in chunked(sentences(layout, layout.scheme), max(1, opts.batch_size * 8)):
            records = [Record(i, row["line"], row["text"], data) for i, row in enumerate(chunk)]
            encoded = tagger.encode(records)
            results = tagger.predict_all({i: e for i, e in enumerate(encoded) if isinstance(e, list)})
            for i, row in enumerate(chunk):
                windows, logits = results[i]
                labels = word_labels(row["starts"], row["ends"], windows, logits)
                gold.append(list(row["tags"]))
                predicted.append([id2label[label] if label is not None else "O" for label in labels])
            bar.advance(len(chunk))
    scores = entity_scores(gold, predicted)
    return {
        "task": "tagging",
        "model": ref.name,
        "data": data,
        "sentences": len(gold),
        "words": sum(len(g) for g in gold),
        "measure": MEASURE,
        "precision": scores["precision"],
        "recall": scores["recall"],
        "f1": scores["f1"],
        "macro_f1": scores["macro_f1"],
        "accuracy": scores["accuracy"],
        "strict_f1": entity_scores(gold, predicted, strict=True)["f1"],
        "entities": scores["entities"],
        "per_type": scores["per_type"],
    }


def word_labels(starts: list[int], ends: list[int], windows: list[Window], logits: list[Any]) -> list[int | None]:
    """Each word's label id: the argmax at its first token, from the window where that token stands
    furthest from the window's edges (None: the tokenizer gave the word no token)."""
    best: list[tuple[int, int] | None] = [None] * len(starts)  # (distance to the edge, label)
    for window, window_logits in zip(windows, logits, strict=True):
        content = [i for i, special in enumerate(window.special) if not special]
        if not content:
            continue
        first, last = content[0], content[-1]
        for i in content:
            start, end = window.offsets[i]
            word = _word_at(starts, ends, start)
            if word is None or end <= start or start != starts[word]:
                continue  # not a word's first token (a continuation, or a word begun in an earlier window)
            margin = min(i - first, last - i)
            current = best[word]
            if current is None or margin > current[0]:
                best[word] = (margin, int(window_logits[i].argmax()))
    return [b[1] if b is not None else None for b in best]


def _word_at(starts: list[int], ends: list[int], char: int) -> int | None:
    from bisect import bisect_right

    word = bisect_right(starts, char) - 1
    return word if word >= 0 and char < ends[word] else None


# --------------------------------------------------------------------------- output


def tagging_summary(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines of the plain report (and the Rich table)."""
    return [
        ("sentences", str(result["sentences"])),
        ("entities", str(result["entities"])),
        ("precision", f"{result['precision']:.4f}"),
        ("recall", f"{result['recall']:.4f}"),
        ("F1", f"{result['f1']:.4f}"),
        ("strict IOB2 F1", f"{result['strict_f1']:.4f}"),
        ("tag accuracy", f"{result['accuracy']:.4f}"),
        ("measure", result["measure"]),
    ]


def tagging_table(result: dict[str, Any]) -> list[str]:
    """Per type: precision, recall, F1 and support, in aligned columns."""
    rows = [["type", "precision", "recall", "f1", "support"]]
    rows += [
        [name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"])]
        for name, m in result["per_type"].items()
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]


def tagging_tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    for key in ("sentences", "entities", "precision", "recall", "f1", "strict_f1", "accuracy"):
        yield [key, "", "", result[key]]
    for name, m in result["per_type"].items():
        for key in ("precision", "recall", "f1", "support"):
            yield [key, name, "", m[key]]
