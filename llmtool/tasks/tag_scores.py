"""Entity-level precision, recall and F1 of tag sequences: the conlleval measure, as ``seqeval`` computes it.

An entity is a run of tags of one type; it counts as found only when the prediction has exactly the
same type, start and end. Two ways to read the runs:

- **conlleval** (the default; ``seqeval``'s default mode and the CoNLL shared tasks' script): an
  entity starts at ``B-``, ``S-``, or at an ``I-``/``E-`` whose type differs from the tag before it
  (so IOB1 and sloppy IOB2 are read as intended), and ends where the next one starts or at ``O``;
- **strict IOB2** (``seqeval``'s ``mode="strict", scheme=IOB2``): an entity is a ``B-X`` followed by
  ``I-X``s; an ``I-`` without its ``B-`` is no entity at all.

Micro averages pool the entities of every type; macro averages are the mean of the types' scores.
Nothing here imports anything beyond the standard library.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

Span = tuple[str, int, int]  # (type, start, end) in tokens, end exclusive


def split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type) of a tag: ``("B", "PER")``, ``("O", "")``; other tags are read as seqeval reads them
    (the first character, then what follows a ``-``)."""
    if tag == "O" or not tag:
        return "O", ""
    if len(tag) > 1 and tag[1] == "-":
        return tag[0], tag[2:] or "_"
    return tag[0], tag[1:].split("-", 1)[-1] or "_"


def conlleval_spans(tags: Sequence[str]) -> list[Span]:
    """The entities of one sequence as conlleval (and seqeval's default mode) reads them."""
    spans: list[Span] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, kind = split_tag(tag)
        if _ends(prev_tag, prefix, prev_type, kind):
            spans.append((prev_type, begin, i))
        if _starts(prev_tag, prefix, prev_type, kind):
            begin = i
        prev_tag, prev_type = prefix, kind
    return spans


def _ends(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev not in ("O", ".") and prev_type != kind


def _starts(prev: str, tag: str, prev_type: str, kind: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and tag in ("E", "I"):
        return True
    return tag not in ("O", ".") and prev_type != kind


def strict_iob2_spans(tags: Sequence[str]) -> list[Span]:
    """The entities of one sequence in strict IOB2: ``B-X`` then ``I-X``s."""
    spans: list[Span] = []
    i = 0
    while i < len(tags):
        prefix, kind = split_tag(tags[i])
        if prefix != "B":
            i += 1
            continue
        j = i + 1
        while j < len(tags) and split_tag(tags[j]) == ("I", kind):
            j += 1
        spans.append((kind, i, j))
        i = j
    return spans


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def entity_scores(
    gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]], *, strict: bool = False
) -> dict[str, Any]:
    """Entity-level scores of ``predicted`` against ``gold`` tag sequences (equal lengths, pairwise).

    Returns ``precision``, ``recall``, ``f1`` (micro), ``macro_f1``, ``accuracy`` (of the tags),
    ``entities`` (gold count) and ``per_type``: ``{type: {precision, recall, f1, support}}``; a score
    with nothing to divide by is 0, as seqeval's ``zero_division=0``."""
    spans = strict_iob2_spans if strict else conlleval_spans
    true, found, right = Counter[str](), Counter[str](), Counter[str]()
    tags = correct = 0
    for number, (g, p) in enumerate(zip(gold, predicted, strict=True)):
        if len(g) != len(p):
            raise ValueError(f"sequence {number}: {len(g)} gold tags but {len(p)} predicted")
        gold_spans, predicted_spans = set(spans(g)), set(spans(p))
        true.update(kind for kind, _, _ in gold_spans)
        found.update(kind for kind, _, _ in predicted_spans)
        right.update(kind for kind, _, _ in gold_spans & predicted_spans)
        tags += len(g)
        correct += sum(a == b for a, b in zip(g, p, strict=True))
    per_type: dict[str, dict[str, float]] = {}
    for kind in sorted(set(true) | set(found)):
        precision, recall = _ratio(right[kind], found[kind]), _ratio(right[kind], true[kind])
        per_type[kind] = {"precision": precision, "recall": recall, "f1": _f1(precision, recall), "support": true[kind]}
    precision, recall = (
        _ratio(sum(right.values()), sum(found.values())),
        _ratio(sum(right.values()), sum(true.values())),
    )
    macro = sum(s["f1"] for s in per_type.values()) / len(per_type) if per_type else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": _f1(precision, recall),
        "macro_f1": macro,
        "accuracy": _ratio(correct, tags),
        "entities": sum(true.values()),
        "per_type": per_type,
    }
