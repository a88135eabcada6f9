"""What the language-model objectives (``clm``, ``mlm``) share: blocks of tokens, perplexity, the loss.

Rows become token ids (:class:`~llmtool.training.lm_examples.LineEncoder`) and are packed into
blocks of ``--block-size`` tokens, or kept one example per line with ``--line-by-line``.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from llmtool.settings import FinetuneSettings
from llmtool.training.defaults import MAX_BLOCK
from llmtool.training.lm_examples import PACK_ROWS, BlockPacker, LineEncoder, fingerprint, token_ids
from llmtool.training.recipes.base import Metrics, Recipe
from llmtool.training.results import perplexity


@dataclass(frozen=True)
class Masking:
    """How ``pretrain`` masks (mlm): the share of tokens, the seed, whole words or single tokens."""

    probability: float
    seed: int
    whole_word: bool


class LanguageModel(Recipe):
    """Continued language-model training on a text column or a text file; also what ``pretrain`` needs
    of the objective to train a new model on a corpus."""

    best_metric = "loss"
    limit_flag = "--block-size"
    limit_key = "block_size"

    def asked_limit(self, settings: FinetuneSettings) -> int | None:
        return settings.block_size

    def default_limit(self, model_limit: int) -> int:
        return min(model_limit, MAX_BLOCK)

    def one_example_per_row(self, settings: FinetuneSettings) -> bool:
        return settings.line_by_line

    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        return LineEncoder(tokenizer, limit if settings.line_by_line else None, self.name)

    def finish_examples(
        self, examples: Any, tokenizer: Any, settings: FinetuneSettings, limit: int, key: list[Any], split: str
    ) -> Any:
        if settings.line_by_line:
            return examples
        packer = BlockPacker(limit)
        return examples.map(packer, batched=True, batch_size=PACK_ROWS, remove_columns=examples.column_names,
                            new_fingerprint=fingerprint([*key, "pack"]), desc=None)  # fmt: skip

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        return token_ids(tokenizer, batch["text"], self.name)

    def derived_metrics(self) -> Metrics:
        return perplexity

    # ------------------------------------------------------------------ pre-training (llmtool pretrain)

    def pretraining_examples(self, examples: Any, tokenizer: Any, masking: Masking, key: list[Any], split: str) -> Any:
        """``pretrain``'s token-id examples of ``split`` made ready to train on. ``key``: their cache key."""
        return examples

    @abstractmethod
    def pretraining_collator(self, tokenizer: Any, masking: Masking) -> Any:
        """What makes a batch of ``pretrain``'s examples."""
