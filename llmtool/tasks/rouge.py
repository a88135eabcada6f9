"""ROUGE-1, ROUGE-2 and ROUGE-L (Lin, 2004), as Google's ``rouge-score`` package computes them with its
default tokenizer and no stemmer: lowercase, every run of characters other than a-z and 0-9 a
separator (so text in other scripts, Chinese included, has no ROUGE tokens: use chrF there); n-gram
overlap clipped by count; ROUGE-L from the longest common subsequence. F = 2PR / (P + R).

The corpus figure is the mean of the per-pair F-measures (what ``rouge-score``'s aggregator centres
on, without its bootstrap). Kept here so that ``evaluate`` needs no extra package; the tests compare
every figure with ``rouge-score``'s.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

_SEPARATORS = re.compile(r"[^a-z0-9]+")
KINDS = ("rouge1", "rouge2", "rougeL")


def tokens(text: str) -> list[str]:
    """rouge-score's tokenizer: lowercase, split on anything but a-z and 0-9."""
    return [t for t in _SEPARATORS.split(text.lower()) if t]


def fmeasure(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def ngram_scores(reference: Sequence[str], prediction: Sequence[str], n: int) -> tuple[float, float, float]:
    """(precision, recall, F) of the n-grams of ``prediction`` against ``reference``."""
    ref = Counter(tuple(reference[i : i + n]) for i in range(len(reference) - n + 1))
    pred = Counter(tuple(prediction[i : i + n]) for i in range(len(prediction) - n + 1))
    overlap = sum(min(count, pred[gram]) for gram, count in ref.items())
    precision = overlap / max(sum(pred.values()), 1)
    recall = overlap / max(sum(ref.values()), 1)
    return precision, recall, fmeasure(precision, recall)


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """The length of the longest common subsequence (two rows of the table at a time)."""
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def lcs_scores(reference: Sequence[str], prediction: Sequence[str]) -> tuple[float, float, float]:
    if not reference or not prediction:
        return 0.0, 0.0, 0.0
    common = lcs_length(reference, prediction)
    precision, recall = common / len(prediction), common / len(reference)
    return precision, recall, fmeasure(precision, recall)


def rouge(reference: str, prediction: str) -> dict[str, tuple[float, float, float]]:
    """{"rouge1"|"rouge2"|"rougeL": (precision, recall, F)} of one prediction against its reference."""
    ref, pred = tokens(reference), tokens(prediction)
    return {"rouge1": ngram_scores(ref, pred, 1), "rouge2": ngram_scores(ref, pred, 2), "rougeL": lcs_scores(ref, pred)}


def corpus_rouge(references: Iterable[str], predictions: Iterable[str]) -> dict[str, float]:
    """The mean F-measure of each kind over the pairs (0 for none)."""
    totals = dict.fromkeys(KINDS, 0.0)
    count = 0
    for reference, prediction in zip(references, predictions, strict=True):
        for kind, (_, _, f) in rouge(reference, prediction).items():
            totals[kind] += f
        count += 1
    return {kind: total / count if count else 0.0 for kind, total in totals.items()}
