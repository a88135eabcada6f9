"""Classification metrics, computed once for both ``evaluate`` and training's validation.

Plain Python, with scikit-learn's conventions: precision of a class never predicted is 0, and
macro-F1 averages over the classes that occur in the gold labels or the predictions (a class of the
model that appears in neither does not drag the average down).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def confusion(gold: Iterable[int], predicted: Iterable[int], classes: int) -> list[list[int]]:
    """The confusion matrix (rows: gold class, columns: predicted class)."""
    matrix = [[0] * classes for _ in range(classes)]
    for g, p in zip(gold, predicted, strict=True):
        matrix[int(g)][int(p)] += 1
    return matrix


def classification_metrics(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class scores from a confusion matrix (rows: gold, columns: predicted)."""
    k = len(labels)
    total = sum(sum(row) for row in confusion)
    correct = sum(confusion[i][i] for i in range(k))
    per_class: dict[str, dict[str, float | int]] = {}
    present_f1: list[float] = []
    for i, name in enumerate(labels):
        tp = confusion[i][i]
        support = sum(confusion[i])
        predicted = sum(confusion[r][i] for r in range(k))
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
        if support or predicted:
            present_f1.append(f1)
    return {
        "examples": total,
        "accuracy": correct / total if total else 0.0,
        "macro_f1": sum(present_f1) / len(present_f1) if present_f1 else 0.0,
        "labels": list(labels),
        "per_class": per_class,
        "confusion_matrix": [list(row) for row in confusion],
    }


def perplexity(log_likelihood: float, tokens: int) -> float | None:
    """exp(-log_likelihood / tokens); None for no tokens, inf past float range (``score``, ``evaluate``)."""
    import math

    if tokens == 0:
        return None
    try:
        return math.exp(-log_likelihood / tokens)
    except OverflowError:
        return math.inf


def total_record(lines: int, tokens: int, log_likelihood: float) -> dict[str, Any]:
    """The pooled record ``score --total`` writes after the lines (LM and seq2seq pairs alike)."""
    return {
        "total": True,
        "lines": lines,
        "tokens": tokens,
        "log_likelihood": log_likelihood,
        "perplexity": perplexity(log_likelihood, tokens),
    }
