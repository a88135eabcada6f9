"""What a fine-tuning objective is: the :class:`Recipe` interface that ``finetune`` runs.

``finetune`` (:mod:`llmtool.training.finetune`) does what every objective shares: check the data,
load the model, tokenize, plan, train (:mod:`llmtool.training.trainer`), record. Everything that
differs by objective is asked of its recipe: the model class, the data and how rows become
examples, the collator, the metrics and the one that picks the best checkpoint, PEFT's task type,
and how ``--dry-run`` counts tokens. One module per objective implements it
(:mod:`~llmtool.training.recipes.classify`, ``clm``, ``mlm``); the registry
(:mod:`llmtool.training.recipes`) maps the ``--task`` names to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from llmtool.settings import FinetuneSettings, ModelOptions
from llmtool.training.data import ColumnSpec, TrainingData, prepare
from llmtool.training.lm_examples import fingerprint, num_proc

Metrics = Callable[[dict[str, float]], dict[str, float]]  # evaluated metrics -> metrics derived from them


class Recipe(ABC):
    """One fine-tuning objective (the ``--task`` of ``finetune``). Recipes hold no state: one instance each."""

    name: ClassVar[str]  # the --task value
    default_model: ClassVar[str]  # the model fine-tuned when --model is not given
    peft_task_type: ClassVar[str | None]  # PEFT's TaskType for --lora (SEQ_CLS saves the new head in full)
    best_metric: ClassVar[str]  # the validation metric that picks the best checkpoint (unless --best-metric)
    limit_flag: ClassVar[str]  # the flag that sets the tokens per example: --max-length or --block-size
    limit_key: ClassVar[str]  # its name in llmtool_settings.json and the --dry-run report

    # ------------------------------------------------------------------ the model

    @abstractmethod
    def auto_class(self) -> Any:
        """The ``transformers.AutoModelFor*`` class the model is loaded (or, for --dry-run, built) with."""

    def model_kwargs(self, data: TrainingData) -> dict[str, Any]:
        """Extra ``from_pretrained`` arguments the data decides (classify: the label names)."""
        return {}

    def model_from_config(self, config: Any, data: TrainingData) -> Any:
        """The model as training would build it, from its config (on the meta device, for --dry-run)."""
        return self.auto_class().from_config(config)

    def load_model(self, ref: Any, **kwargs: Any) -> Any:
        """The model to fine-tune, from its folder or hub id (``ref``: a :class:`llmtool.models.ModelRef`)."""
        from llmtool.models import load_model

        return load_model(self.auto_class(), ref, **kwargs)

    def check_tokenizer(self, tokenizer: Any, model_name: str) -> None:
        """Refuse a tokenizer the objective cannot use (mlm: one without a mask token)."""
        return None

    # ------------------------------------------------------------------ tokens per example

    @abstractmethod
    def asked_limit(self, settings: FinetuneSettings) -> int | None:
        """The tokens per example asked for (the value of ``limit_flag``), None when not given."""

    def model_limit(self, tokenizer: Any, model: Any) -> int:
        """The most tokens per example the model takes (its position table, its tokenizer's limit)."""
        from llmtool.models import max_input_length

        return max_input_length(tokenizer, model)

    def default_limit(self, model_limit: int) -> int:
        """The tokens per example when not asked for: the model's limit."""
        return model_limit

    # ------------------------------------------------------------------ data and examples

    def prepare_data(self, train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
        """Checked, split training data (:func:`llmtool.training.data.prepare`)."""
        return prepare(
            train_path,
            self.name,  # type: ignore[arg-type]
            ColumnSpec(settings.text_column, settings.text_pair_column, settings.label_column),
            cache_dir=cache_dir,
            valid_path=settings.valid,
            valid_split=settings.valid_split,
            seed=settings.seed,
            encoding=settings.encoding,
        )

    def plan_rules(self, rules: Any, examples: int) -> Any:
        """The plan's rules (:class:`llmtool.training.plan.Rules`) for this objective: the shared ones by default."""
        return rules

    def settings_for(self, settings: FinetuneSettings, data: TrainingData) -> FinetuneSettings:
        """The settings as the data implies them (clm conversations: one example each); both the training run
        and --dry-run plan with these."""
        return settings

    def one_example_per_row(self, settings: FinetuneSettings) -> bool:
        """Whether each row makes one example (else rows are packed into blocks of ``limit`` tokens)."""
        return True

    def count_examples(self, train: Any, tokenizer: Any, limit: int, settings: FinetuneSettings) -> int | None:
        """For --dry-run: the training examples ``train``'s rows make, where that is neither one per row nor
        packed blocks (qa: windows); None otherwise."""
        return None

    def examples(
        self, data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions
    ) -> tuple[Any, Any | None, list[str]]:
        """Training and validation examples, and warnings about what making them did to the data."""
        train = self.tokenize(data.train, tokenizer, settings, limit, opts, "train")
        valid = self.tokenize(data.valid, tokenizer, settings, limit, opts, "valid") if data.valid is not None else None
        return train, valid, []

    def tokenize(
        self, dataset: Any, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions, split: str
    ) -> Any:
        """The examples of one split: rows encoded (in several processes for big data), then finished.

        Finishing (packing) runs afterwards in one process, in fixed batches of rows, so that the
        examples do not depend on how many processes tokenized.
        """
        key = [dataset._fingerprint, opts.model, opts.revision, self.name, limit, settings.line_by_line, split, 2]
        encoded = dataset.map(
            self.encoder(tokenizer, limit, settings, dataset.column_names),
            batched=True,
            remove_columns=dataset.column_names,
            num_proc=num_proc(settings.num_proc, len(dataset)),
            new_fingerprint=fingerprint(key),
            desc=None,
        )
        return self.finish_examples(encoded, tokenizer, settings, limit, key, split)

    @abstractmethod
    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        """The batched ``datasets.map`` function that turns rows (with ``columns``) into token ids."""

    def finish_examples(
        self, examples: Any, tokenizer: Any, settings: FinetuneSettings, limit: int, key: list[Any], split: str
    ) -> Any:
        """The encoded rows made into the examples of ``split`` (packing, masking). ``key``: their cache key."""
        return examples

    @abstractmethod
    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        """What makes a batch of examples (padding, and for mlm the masking)."""

    @abstractmethod
    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        """Token ids per row, untruncated, for --dry-run's counts."""

    def report_columns(self, data: TrainingData) -> dict[str, Any]:
        """The columns read, as the --dry-run report names them."""
        layout = data.layout
        return {"text": layout.text or None, "text_pair": layout.text_pair, "label": layout.label}

    # ------------------------------------------------------------------ metrics and the trainer

    def best_metric_for(self, data: TrainingData) -> str:
        """The metric that picks the best checkpoint for this data (unless --best-metric names one)."""
        return self.best_metric

    def trainer_factory(self, settings: FinetuneSettings, data: TrainingData, limit: int) -> Callable[..., Any] | None:
        """What builds the Trainer from ``transformers.Trainer``'s arguments; None for ``transformers.Trainer``
        itself (embed: sentence-transformers' trainer, with its loss and evaluator)."""
        return None

    def compute_metrics(self) -> Callable[[Any], dict[str, float]] | None:
        """Trainer's ``compute_metrics`` (from the evaluation's predictions), None for the loss alone."""
        return None

    def derived_metrics(self) -> Metrics | None:
        """Metrics computed from the evaluated ones (perplexity from the loss), None for none."""
        return None


class LabelledHead(Recipe):
    """A recipe whose head predicts the data's labels (classify: per text, tag: per token): the label names
    go into the config (``id2label``), and a head trained for other labels is replaced."""

    def model_kwargs(self, data: TrainingData) -> dict[str, Any]:
        assert data.labels is not None
        return {
            "num_labels": len(data.labels),
            "id2label": dict(enumerate(data.labels)),
            "label2id": data.label2id,
            "ignore_mismatched_sizes": True,
        }

    def model_from_config(self, config: Any, data: TrainingData) -> Any:
        if data.labels is not None:
            config.num_labels = len(data.labels)
        return super().model_from_config(config, data)
