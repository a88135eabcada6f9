"""From a token classifier's per-token logits to entities: the five ways Transformers'
``TokenClassificationPipeline`` offers (``--aggregation none|simple|first|average|max``), in numpy.

The rules are the pipeline's (transformers/pipelines/token_classification.py), copied so that both
engines give its results without torch:

- scores are the softmax of each token's logits; special tokens ([CLS], </s>, ...) are left out;
- a token is a *subword* (it continues the word before it) when the tokenizer marks continuations
  (WordPiece's ``##``: the token's text is longer than the characters it covers), else, by the
  pipeline's fallback, when the character before it is not a space; an unknown token never is;
- ``none``: one entity per token, its most probable label (``B-PER``), ``O`` left out;
- ``simple``: each token's most probable label, then adjacent tokens of the same type grouped
  (``B-`` starts a new entity, ``I-`` or a bare label continues one), the score their mean;
- ``first`` / ``max`` / ``average``: one label per *word* first (the first token's; the most
  confident token's; the label of the averaged scores), then grouped as ``simple``;
- ``O`` (``ignore``) entities are left out after grouping.

Long inputs are cut into overlapping windows; each window is aggregated alone, and where entities of
two windows overlap, the longer one (same length: the higher score) is kept, as the pipeline does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmtool.engines.base import FloatArray

AGGREGATIONS = ("none", "simple", "first", "average", "max")
WORD_AGGREGATIONS = ("first", "average", "max")


@dataclass(frozen=True, slots=True)
class Window:
    """One window of an input: its tokens (ids, token strings, character offsets into the input) and
    which of them are special tokens."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special: list[int]
    type_ids: list[int]


@dataclass(slots=True)
class PreEntity:
    """A token before aggregation: its label probabilities, its characters, and whether it continues a word."""

    scores: FloatArray
    start: int
    end: int
    index: int
    is_subword: bool


Entity = dict[str, Any]  # {"label", "score", "start", "end"} (and "index", the token, for none)


def softmax(logits: FloatArray) -> FloatArray:
    """The pipeline's softmax over the last axis (float32 in, float32 out)."""
    maxes = np.max(logits, axis=-1, keepdims=True)
    shifted = np.exp(logits - maxes)
    out: FloatArray = shifted / shifted.sum(axis=-1, keepdims=True)
    return out


def pre_entities(
    text: str, window: Window, scores: FloatArray, *, continuation_marks: bool, unk_id: int | None
) -> list[PreEntity]:
    """The window's non-special tokens with their scores (``gather_pre_entities`` in the pipeline).

    ``continuation_marks``: the tokenizer model marks continuing subwords (WordPiece's ``##``), so a
    token whose text is longer than its characters is a subword; otherwise the fallback heuristic."""
    out: list[PreEntity] = []
    for idx, token_scores in enumerate(scores):
        if window.special[idx]:
            continue
        start, end = window.offsets[idx]
        word, word_ref = window.tokens[idx], text[start:end]
        if continuation_marks:
            is_subword = len(word) != len(word_ref)
        else:
            is_subword = start > 0 and " " not in text[start - 1 : start + 1]
        if unk_id is not None and window.ids[idx] == unk_id:
            is_subword = False
        out.append(PreEntity(token_scores, start, end, idx, is_subword))
    return out


def aggregate(pres: Sequence[PreEntity], strategy: str, id2label: Mapping[int, str]) -> list[Entity]:
    """One window's entities (``aggregate`` in the pipeline), ``O`` not yet left out."""
    if strategy in ("none", "simple"):
        entities = []
        for pre in pres:
            best = int(pre.scores.argmax())
            entity = {"label": id2label[best], "score": float(pre.scores[best]), "start": pre.start, "end": pre.end}
            entities.append({**entity, "index": pre.index} if strategy == "none" else entity)
    else:
        entities = _aggregate_words(pres, strategy, id2label)
    return entities if strategy == "none" else group_entities(entities)


def _aggregate_words(pres: Sequence[PreEntity], strategy: str, id2label: Mapping[int, str]) -> list[Entity]:
    """One entity per word (a token and the subwords after it), its label by ``strategy``."""
    words: list[list[PreEntity]] = []
    for pre in pres:
        if words and pre.is_subword:
            words[-1].append(pre)
        else:
            words.append([pre])
    return [_aggregate_word(word, strategy, id2label) for word in words]


def _aggregate_word(word: Sequence[PreEntity], strategy: str, id2label: Mapping[int, str]) -> Entity:
    if strategy == "first":
        scores = word[0].scores
    elif strategy == "max":
        scores = max(word, key=lambda pre: pre.scores.max()).scores
    elif strategy == "average":
        scores = np.nanmean(np.stack([pre.scores for pre in word]), axis=0)
    else:
        raise ValueError(f"unknown word aggregation {strategy!r}")
    best = int(scores.argmax())
    return {"label": id2label[best], "score": float(scores[best]), "start": word[0].start, "end": word[-1].end}


def bio(label: str) -> tuple[str, str]:
    """(``B`` or ``I``, the entity type) of a label; a label without a ``B-``/``I-`` prefix continues."""
    if label.startswith("B-"):
        return "B", label[2:]
    if label.startswith("I-"):
        return "I", label[2:]
    return "I", label


def group_entities(entities: Sequence[Entity]) -> list[Entity]:
    """Adjacent tokens (or words) of the same type grouped into one entity (``group_entities``)."""
    groups: list[Entity] = []
    current: list[Entity] = []
    for entity in entities:
        if current:
            bi, kind = bio(entity["label"])
            _, last_kind = bio(current[-1]["label"])
            if kind == last_kind and bi != "B":
                current.append(entity)
                continue
            groups.append(_group(current))
        current = [entity]
    if current:
        groups.append(_group(current))
    return groups


def _group(entities: Sequence[Entity]) -> Entity:
    return {
        "label": entities[0]["label"].split("-", 1)[-1],
        "score": float(np.nanmean([e["score"] for e in entities])),
        "start": entities[0]["start"],
        "end": entities[-1]["end"],
    }


def merge_windows(entities: Sequence[Entity]) -> list[Entity]:
    """Entities of overlapping windows, by start; of two that overlap, the longer (same length: the
    more confident) is kept (``aggregate_overlapping_entities``)."""
    if not entities:
        return []
    ordered = sorted(entities, key=lambda e: e["start"])
    kept: list[Entity] = []
    previous = ordered[0]
    for entity in ordered:
        if previous["start"] <= entity["start"] < previous["end"]:
            length, previous_length = entity["end"] - entity["start"], previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and entity["score"] > previous["score"]):
                previous = entity
        else:
            kept.append(previous)
            previous = entity
    kept.append(previous)
    return kept


def entities_of(
    text: str,
    windows: Sequence[Window],
    logits: Sequence[FloatArray],
    strategy: str,
    id2label: Mapping[int, str],
    *,
    ignore: Sequence[str] = ("O",),
    continuation_marks: bool,
    unk_id: int | None,
) -> list[Entity]:
    """The entities of one input from its windows' logits: ``{"text", "label", "start", "end", "score"}``
    with ``text == input[start:end]`` (and ``index``, the token, for ``none``)."""
    found: list[Entity] = []
    for window, window_logits in zip(windows, logits, strict=True):
        scores = softmax(np.asarray(window_logits, dtype=np.float32))
        pres = pre_entities(text, window, scores, continuation_marks=continuation_marks, unk_id=unk_id)
        found += [e for e in aggregate(pres, strategy, id2label) if e["label"] not in ignore]
    if len(windows) > 1:
        found = merge_windows(found)
    return [{"text": text[e["start"] : e["end"]], **e} for e in found]


def word_tags(words: Sequence[tuple[int, int]], entities: Sequence[Entity]) -> list[str]:
    """An IOB2 tag per word (``(start, end)`` characters) from the entities: ``B-TYPE`` for a word that
    starts an entity, ``I-TYPE`` for one inside it, ``O`` for the others (for CoNLL columns)."""
    ordered = sorted(entities, key=lambda e: e["start"])
    tags: list[str] = []
    for start, end in words:
        tag = "O"
        for e in ordered:
            if e["start"] < end and start < e["end"]:
                _, kind = bio(e["label"])
                # A word inside an entity continues it; one that starts an entity begins a new one,
                # unless the entity is a token labelled I- (--aggregation none) after one of its type.
                after_same = bool(tags) and tags[-1] in ("B-" + kind, "I-" + kind)
                continues = start > e["start"] or (e["label"].startswith("I-") and after_same)
                tag = ("I-" if continues else "B-") + kind
                break
        tags.append(tag)
    return tags
