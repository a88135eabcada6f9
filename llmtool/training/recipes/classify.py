"""``finetune --task classify``: sequence classification (one text, or a pair) with string or integer labels.

The label names go into the model config (``id2label``), so predictions come back as the user's
names; the best checkpoint is the one with the best validation accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llmtool.settings import FinetuneSettings
from llmtool.training.data import TrainingData
from llmtool.training.recipes.base import LabelledHead


class Classify(LabelledHead):
    name = "classify"
    default_model = "bert-base-uncased"
    peft_task_type = "SEQ_CLS"
    best_metric = "accuracy"
    limit_flag = "--max-length"
    limit_key = "max_length"

    def auto_class(self) -> Any:
        import transformers

        return transformers.AutoModelForSequenceClassification

    def asked_limit(self, settings: FinetuneSettings) -> int | None:
        return settings.max_length

    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        return ClassifyEncoder(tokenizer, limit, "text_pair" in columns)

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        pair = batch.get("text_pair")
        return list(tokenizer(batch["text"], pair, add_special_tokens=True)["input_ids"])

    def compute_metrics(self) -> Callable[[Any], dict[str, float]]:
        return trainer_metrics


class ClassifyEncoder:
    """Token ids (truncated to ``limit``) of the text, or the pair, and the class id as ``labels``."""

    def __init__(self, tokenizer: Any, limit: int, pairs: bool) -> None:
        self.tokenizer, self.limit, self.pairs = tokenizer, limit, pairs

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        pair = batch["text_pair"] if self.pairs else None
        encoded = self.tokenizer(batch["text"], pair, truncation=True, max_length=self.limit)
        encoded["labels"] = batch["label"]
        return dict(encoded)


def trainer_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro-F1 of an evaluation (Trainer's ``compute_metrics``), as ``evaluate`` computes them."""
    import numpy as np

    from llmtool.metrics import classification_metrics, confusion

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    labels = np.asarray(eval_pred.label_ids).tolist()
    predicted = np.asarray(logits).argmax(-1).tolist()
    classes = int(np.asarray(logits).shape[-1])
    metrics = classification_metrics(confusion(labels, predicted, classes), [str(i) for i in range(classes)])
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}
