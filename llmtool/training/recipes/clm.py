"""``finetune --task clm``: continued causal-LM training (GPT-2 style) on a text column or a text file,
or on prompts and responses (``--prompt-column``/``--response-column``, or a ``messages`` JSONL file):
then each conversation is one example and the loss covers only the responses
(:mod:`llmtool.training.chat_data`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from llmtool.errors import UsageError
from llmtool.settings import FinetuneSettings, ModelOptions
from llmtool.training import chat_data
from llmtool.training.data import TrainingData
from llmtool.training.lm_examples import fingerprint, num_proc
from llmtool.training.recipes.language import LanguageModel, Masking


class CausalLM(LanguageModel):
    name = "clm"
    default_model = "gpt2"
    peft_task_type = "CAUSAL_LM"

    def auto_class(self) -> Any:
        import transformers

        return transformers.AutoModelForCausalLM

    def prepare_data(self, train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
        if settings.prompt_column is None and not chat_data.has_messages(
            train_path, settings.text_column, settings.encoding
        ):
            return super().prepare_data(train_path, settings, cache_dir)
        return chat_data.prepare(
            train_path,
            settings.prompt_column,
            settings.response_column,
            cache_dir=cache_dir,
            valid_path=settings.valid,
            valid_split=settings.valid_split,
            seed=settings.seed,
            encoding=settings.encoding,
        )

    def settings_for(self, settings: FinetuneSettings, data: TrainingData) -> FinetuneSettings:
        return dataclasses.replace(settings, line_by_line=True) if is_chat(data) else settings

    def examples(
        self, data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions
    ) -> tuple[Any, Any | None, list[str]]:
        if not is_chat(data):
            return super().examples(data, tokenizer, settings, limit, opts)
        warnings: list[str] = []
        train, dropped, cut = _conversations(data.train, tokenizer, settings, limit, opts, "train")
        warnings += chat_data.cut_warning("training", len(data.train), dropped, cut, limit)
        valid = None
        if data.valid is not None:
            valid, dropped, cut = _conversations(data.valid, tokenizer, settings, limit, opts, "valid")
            warnings += chat_data.cut_warning("validation", len(data.valid), dropped, cut, limit)
        if len(train) == 0:
            raise UsageError(f"no training conversation has a response token within --block-size {limit}; "
                             "raise --block-size")  # fmt: skip
        return train, valid, warnings

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        if is_chat(data):
            return chat_data.collator(tokenizer)
        from transformers import DataCollatorForLanguageModeling

        return DataCollatorForLanguageModeling(tokenizer, mlm=False)

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        if chat_data.MESSAGES in batch:
            return list(chat_data.ChatEncoder(tokenizer, None)(batch)["input_ids"])
        return super().untruncated_ids(tokenizer, batch)

    def report_columns(self, data: TrainingData) -> dict[str, Any]:
        layout = data.layout
        if not isinstance(layout, chat_data.ChatLayout):
            return super().report_columns(data)
        return {"prompt": layout.prompt, "response": layout.response} if layout.prompt else {"messages": "messages"}

    def pretraining_examples(self, examples: Any, tokenizer: Any, masking: Masking, key: list[Any], split: str) -> Any:
        return examples.map(with_labels, batched=True, new_fingerprint=fingerprint([*key, "labels"]), desc=None)

    def pretraining_collator(self, tokenizer: Any, masking: Masking) -> Any:
        """Padding only: input_ids with the pad token, labels with -100."""
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer)


def with_labels(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """clm labels: the inputs themselves (the model shifts them). Given explicitly so that padding, and
    only padding, is ignored: GPT-2 pads with its end-of-text token, which must still be learned."""
    return {"labels": [list(ids) for ids in batch["input_ids"]]}


def is_chat(data: TrainingData) -> bool:
    return isinstance(data.layout, chat_data.ChatLayout)


def _conversations(
    dataset: Any, tokenizer: Any, s: FinetuneSettings, limit: int, opts: ModelOptions, split: str
) -> tuple[Any, int, int]:
    """One example per conversation (never packed: the labels mark its response tokens).

    Returns the examples, how many conversations were left out (no response token within ``limit``)
    and how many of those kept were cut short.
    """
    key = [dataset._fingerprint, opts.model, opts.revision, "chat", limit, split, 2]
    encoded = dataset.map(
        chat_data.ChatEncoder(tokenizer, limit),
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc(s.num_proc, len(dataset)),
        new_fingerprint=fingerprint(key),
        desc=None,
    )
    out = encoded.filter(chat_data.has_answer, input_columns=["labels"],
                         new_fingerprint=fingerprint([*key, "answered"]), desc=None)  # fmt: skip
    cut = sum(1 for n in out["length"] if n > limit)
    return out.remove_columns("length"), len(encoded) - len(out), cut
