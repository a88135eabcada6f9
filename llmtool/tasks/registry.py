"""Every command, once: its CLI module, Python API name, engine task keys, default model, settings,
docs page, and the kinds of model it runs.

What is derived from here rather than written again: the CLI's command list and order
(:mod:`llmtool.cli`), the lazy Python API (:mod:`llmtool`), each command's ``LLMTOOL_<COMMAND>_MODEL``
variable, which engine kind (encoder or decoder) runs an engine task key, the refusal of a model of
the wrong kind (:func:`refusal`, before anything loads), and the tests' lists of commands.

A new task (say ``llmtool embed``) is one entry here, a task module, a CLI module, its settings
class, tests and a docs page. This module imports nothing heavy (``import llmtool`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmtool.kinds import (
    CAUSAL_LM,
    ENCODER,
    ENCODER_DECODER,
    MASKED_LM,
    NEXT_SENTENCE,
    NEXT_SENTENCE_FAMILIES,
    QUESTION_ANSWERING,
    SENTENCE_ENCODER,
    SEQUENCE_CLASSIFIER,
    TOKEN_CLASSIFIER,
    ModelKind,
)

Group = Literal["inference", "training", "tool"]
EngineKind = Literal["encoder", "decoder", "seq2seq"]

# The default refusal, e.g. "facts-bert is a masked LM (BertForMaskedLM); generate needs a causal LM
# (GPT-2, Llama, ...). Did you mean `llmtool fill-mask`?"
REFUSAL = "{name} is {kind} ({arch}); {command} needs {needs}{hint}"
# The refusal when the model's family can carry the head the command needs and ``remedy`` says how, e.g.
# "bert (BertForMaskedLM) has no trained next-sentence head; pre-train one with `llmtool pretrain --objective
# mlm --nsp`. Did you mean `llmtool fill-mask`?" (the class says what the model is: the line stays short).
UNTRAINED = "{name} ({arch}) has no trained {head}; {remedy}{hint}"


@dataclass(frozen=True)
class Command:
    """One command of the CLI (and, for tasks, of the Python API)."""

    name: str  # as typed: llmtool NAME
    cli: str  # "module:attribute" of its Typer command function (or Typer group, for command groups)
    group: Group = "inference"
    api: str | None = None  # the Python API name: llmtool.API (a function of ``module``)
    module: str | None = None  # the task module that holds ``api``
    encoder: tuple[str, ...] = ()  # engine task keys run by an encoder engine (llmtool.engines.choice)
    decoder: tuple[str, ...] = ()  # engine task keys run by a decoder engine
    seq2seq: tuple[str, ...] = ()  # engine task keys run by an encoder-decoder engine
    default_model: str | None = None  # --model's default (None: --model is required, or no model)
    settings: tuple[str, ...] = ()  # the classes of llmtool.settings its flags fill
    accepts: frozenset[str] | None = None  # the kinds of model it runs (llmtool.kinds); None: any, or no model
    needs: str = ""  # the accepted kinds in words, for the refusal
    head: str = ""  # the head it needs, for "has no trained HEAD"
    remedy: str = ""  # how to give a model of a family that can carry that head one
    refusal: str = REFUSAL  # the refusal's wording, a template (see :func:`refusal`)
    suggested: bool = True  # named in other commands' refusals ("Did you mean ...?") for the kinds it accepts
    jobs: bool = False  # takes the job flags (--output-dir, --shard, ...: llmtool.cli.job, docs/large-jobs.md)

    @property
    def docs(self) -> str:
        """The command's page, named after it."""
        return f"docs/commands/{self.name}.md"

    @property
    def model_envvars(self) -> list[str]:
        """The variables --model reads, first set wins: LLMTOOL_<COMMAND>_MODEL, then LLMTOOL_MODEL (the
        commands' default models differ: a BERT for fill-mask, a GPT-2 for generate)."""
        return [f"LLMTOOL_{self.name.upper().replace('-', '_')}_MODEL", "LLMTOOL_MODEL"]

    @property
    def engine_tasks(self) -> dict[str, EngineKind]:
        return {
            **dict.fromkeys(self.encoder, "encoder"),
            **dict.fromkeys(self.decoder, "decoder"),
            **dict.fromkeys(self.seq2seq, "seq2seq"),
        }


LANGUAGE_MODELS = frozenset({CAUSAL_LM, MASKED_LM})
# attention reads the self-attention of an encoder or a decoder; an encoder-decoder needs decoder inputs.
SELF_ATTENTION = frozenset({MASKED_LM, CAUSAL_LM, SEQUENCE_CLASSIFIER, NEXT_SENTENCE, TOKEN_CLASSIFIER})
SELF_ATTENTION |= {QUESTION_ANSWERING, ENCODER, SENTENCE_ENCODER}
# embed pools the hidden states of any of these (a causal LM's with --pooling lasttoken)
ENCODERS = SELF_ATTENTION

# evaluate measures each of these on held-out data (accuracy, entity F1, exact match, Spearman, perplexity)
EVALUATED = LANGUAGE_MODELS | {SEQUENCE_CLASSIFIER, TOKEN_CLASSIFIER, QUESTION_ANSWERING, SENTENCE_ENCODER, ENCODER}
EVALUATED |= {ENCODER_DECODER}  # BLEU, chrF, ROUGE

# In the order `llmtool --help` lists them (Typer lists command groups after the plain commands).
COMMANDS: tuple[Command, ...] = (
    Command(
        "fill-mask",
        "llmtool.cli.fill_mask:fill_mask_command",
        api="fill_mask",
        module="llmtool.tasks.fill_mask",
        encoder=("fill-mask",),
        default_model="bert-base-uncased",
        settings=("FillMaskOptions", "ModelOptions"),
        accepts=frozenset({MASKED_LM}),
        needs="a masked LM (BERT, RoBERTa, ...)",
        jobs=True,
    ),
    Command(
        "generate",
        "llmtool.cli.generate:generate_command",
        api="generate",
        module="llmtool.tasks.generate",
        decoder=("generate",),
        default_model="gpt2",
        settings=("GenerateOptions", "ModelOptions"),
        accepts=frozenset({CAUSAL_LM}),
        needs="a causal LM (GPT-2, Llama, ...)",
        jobs=True,
    ),
    Command(
        "translate",
        "llmtool.cli.translate:translate_command",
        api="translate",
        module="llmtool.tasks.translate",
        seq2seq=("translate",),
        default_model="Helsinki-NLP/opus-mt-en-fr",
        settings=("TranslateOptions", "ModelOptions"),
        accepts=frozenset({ENCODER_DECODER}),
        needs="an encoder-decoder (Marian, T5, ...)",
        jobs=True,
    ),
    Command(
        "summarize",
        "llmtool.cli.translate:summarize_command",
        api="summarize",
        module="llmtool.tasks.summarize",
        seq2seq=("summarize",),
        default_model="sshleifer/distilbart-cnn-12-6",
        settings=("SummarizeOptions", "ModelOptions"),
        accepts=frozenset({ENCODER_DECODER}),
        needs="an encoder-decoder (BART, T5, ...)",
        suggested=False,  # translate is the command to name
        jobs=True,
    ),
    Command(
        "classify",
        "llmtool.cli.classify:classify_command",
        api="classify",
        module="llmtool.tasks.classify",
        encoder=("classify",),
        settings=("ClassifyOptions", "ModelOptions"),
        accepts=frozenset({SEQUENCE_CLASSIFIER}),
        needs="a sequence classifier",
        head="sequence-classification head",
        remedy="train one with `llmtool finetune --task classify`",
        jobs=True,
    ),
    Command(
        "score",
        "llmtool.cli.score:score_command",
        api="score",
        module="llmtool.tasks.score",
        encoder=("score-mlm",),
        decoder=("score-clm",),
        seq2seq=("score-seq2seq",),
        default_model="gpt2",
        settings=("ScoreOptions", "ModelOptions"),
        accepts=LANGUAGE_MODELS | {ENCODER_DECODER},
        needs="a causal or masked LM",
        refusal="{name} ({arch}) is not a causal or masked language model",
        jobs=True,
    ),
    Command(
        "evaluate",
        "llmtool.cli.evaluate:evaluate_command",
        api="evaluate",
        module="llmtool.tasks.evaluate",
        settings=("EvaluateOptions", "ModelOptions"),
        accepts=EVALUATED,
        needs="a classifier, tagger, QA model, encoder-decoder, sentence encoder or language model",
        refusal="{name} ({arch}) is not a classifier, tagger, QA model, encoder-decoder, sentence encoder or "
        "language model{hint}",
        suggested=False,  # it needs held-out data: the commands that run a model come first to mind
    ),
    Command(
        "next-sentence",
        "llmtool.cli.next_sentence:next_sentence_command",
        api="next_sentence",
        module="llmtool.tasks.next_sentence",
        encoder=("next-sentence",),
        default_model="bert-base-uncased",
        settings=("NextSentenceOptions", "ModelOptions"),
        accepts=frozenset({NEXT_SENTENCE}),
        needs="a BERT-style model pre-trained with NSP",
        head="next-sentence head",
        remedy="pre-train one with `llmtool pretrain --objective mlm --nsp`",
        refusal="{name} ({arch}) has no next-sentence head (only BERT-style models pre-trained with NSP have "
        "one){hint}",
        jobs=True,
    ),
    Command(
        "qa",
        "llmtool.cli.qa:qa_command",
        api="qa",
        module="llmtool.tasks.qa",
        encoder=("qa",),
        default_model="distilbert-base-cased-distilled-squad",
        settings=("QAOptions", "ModelOptions"),
        accepts=frozenset({QUESTION_ANSWERING}),
        needs="a question-answering model (BertForQuestionAnswering, ...)",
        head="question-answering head",
        remedy="train one with `llmtool finetune --task qa`",
    ),
    Command(
        "tag",
        "llmtool.cli.tag:tag_command",
        api="tag",
        module="llmtool.tasks.tag",
        encoder=("tag",),
        settings=("TagOptions", "ModelOptions"),
        accepts=frozenset({TOKEN_CLASSIFIER}),
        needs="a token classifier (NER, part-of-speech tagger...)",
        head="token-classification head",
        remedy="train one with `llmtool finetune --task tag`",
        jobs=True,
    ),
    Command(
        "embed",
        "llmtool.cli.embed:embed_command",
        api="embed",
        module="llmtool.tasks.embed",
        encoder=("embed",),
        default_model="sentence-transformers/all-MiniLM-L6-v2",
        settings=("EmbedOptions", "ModelOptions"),
        accepts=ENCODERS,
        needs="an encoder or a decoder (a sentence-transformers model, BERT, ...)",
        jobs=True,
    ),
    Command(
        "similar",
        "llmtool.cli.embed:similar_command",
        api="similar",
        module="llmtool.tasks.similar",
        default_model="sentence-transformers/all-MiniLM-L6-v2",
        settings=("SimilarOptions", "EmbedOptions", "ModelOptions"),
        accepts=ENCODERS,
        needs="an encoder or a decoder (a sentence-transformers model, BERT, ...)",
        suggested=False,  # embed is the command to name
    ),
    Command(
        "attention",
        "llmtool.cli.attention:attention_command",
        api="attention",
        module="llmtool.tasks.attention",
        default_model="bert-base-uncased",
        settings=("AttentionOptions", "ModelOptions"),
        accepts=SELF_ATTENTION,
        needs="an encoder or a decoder (BERT, GPT-2, ...)",
        suggested=False,  # it runs nearly any model: never the answer to "which command fits?"
    ),
    Command(
        "finetune",
        "llmtool.cli.training:finetune_command",
        group="training",
        settings=("FinetuneSettings", "ModelOptions"),
    ),
    Command("merge", "llmtool.cli.training:merge_command", group="training"),
    Command("pretrain", "llmtool.cli.training:pretrain_command", group="training", settings=("PretrainSettings",)),
    Command("version", "llmtool.cli.about:version_command", group="tool"),
    Command("env", "llmtool.cli.about:env_command", group="tool"),
    Command("cache", "llmtool.cli.cache:cache_app", group="tool"),
    Command("corpus", "llmtool.cli.training:corpus_app", group="training"),
    Command("job", "llmtool.cli.job:job_app", group="tool"),
)

BY_NAME: dict[str, Command] = {c.name: c for c in COMMANDS}


def command(name: str) -> Command:
    """The entry of command ``name`` (a KeyError names an unknown one)."""
    return BY_NAME[name]


def commands(group: Group | None = None) -> list[str]:
    """The command names, in --help order; only those of ``group`` when given."""
    return [c.name for c in COMMANDS if group is None or c.group == group]


def python_api() -> dict[str, tuple[str, str]]:
    """``llmtool.NAME`` -> (task module, function name), for the lazy Python API."""
    return {c.api: (c.module, c.api) for c in COMMANDS if c.api is not None and c.module is not None}


def engine_kind(task_key: str) -> EngineKind:
    """Which engine runs an engine task key (``fill-mask``, ``score-clm``, ...): ``encoder``, ``decoder`` or
    ``seq2seq``."""
    for c in COMMANDS:
        if task_key in c.engine_tasks:
            return c.engine_tasks[task_key]
    raise KeyError(f"no command has the engine task {task_key!r}")


def engine_tasks(kind: EngineKind) -> tuple[str, ...]:
    """Every engine task key of that engine kind, in command order."""
    return tuple(key for c in COMMANDS for key, k in c.engine_tasks.items() if k == kind)


# --------------------------------------------------------------------------- models of the wrong kind


def fitting(kinds: frozenset[str], other_than: str = "") -> Command | None:
    """The first command (in --help order) that runs a model of one of ``kinds``, for "Did you mean ...?";
    one made for such models (tag for a token classifier) before one that runs any encoder (embed)."""
    fits = [c for c in COMMANDS if c.name != other_than and c.suggested and c.accepts is not None and kinds & c.accepts]
    specific = [c for c in fits if c.accepts is not None and not c.accepts >= ENCODERS]
    chosen = specific or fits
    return chosen[0] if chosen else None


def can_carry(kind: str, model_type: str) -> bool:
    """Whether a model of ``model_type`` can have a head of ``kind`` once trained (every family can be a
    sequence classifier; only BERT's families have a next-sentence head)."""
    return kind != NEXT_SENTENCE or model_type in NEXT_SENTENCE_FAMILIES


def refusal(entry: Command, name: str, model: ModelKind) -> str | None:
    """Why ``entry`` cannot run ``model`` (called ``name``), in one line; None when it can, or when the
    model's kind is unknown (its config does not say: the command runs as it would without the check)."""
    if entry.accepts is None or not model.known or model.kinds & entry.accepts:
        return None
    fits = fitting(model.kinds, entry.name)
    values = {
        "name": name,
        "arch": model.architecture or f"{model.model_type or 'unknown'} model",
        "kind": model.describe(),
        "command": entry.name,
        "needs": entry.needs,
        "head": entry.head,
        "remedy": entry.remedy,
        "hint": f". Did you mean `llmtool {fits.name}`?" if fits is not None else "",
    }
    (needed,) = entry.accepts if len(entry.accepts) == 1 else (None,)
    template = entry.refusal
    if entry.remedy and needed is not None and can_carry(needed, model.model_type):
        template = UNTRAINED
    return template.format(**values)
