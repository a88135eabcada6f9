"""``finetune --task mlm``: continued masked-LM training (BERT style) on a text column or a text file.

Training batches are masked afresh each epoch (:class:`~llmtool.training.lm_examples.MlmCollator`);
validation examples are masked once, so that every evaluation scores the same task.
"""

from __future__ import annotations

from typing import Any

from llmtool.errors import ModelError
from llmtool.settings import FinetuneSettings
from llmtool.training.data import TrainingData
from llmtool.training.lm_examples import MlmCollator, mask_once
from llmtool.training.recipes.language import LanguageModel, Masking


class MaskedLM(LanguageModel):
    name = "mlm"
    default_model = "bert-base-uncased"
    peft_task_type = None  # PEFT has no masked-LM task type; the base class's head is the model's own

    def auto_class(self) -> Any:
        import transformers

        return transformers.AutoModelForMaskedLM

    def check_tokenizer(self, tokenizer: Any, model_name: str) -> None:
        if tokenizer.mask_token is None:
            raise ModelError(f"{model_name}: the tokenizer has no mask token; is it a masked language model?")

    def finish_examples(
        self, examples: Any, tokenizer: Any, settings: FinetuneSettings, limit: int, key: list[Any], split: str
    ) -> Any:
        examples = super().finish_examples(examples, tokenizer, settings, limit, key, split)
        if split == "valid":
            examples = mask_once(examples, tokenizer, settings.mlm_probability, settings.seed, settings.whole_word_mask)
        return examples

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        return MlmCollator(tokenizer, settings.mlm_probability, settings.seed, settings.whole_word_mask)

    def pretraining_examples(self, examples: Any, tokenizer: Any, masking: Masking, key: list[Any], split: str) -> Any:
        if split != "valid":
            return examples
        return mask_once(examples, tokenizer, masking.probability, masking.seed, masking.whole_word)

    def pretraining_collator(self, tokenizer: Any, masking: Masking) -> Any:
        """Random masking each time a batch is drawn (validation examples arrive masked)."""
        return MlmCollator(tokenizer, masking.probability, masking.seed, masking.whole_word)
