"""Every command's settings: one typed dataclass per command, each default and help text stated once.

The CLI reads its defaults and ``--help`` texts from here (``help_of``, ``defaults``), and the
Python API takes the same dataclasses, so the two can never disagree. ``check()`` is the one place
a setting's value is validated. This module imports only the standard library: ``llmtool --help``
stays free of torch.
"""

from llmtool.settings.base import (
    DTYPES,
    ENGINES,
    OBJECTIVES,
    PRECISIONS,
    QUANTIZATIONS,
    TASKS,
    Engine,
    ModelOptions,
    at_least,
    defaults,
    env_default,
    finite,
    help_of,
    setting,
)
from llmtool.settings.inference import (
    EMBED_POOLINGS,
    GENERATION_DEFAULTS,
    AttentionOptions,
    ClassifyOptions,
    EmbedOptions,
    EvaluateOptions,
    FillMaskOptions,
    GenerateOptions,
    NextSentenceOptions,
    ScoreOptions,
    SimilarOptions,
)
from llmtool.settings.qa import QAOptions
from llmtool.settings.seq2seq import SEQ2SEQ_DEFAULTS, Seq2SeqOptions, SummarizeOptions, TranslateOptions
from llmtool.settings.tag import TAG_AGGREGATIONS, TagOptions
from llmtool.settings.training import (
    LORA_LR_FACTOR,
    MIN_FREQUENCY,
    MIN_VOCAB,
    SIZES,
    VOCAB_SIZE,
    FinetuneSettings,
    PretrainSettings,
    Size,
    TrainSettings,
    precision_flag,
)

__all__ = [
    "DTYPES",
    "EMBED_POOLINGS",
    "ENGINES",
    "GENERATION_DEFAULTS",
    "LORA_LR_FACTOR",
    "MIN_FREQUENCY",
    "MIN_VOCAB",
    "OBJECTIVES",
    "PRECISIONS",
    "QUANTIZATIONS",
    "SEQ2SEQ_DEFAULTS",
    "SIZES",
    "TAG_AGGREGATIONS",
    "TASKS",
    "VOCAB_SIZE",
    "AttentionOptions",
    "ClassifyOptions",
    "EmbedOptions",
    "Engine",
    "EvaluateOptions",
    "FillMaskOptions",
    "FinetuneSettings",
    "GenerateOptions",
    "ModelOptions",
    "NextSentenceOptions",
    "PretrainSettings",
    "QAOptions",
    "ScoreOptions",
    "Seq2SeqOptions",
    "SimilarOptions",
    "Size",
    "SummarizeOptions",
    "TagOptions",
    "TrainSettings",
    "TranslateOptions",
    "at_least",
    "defaults",
    "env_default",
    "finite",
    "help_of",
    "precision_flag",
    "setting",
]
