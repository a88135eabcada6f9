"""``finetune --task qa``: extractive question answering (a span head on an encoder), SQuAD-style.

The data is SQuAD's nested JSON (v1.1, or v2.0 with unanswerable questions), JSON Lines or a
CSV/TSV with ``context, question, answer_text, answer_start`` (:mod:`llmtool.training.qa_data`);
each question becomes one or more windows of ``--max-length`` tokens (default 384, as run_qa.py)
labelled with the answer's first and last token (CLS when the answer is not in the window). The
validation split is of questions (seeded); the best checkpoint is the one with the highest
``span_f1`` (:class:`SpanMetrics`: the token overlap of each validation window's best span with its
labelled one). ``llmtool evaluate`` gives SQuAD's exact match and F1 on held-out questions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmtool.settings import FinetuneSettings, ModelOptions
from llmtool.training.data import Layout, TrainingData
from llmtool.training.recipes.base import Recipe


@dataclass(frozen=True)
class QALayout(Layout):
    """A SQuAD file: its questions, contexts and answers (the fields are fixed by the format)."""

    def describe(self) -> str:
        form = "SQuAD JSON" if self.path.lower().endswith(".json") else self.kind.upper()
        return f"{form}: question, context, answer (text, start)"


class QuestionAnswering(Recipe):
    name = "qa"
    default_model = "bert-base-uncased"
    peft_task_type = "QUESTION_ANS"  # PEFT saves the new span head (qa_outputs) in full
    best_metric = "loss"  # without validation data; best_metric_for picks span_f1 (SpanMetrics)
    limit_flag = "--max-length"
    limit_key = "max_length"

    def auto_class(self) -> Any:
        import transformers

        return transformers.AutoModelForQuestionAnswering

    def asked_limit(self, settings: FinetuneSettings) -> int | None:
        return settings.max_length

    def default_limit(self, model_limit: int) -> int:
        from llmtool.training.qa_data import DEFAULT_LIMIT

        return min(DEFAULT_LIMIT, model_limit)

    def check_tokenizer(self, tokenizer: Any, model_name: str) -> None:
        from llmtool.errors import ModelError

        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"{model_name}: --task qa needs a fast (tokenizers) tokenizer, for its offsets")

    # ------------------------------------------------------------------ data

    def prepare_data(self, train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
        from datasets import Dataset

        from llmtool.tasks.evaluate_qa import read_squad, warnings
        from llmtool.training.data import file_kind, hold_out, quiet_datasets
        from llmtool.training.qa_data import rows_of

        read = read_squad(train_path, settings.encoding)
        valid_read = read_squad(settings.valid, settings.encoding) if settings.valid else None
        quiet_datasets()
        notes = warnings(read) + (warnings(valid_read) if valid_read else [])
        rows = Dataset.from_list(list(rows_of(read)))
        kind = "jsonl" if file_kind(train_path) == "lines" else file_kind(train_path)
        layout = QALayout(train_path, kind, "question", "context", "answer_text", settings.encoding)
        data = TrainingData("qa", rows, None, layout, valid_source="none", warnings=notes)  # type: ignore[arg-type]
        valid = Dataset.from_list(list(rows_of(valid_read))) if valid_read is not None else None
        hold_out(data, valid, str(settings.valid), settings.valid_split, settings.seed)
        return data

    def report_columns(self, data: TrainingData) -> dict[str, Any]:
        return {"question": "question", "context": "context", "answer": "answer_text, answer_start"}

    def examples(
        self, data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions
    ) -> tuple[Any, Any | None, list[str]]:
        from llmtool.training.qa_data import too_long

        notes = []
        for name, split in (("training", data.train), ("validation", data.valid)):
            if split is not None and (skipped := too_long(tokenizer, split["question"], limit, settings.doc_stride)):
                notes.append(
                    f"{len(skipped)} {name} questions are too long for windows of {limit} tokens and are left out"
                )
        train, valid, _ = super().examples(data, tokenizer, settings, limit, opts)
        return train, valid, notes

    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        from llmtool.training.qa_data import WindowEncoder

        return WindowEncoder(tokenizer, limit, settings.doc_stride)

    def best_metric_for(self, data: TrainingData) -> str:
        return "span_f1"

    def compute_metrics(self) -> Callable[[Any], dict[str, float]]:
        return SpanMetrics()

    def count_examples(self, train: Any, tokenizer: Any, limit: int, settings: FinetuneSettings) -> int | None:
        """The windows training will make (a long context makes several), by the same encoder."""
        from llmtool.training.qa_data import WindowEncoder

        encode = WindowEncoder(tokenizer, limit, settings.doc_stride)
        return sum(len(encode(train[start : start + 1000])["input_ids"]) for start in range(0, len(train), 1000))

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        return list(tokenizer(batch["question"], batch["context"], add_special_tokens=True)["input_ids"])


class SpanMetrics:
    """Trainer's ``compute_metrics`` for the span head, per validation window: the best span (start <=
    end, at most ``longest`` tokens; or none, the CLS token, when that scores higher) against the
    labelled one. ``span_exact``: the share of windows whose span is exactly the label's; ``span_f1``:
    the mean token overlap F1 (both none: 1; one none: 0). Windows, not questions, and tokens, not
    SQuAD's normalised words: a measure to pick checkpoints by, cheap enough for every evaluation;
    ``llmtool evaluate`` gives the official one."""

    def __init__(self, longest: int = 30, candidates: int = 20) -> None:
        self.longest, self.candidates = longest, candidates

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        import numpy as np

        start_logits, end_logits = (np.asarray(x, dtype=np.float32) for x in eval_pred.predictions[:2])
        gold_start, gold_end = (np.asarray(x).reshape(-1) for x in eval_pred.label_ids[:2])
        exact, f1 = [], []
        for w in range(len(gold_start)):
            s, e = self.best_span(start_logits[w], end_logits[w])
            gs, ge = int(gold_start[w]), int(gold_end[w])
            exact.append(float((s, e) == (gs, ge)))
            if (s, e) == (0, 0) or (gs, ge) == (0, 0):
                f1.append(float((s, e) == (gs, ge)))
                continue
            overlap = max(0, min(e, ge) - max(s, gs) + 1)
            f1.append(0.0 if overlap == 0 else 2 * overlap / ((e - s + 1) + (ge - gs + 1)))
        count = max(1, len(f1))
        return {"span_exact": sum(exact) / count, "span_f1": sum(f1) / count}

    def best_span(self, start: Any, end: Any) -> tuple[int, int]:
        """(start, end) token positions of the best span, (0, 0) for none. Padding (Trainer pads the logits
        of shorter batches with -100) never wins."""
        import numpy as np

        k = min(self.candidates, len(start) - 1)
        starts = np.argsort(start[1:])[::-1][:k] + 1
        ends = np.argsort(end[1:])[::-1][:k] + 1
        best, where = float(start[0] + end[0]), (0, 0)
        for i in starts:
            for j in ends:
                if i <= j < i + self.longest and start[i] > -100 and end[j] > -100:
                    score = float(start[i] + end[j])
                    if score > best:
                        best, where = score, (int(i), int(j))
        return where
