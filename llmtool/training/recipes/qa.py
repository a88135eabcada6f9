"""``finetune --task qa``: extractive question answering (a span head on an encoder), SQuAD-style.

The data is SQuAD's nested JSON (v1.1, or v2.0 with unanswerable questions), JSON Lines or a
CSV/TSV with ``context, question, answer_text, answer_start`` (:mod:`llmtool.training.qa_data`);
each question becomes one or more windows of ``--max-length`` tokens (default 384, as run_qa.py)
labelled with the answer's first and last token (CLS when the answer is not in the window). The
validation split is of questions (seeded); the best checkpoint is the one with the lowest
validation loss. ``llmtool evaluate`` gives exact match and F1 on held-out questions.
"""

from __future__ import annotations

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
    best_metric = "loss"
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
        from llmtool.training.data import file_kind, quiet_datasets, split_indices
        from llmtool.training.qa_data import rows_of

        read = read_squad(train_path, settings.encoding)
        valid_read = read_squad(settings.valid, settings.encoding) if settings.valid else None
        quiet_datasets()
        notes = warnings(read) + (warnings(valid_read) if valid_read else [])
        rows = Dataset.from_list(list(rows_of(read)))
        kind = "jsonl" if file_kind(train_path) == "lines" else file_kind(train_path)
        layout = QALayout(train_path, kind, "question", "context", "answer_text", settings.encoding)
        data = TrainingData("qa", rows, None, layout, valid_source="none", warnings=notes)  # type: ignore[arg-type]
        if valid_read is not None:
            data.valid = Dataset.from_list(list(rows_of(valid_read)))
            data.valid_source = str(settings.valid)
        elif settings.valid_split > 0:
            train, valid = split_indices(len(rows), settings.valid_split, settings.seed, source=train_path)
            data.train, data.valid = rows.select(train), rows.select(valid)
            data.valid_source = f"{settings.valid_split:.0%} of {train_path} (seeded)"
        return data

    def report_columns(self, data: TrainingData) -> dict[str, Any]:
        return {"question": "question", "context": "context", "answer": "answer_text, answer_start"}

    def examples(
        self, data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions
    ) -> tuple[Any, Any | None, list[str]]:
        from llmtool.training.qa_data import too_long

        notes = []
        for name, split in (("training", data.train), ("validation", data.valid)):
            if split is not None and (skipped := too_long(tokenizer, split["question"], limit)):
                notes.append(
                    f"{len(skipped)} {name} questions are too long for windows of {limit} tokens and are left out"
                )
        train, valid, _ = super().examples(data, tokenizer, settings, limit, opts)
        return train, valid, notes

    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        from llmtool.training.qa_data import WindowEncoder

        return WindowEncoder(tokenizer, limit)

    def count_examples(self, train: Any, tokenizer: Any, limit: int) -> int | None:
        """The windows training will make (a long context makes several), by the same encoder."""
        from llmtool.training.qa_data import WindowEncoder

        encode = WindowEncoder(tokenizer, limit)
        return sum(len(encode(train[start : start + 1000])["input_ids"]) for start in range(0, len(train), 1000))

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(tokenizer)

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        return list(tokenizer(batch["question"], batch["context"], add_special_tokens=True)["input_ids"])
