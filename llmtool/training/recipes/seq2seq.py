"""``finetune --task seq2seq``: an encoder-decoder (T5, BART, Marian, mBART, ...) fine-tuned on
(source, target) pairs: translation, summarization, any text-to-text task.

The pairs are a table or JSON Lines (``--source-column``/``--target-column``) or a headerless
TAB-separated text file (:mod:`llmtool.training.seq2seq_data`). Each pair is one example: the
source tokenized as the encoder's input, the target as the labels, so the loss covers the target
only (padding -100); ``--max-length`` truncates each side. The model is loaded with
``AutoModelForSeq2SeqLM``; LoRA uses PEFT's ``SEQ_2_SEQ_LM`` task. Validation loss picks the best
checkpoint; perplexity is reported with it. A task prefix (T5's ``translate English to German: ``)
belongs in the data's source text.
"""

from __future__ import annotations

from typing import Any

from llmtool.settings import FinetuneSettings
from llmtool.training import seq2seq_data
from llmtool.training.data import TrainingData
from llmtool.training.defaults import SEQ2SEQ_MAX_LENGTH
from llmtool.training.recipes.base import Metrics, Recipe
from llmtool.training.results import perplexity


class Seq2Seq(Recipe):
    name = "seq2seq"
    default_model = "google-t5/t5-small"
    peft_task_type = "SEQ_2_SEQ_LM"
    best_metric = "loss"
    limit_flag = "--max-length"
    limit_key = "max_length"

    def auto_class(self) -> Any:
        import transformers

        return transformers.AutoModelForSeq2SeqLM

    def load_model(self, ref: Any, **kwargs: Any) -> Any:
        model = super().load_model(ref, **kwargs)
        if getattr(model.config, "model_type", None) == "marian":
            seq2seq_data.keep_padding_row_zero(model)
        return model

    def asked_limit(self, settings: FinetuneSettings) -> int | None:
        return settings.max_length

    def default_limit(self, model_limit: int) -> int:
        return min(model_limit, SEQ2SEQ_MAX_LENGTH)

    def prepare_data(self, train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
        return seq2seq_data.prepare(
            train_path,
            settings.source_column,
            settings.target_column,
            cache_dir=cache_dir,
            valid_path=settings.valid,
            valid_split=settings.valid_split,
            seed=settings.seed,
            encoding=settings.encoding,
        )

    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        return seq2seq_data.PairEncoder(tokenizer, limit)

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        return seq2seq_data.collator(tokenizer)

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        return seq2seq_data.pair_lengths(tokenizer, batch)

    def report_columns(self, data: TrainingData) -> dict[str, Any]:
        return {"source": data.layout.text, "target": data.layout.text_pair}

    def derived_metrics(self) -> Metrics:
        return perplexity
