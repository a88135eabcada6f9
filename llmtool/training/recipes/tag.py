"""``finetune --task tag``: token classification (named entities, parts of speech) from CoNLL columns,
JSON Lines tokens and tags, or character spans (:mod:`llmtool.training.tag_data`).

Each sentence is tokenized as one text with character offsets, and each token is matched to the word
its first character falls in. The first subword of each word is labelled with the word's IOB2 tag; the
others get -100 (left out of the loss), or with ``--label-all-subwords`` the word's tag (a ``B-`` made
``I-``: only the first subword begins the entity), as Transformers' ``run_ner.py`` does. The label
names go into the model config (``id2label``: ``O`` first, then ``B-X``/``I-X`` by type), so
``llmtool tag`` answers in them. The best checkpoint is the one with the best validation entity F1
(the conlleval measure, :mod:`llmtool.tasks.tag_scores`).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from llmtool.errors import InputError
from llmtool.settings import FinetuneSettings
from llmtool.training.data import TrainingData, arrow_rows, hold_out, quiet_datasets
from llmtool.training.recipes.base import LabelledHead
from llmtool.training.tag_data import (
    TagLayout,
    check_options,
    check_scheme,
    label_order,
    raw_sentences,
    sentences,
    tag_layout,
)

IGNORED = -100  # the label of a position left out of the loss (PyTorch's cross-entropy ignore_index)


class Tag(LabelledHead):
    name = "tag"
    default_model = "bert-base-cased"
    peft_task_type = "TOKEN_CLS"
    best_metric = "loss"  # without data; best_metric_for picks entity F1 once there are labels to score
    limit_flag = "--max-length"
    limit_key = "max_length"

    def auto_class(self) -> Any:
        import transformers

        return transformers.AutoModelForTokenClassification

    def asked_limit(self, settings: FinetuneSettings) -> int | None:
        return settings.max_length

    # ------------------------------------------------------------------ data

    def prepare_data(self, train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
        check_options(settings.text_column, settings.label_column)
        layout = tag_layout(train_path, settings.encoding)
        valid_layout = tag_layout(settings.valid, settings.encoding) if settings.valid else None
        layout = replace(layout, scheme=check_scheme(layout))
        if valid_layout is not None:
            valid_layout = replace(valid_layout, scheme=check_scheme(valid_layout))
        warnings: list[str] = []
        for checked in (layout, valid_layout):
            if checked is not None and checked.format == "spans":  # off-boundary spans, named (cheap: a pass)
                for _ in raw_sentences(checked, warnings):
                    pass
        quiet_datasets()
        rows = _load(layout, cache_dir)
        data = TrainingData("tag", rows, None, layout, valid_source="none", warnings=warnings)  # type: ignore[arg-type]
        valid = _load(valid_layout, cache_dir) if valid_layout is not None else None
        hold_out(data, valid, valid_layout.path if valid_layout else "", settings.valid_split, settings.seed)
        train_counts = _tag_counts(data.train)
        data.labels = label_order(set(train_counts))
        data.train_counts = dict(sorted(train_counts.items()))
        if data.valid is not None:
            where = valid_layout.path if valid_layout is not None else layout.path
            _check_known(data.valid, set(data.labels), where)
            data.valid_counts = dict(sorted(_tag_counts(data.valid).items()))
        return data

    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        raise NotImplementedError("tag examples need the label names (see examples)")

    def examples(self, data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: Any) -> Any:
        assert data.labels is not None
        encode = TagEncoder(tokenizer, limit, data.label2id, settings.label_all_subwords)

        def made(dataset: Any) -> Any:
            return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=None)

        valid = made(data.valid) if data.valid is not None else None
        return made(data.train), valid, []

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        return list(tokenizer(batch["text"], add_special_tokens=True)["input_ids"])

    def report_columns(self, data: TrainingData) -> dict[str, Any]:
        return {"format": data.layout.describe()}

    # ------------------------------------------------------------------ metrics and the trainer

    def best_metric_for(self, data: TrainingData) -> str:
        return "f1"

    def trainer_factory(self, settings: FinetuneSettings, data: TrainingData, limit: int) -> Callable[..., Any]:
        metrics = EntityMetrics(list(data.labels or []))

        def make_trainer(**kwargs: Any) -> Any:
            from transformers import Trainer

            kwargs["compute_metrics"] = metrics
            return Trainer(**kwargs, preprocess_logits_for_metrics=best_labels)

        return make_trainer


def _load(layout: TagLayout, cache_dir: str) -> Any:
    from datasets import Features, Sequence, Value

    features = Features(
        {
            "text": Value("string"),
            "starts": Sequence(Value("int32")),
            "ends": Sequence(Value("int32")),
            "tags": Sequence(Value("string")),
            "line": Value("int64"),
        }
    )
    return arrow_rows(_generate, features, layout, cache_dir)


def _generate(layout_json: str) -> Iterator[dict[str, Any]]:
    """The generator handed to ``Dataset.from_generator``; a module-level function so it pickles."""
    layout = TagLayout(**json.loads(layout_json))
    yield from sentences(layout, layout.scheme)


def _tag_counts(dataset: Any) -> Counter[str]:
    counts: Counter[str] = Counter()
    for batch in dataset.select_columns(["tags"]).iter(batch_size=10_000):
        for tags in batch["tags"]:
            counts.update(tags)
    return counts


def _check_known(dataset: Any, known: set[str], path: str) -> None:
    for batch in dataset.select_columns(["tags", "line"]).iter(batch_size=10_000):
        for tags, line in zip(batch["tags"], batch["line"], strict=True):
            for tag in tags:
                if tag not in known:
                    raise InputError(f"tag {tag!r} does not occur in the training data", source=path, line=line)


class TagEncoder:
    """Token ids of each sentence (truncated to ``limit``) and a label per token: the word's tag on its
    first subword, -100 (or with ``all_subwords`` the tag, ``B-`` made ``I-``) on the others, -100 on
    special tokens."""

    def __init__(self, tokenizer: Any, limit: int, label2id: dict[str, int], all_subwords: bool) -> None:
        self.tokenizer, self.limit, self.label2id, self.all_subwords = tokenizer, limit, label2id, all_subwords

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        encoded = self.tokenizer(batch["text"], truncation=True, max_length=self.limit, return_offsets_mapping=True)
        labels = []
        for offsets, starts, ends, tags in zip(
            encoded.pop("offset_mapping"), batch["starts"], batch["ends"], batch["tags"], strict=True
        ):
            labels.append(self.labels(offsets, starts, ends, tags))
        encoded["labels"] = labels
        return dict(encoded)

    def labels(self, offsets: list[tuple[int, int]], starts: list[int], ends: list[int], tags: list[str]) -> list[int]:
        out: list[int] = []
        previous = -1
        for start, end in offsets:
            word = bisect_right(starts, start) - 1
            if end <= start or word < 0 or start >= ends[word]:
                out.append(IGNORED)  # a special token (or a space the tokenizer kept)
                continue
            tag = tags[word]
            if word == previous:
                continuation = "I-" + tag[2:] if tag.startswith("B-") else tag
                out.append(self.label2id[continuation] if self.all_subwords else IGNORED)
            else:
                out.append(self.label2id[tag])
            previous = word
        return out


def best_labels(logits: Any, labels: Any) -> Any:
    """Each position's most likely label, so that evaluation keeps ids, not every logit."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(dim=-1)


class EntityMetrics:
    """Trainer's ``compute_metrics``: entity-level precision, recall and F1 (conlleval) and tag accuracy
    over the labelled positions of the validation examples."""

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        import numpy as np

        from llmtool.tasks.tag_scores import entity_scores

        predicted = np.asarray(eval_pred.predictions)
        gold = np.asarray(eval_pred.label_ids)
        gold_tags, predicted_tags = [], []
        for p_row, g_row in zip(predicted, gold, strict=True):
            keep = g_row != IGNORED
            gold_tags.append([self.labels[int(i)] for i in g_row[keep]])
            predicted_tags.append([self.labels[int(i)] for i in p_row[keep]])
        scores = entity_scores(gold_tags, predicted_tags)
        return {k: float(scores[k]) for k in ("precision", "recall", "f1", "accuracy")}
