"""What kind of model a folder holds, read from its config.json alone: no torch, no transformers.

A checkpoint records the class that saved it (``architectures``: ``BertForMaskedLM``,
``GPT2LMHeadModel``, ...), and that class says which head it has. Each command accepts some kinds
(:mod:`llmtool.tasks.registry`), so a model of another kind is refused before anything loads,
instead of running with a randomly initialised head (Transformers' silent default) or failing
deep inside Transformers with a list of every class it knows.

The rule, per recorded class (first match; several classes: all their kinds):

- ``*ForSequenceClassification``, ``*ForTokenClassification``, ``*ForQuestionAnswering``,
  ``*ForNextSentencePrediction``, ``*ForMaskedLM``: that head;
- ``*ForPreTraining``: a masked LM, and a next-sentence head too in BERT's families (BERT's
  pre-training had both heads);
- an encoder-decoder config (``is_encoder_decoder``): an encoder-decoder model (T5, BART, Marian);
- ``*ForCausalLM``, ``*LMHeadModel``, ``*DoubleHeadsModel``: a causal LM;
- ``*Model`` (``BertModel``, a sentence-transformers folder's ``MPNetModel``): a base model, no task head
  (kind ``encoder``: what a sentence encoder is);
- anything else (vision, audio, multimodal): unknown.

A config that records no class (rare: hand-written configs) says nothing, unless it is an
encoder-decoder config or the folder is a sentence-transformers model; a LoRA adapter folder
adds its PEFT task type and its base model's kinds (the base keeps heads the adapter does not
name, e.g. the next-sentence head under a masked-LM adapter). Unknown means no refusal: the
command runs as it would without this check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MASKED_LM = "masked-lm"
CAUSAL_LM = "causal-lm"
SEQUENCE_CLASSIFIER = "sequence-classifier"
NEXT_SENTENCE = "next-sentence"
TOKEN_CLASSIFIER = "token-classifier"
QUESTION_ANSWERING = "question-answering"
ENCODER_DECODER = "encoder-decoder"
ENCODER = "encoder"
SENTENCE_ENCODER = "sentence-encoder"

# How a kind is named in messages.
NAMES: dict[str, str] = {
    MASKED_LM: "a masked LM",
    CAUSAL_LM: "a causal LM",
    SEQUENCE_CLASSIFIER: "a sequence classifier",
    NEXT_SENTENCE: "a next-sentence model",
    TOKEN_CLASSIFIER: "a token classifier",
    QUESTION_ANSWERING: "a question-answering model",
    ENCODER_DECODER: "an encoder-decoder",
    ENCODER: "a base model without a task head",
    SENTENCE_ENCODER: "a sentence encoder",
}

# Class-name endings and the kind they mean, tried in this order (a classifier's name also ends in Model).
HEADS: tuple[tuple[str, str], ...] = (
    ("ForSequenceClassification", SEQUENCE_CLASSIFIER),
    ("ForTokenClassification", TOKEN_CLASSIFIER),
    ("ForQuestionAnswering", QUESTION_ANSWERING),
    ("ForNextSentencePrediction", NEXT_SENTENCE),
    ("ForMaskedLM", MASKED_LM),
)
CAUSAL_ENDINGS = ("ForCausalLM", "LMHeadModel", "DoubleHeadsModel")

# Model types whose pre-training had a next-sentence head (Transformers' MODEL_FOR_NEXT_SENTENCE_
# PREDICTION_MAPPING_NAMES, copied: importing that module imports torch).
NEXT_SENTENCE_FAMILIES = frozenset({"bert", "ernie", "fnet", "megatron-bert", "mobilebert"})

# PEFT task types (adapter_config.json) and the kind of model they adapt.
PEFT_TASKS: dict[str, str] = {
    "SEQ_CLS": SEQUENCE_CLASSIFIER,
    "CAUSAL_LM": CAUSAL_LM,
    "TOKEN_CLS": TOKEN_CLASSIFIER,
    "QUESTION_ANS": QUESTION_ANSWERING,
    "SEQ_2_SEQ_LM": ENCODER_DECODER,
    "FEATURE_EXTRACTION": ENCODER,
}
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class ModelKind:
    """What a model folder holds: its kinds (empty: unknown), the class that saved it, its model type."""

    kinds: frozenset[str]
    architecture: str
    model_type: str

    @property
    def known(self) -> bool:
        return bool(self.kinds)

    def describe(self) -> str:
        """The kinds in words, e.g. "a masked LM", "a masked LM and a next-sentence model"."""
        names = [NAMES[k] for k in NAMES if k in self.kinds]
        return " and ".join(names)


def kinds_of_class(name: str, config: dict[str, Any]) -> frozenset[str]:
    """The kinds one recorded class name means (see the module's rule); empty when unknown."""
    for ending, kind in HEADS:
        if name.endswith(ending):
            return frozenset({kind})
    if name.endswith("ForPreTraining"):
        family = config.get("model_type")
        return frozenset({MASKED_LM, NEXT_SENTENCE} if family in NEXT_SENTENCE_FAMILIES else {MASKED_LM})
    if config.get("is_encoder_decoder"):
        return frozenset({ENCODER_DECODER})
    if name.endswith(CAUSAL_ENDINGS):
        return frozenset({CAUSAL_LM})
    if name.endswith("Model"):
        return frozenset({ENCODER})
    return frozenset()


def kinds_of_config(config: dict[str, Any]) -> frozenset[str]:
    """The kinds a config.json (as a dict) records; empty when it does not say."""
    recorded = config.get("architectures") or []
    kinds: frozenset[str] = frozenset()
    for name in recorded if isinstance(recorded, list) else []:
        kinds |= kinds_of_class(str(name), config)
    if not recorded and config.get("is_encoder_decoder"):
        kinds |= {ENCODER_DECODER}
    return kinds


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing, unreadable or not an object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def model_kind(folder: Path | None) -> ModelKind:
    """The kind of the model in ``folder`` (a model or LoRA adapter folder); unknown when not on disk."""
    if folder is None:
        return ModelKind(frozenset(), "", "")
    config = read_json(folder / "config.json") or {}
    kinds = kinds_of_config(config)
    if any((folder / name).is_file() for name in SENTENCE_TRANSFORMERS_FILES):
        # a sentence-transformers model (its pooling files beside the encoder): named so, not "a base model"
        kinds = (kinds - {ENCODER}) | {SENTENCE_ENCODER}
    adapter = read_json(folder / "adapter_config.json")
    if adapter is not None:
        kinds |= adapter_kinds(adapter)
    recorded = config.get("architectures") or []
    architecture = str(recorded[0]) if isinstance(recorded, list) and recorded else ""
    return ModelKind(kinds, architecture, str(config.get("model_type") or ""))


def adapter_kinds(adapter: dict[str, Any]) -> frozenset[str]:
    """What a LoRA adapter adds: its PEFT task type's kind, and its base model's kinds (when on disk)."""
    kinds = frozenset({PEFT_TASKS[adapter["task_type"]]}) if adapter.get("task_type") in PEFT_TASKS else frozenset()
    base = adapter.get("base_model_name_or_path")
    folder = base_folder(str(base), adapter.get("revision")) if base else None
    if folder is not None:
        kinds |= kinds_of_config(read_json(folder / "config.json") or {})
    return kinds


def base_folder(name: str, revision: str | None) -> Path | None:
    """The folder of an adapter's base model: a local folder, or its snapshot in the Hub cache (no network)."""
    local = Path(name).expanduser()
    if (local / "config.json").is_file():
        return local
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json", revision=revision)
    except Exception:  # not a valid Hub id, or no cache: the base's kinds stay unknown
        return None
    return Path(cached).parent if isinstance(cached, str) else None
