"""A model of the wrong kind for a command: one clear line and exit 3 before anything loads, never a
silent wrong answer (a BERT "generating" random words, a GPT-2 "filling masks" with a random head).

Every inference command meets every kind of tiny model the tests build; each either answers (exit 0)
or refuses in one short line that names what the model is and, when one exists, a command that fits.
Runs in-process (conftest.invoke): the refusals never import torch, the answers load tiny models.
Also: nan and inf are refused for every float option of every command.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import tiny_models
from conftest import invoke


@dataclass(frozen=True)
class Kind:
    """A tiny model of one kind: how to build it, the class its config.json records, the commands that
    run it, and the command a refusal suggests (None: no command fits a model of this kind yet)."""

    build: Callable[[Path], Path]
    architecture: str
    runs: frozenset[str]
    suggests: str | None


def with_head(base: Callable[[Path], Path], head: str, labels: tuple[str, ...] | None = None) -> Callable[[Path], Path]:
    return lambda folder: tiny_models.build_with_head(folder, base, head, labels)


def llama(folder: Path) -> Path:
    from test_ct2 import build_llama

    return build_llama(folder)


def lora_classifier(folder: Path) -> Path:
    """A LoRA adapter folder (adapter_config.json + the base's config), as `finetune --lora` writes it."""
    base = tiny_models.build_bert(folder.parent / f"{folder.name}-base")
    data = folder.parent / f"{folder.name}.csv"
    rows = tiny_models.sentiment_examples()
    data.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows), encoding="utf-8")
    args = ["finetune", str(data), "-m", str(base), "--lora", "--max-steps", "1", "--valid-split", "0"]
    trained = invoke([*args, "-o", str(folder), "-q"])
    assert trained.returncode == 0, trained.stderr
    return folder


LABELS = ("negative", "positive")
LM = frozenset({"score", "evaluate", "attention", "embed", "similar"})
MASKED = LM | {"fill-mask"}
CAUSAL = LM | {"generate"}
CLASSIFIER = frozenset({"classify", "evaluate", "attention", "embed", "similar"})
HEAD_ONLY = frozenset({"attention", "embed", "similar"})  # embed pools any encoder's states

KINDS: dict[str, Kind] = {
    "bert": Kind(tiny_models.build_bert, "BertForMaskedLM", MASKED, "fill-mask"),
    "roberta": Kind(tiny_models.build_roberta, "RobertaForMaskedLM", MASKED, "fill-mask"),
    "gpt2": Kind(tiny_models.build_gpt2, "GPT2LMHeadModel", CAUSAL, "generate"),
    "gpt2-chat": Kind(lambda f: tiny_models.build_gpt2(f, chat_template=True), "GPT2LMHeadModel", CAUSAL, "generate"),
    "llama": Kind(llama, "LlamaForCausalLM", CAUSAL, "generate"),
    "bert-pretraining": Kind(
        lambda f: tiny_models.build_bert_pretraining(f, steps=0),
        "BertForPreTraining",
        MASKED | {"next-sentence"},
        "fill-mask",
    ),
    "bert-nsp": Kind(
        with_head(tiny_models.build_bert, "BertForNextSentencePrediction"),
        "BertForNextSentencePrediction",
        frozenset({"next-sentence", "attention", "embed", "similar"}),
        "next-sentence",
    ),
    "bert-classifier": Kind(
        lambda f: tiny_models.build_bert_classifier(f, steps=0), "BertForSequenceClassification", CLASSIFIER, "classify"
    ),
    "roberta-classifier": Kind(
        with_head(tiny_models.build_roberta, "RobertaForSequenceClassification", LABELS),
        "RobertaForSequenceClassification",
        CLASSIFIER,
        "classify",
    ),
    "gpt2-classifier": Kind(
        with_head(tiny_models.build_gpt2, "GPT2ForSequenceClassification", LABELS),
        "GPT2ForSequenceClassification",
        CLASSIFIER,
        "classify",
    ),
    "llama-classifier": Kind(
        with_head(llama, "LlamaForSequenceClassification", LABELS),
        "LlamaForSequenceClassification",
        CLASSIFIER,
        "classify",
    ),
    "lora-classifier": Kind(
        lora_classifier, "BertForSequenceClassification", CLASSIFIER | {"fill-mask"}, "fill-mask"
    ),  # the adapter's base, a masked LM, still fills masks
    "token-classifier": Kind(
        with_head(tiny_models.build_bert, "BertForTokenClassification"),
        "BertForTokenClassification",
        HEAD_ONLY | {"tag", "evaluate"},
        "tag",
    ),
    "question-answering": Kind(
        with_head(tiny_models.build_bert, "BertForQuestionAnswering"),
        "BertForQuestionAnswering",
        HEAD_ONLY | {"qa", "evaluate"},
        "qa",
    ),
    "encoder": Kind(with_head(tiny_models.build_bert, "BertModel"), "BertModel", HEAD_ONLY | {"evaluate"}, "embed"),
    "bart": Kind(
        tiny_models.build_bart,
        "BartForConditionalGeneration",
        frozenset({"translate", "summarize", "score", "evaluate"}),
        "translate",
    ),
    "t5": Kind(
        tiny_models.build_t5,
        "T5ForConditionalGeneration",
        frozenset({"translate", "summarize", "score", "evaluate"}),
        "translate",
    ),
    "marian": Kind(
        tiny_models.build_marian,
        "MarianMTModel",
        frozenset({"translate", "summarize", "score", "evaluate"}),
        "translate",
    ),
}
COMMANDS = ("fill-mask", "generate", "classify", "score", "evaluate", "next-sentence", "embed", "similar", "attention")
COMMANDS += ("tag", "qa", "translate", "summarize")
SEQ2SEQ = ("kinds-bart", "kinds-t5", "kinds-marian")
ENGINES = ("torch", "auto")


@pytest.fixture(scope="module")
def models(models_dir: Path) -> dict[str, Path]:
    return {name: kind.build(models_dir / f"kinds-{name}") for name, kind in KINDS.items()}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Held-out data for evaluate: a text column (LMs) and labels the classifiers know."""
    path = tmp_path_factory.mktemp("kinds") / "dev.csv"
    path.write_text("text,label\na great film,positive\na terrible movie,negative\n", encoding="utf-8")
    # a sentence encoder's evaluation data (scored pairs), and lines for similar to rank
    (path.parent / "pairs.csv").write_text(
        "sentence1,sentence2,score\na cat,a kitten,4.5\na car,a poem,0.5\na dog,a puppy,4.0\n", encoding="utf-8"
    )
    (path.parent / "lines.txt").write_text("a great film\na terrible movie\n", encoding="utf-8")
    (path.parent / "ner.conll").write_text("the O\nking B-PER\nlived O\n\nparis B-LOC\n", encoding="utf-8")
    qa = {"question": "what was great ?", "context": "a great film", "answers": {"text": ["film"], "answer_start": [8]}}
    (path.parent / "qa.jsonl").write_text(json.dumps(qa) + "\n", encoding="utf-8")
    # an encoder-decoder's pairs (source, reference), for score and evaluate
    (path.parent / "pairs.txt").write_text("the dog\tle chien\na great film\tun grand film\n", encoding="utf-8")
    return path


def arguments(command: str, model: Path, data: Path) -> list[str]:
    """The command with small valid input, run on ``model``."""
    given = {
        "fill-mask": ["the [MASK] sat on the mat ."],
        "generate": ["once upon a time", "-t", "2", "--greedy"],
        "classify": ["a great film"],
        "score": ["the cat sat on the mat"],
        "evaluate": [str(data.parent / "pairs.csv") if model.name.endswith("-encoder") else str(data)],
        **({"evaluate": [str(data.parent / "ner.conll")]} if model.name.endswith("token-classifier") else {}),
        "qa": ["what was great ?", "--context", str(data.parent / "lines.txt")],
        "embed": ["the cat sat"],
        "similar": ["a film", "--input", str(data.parent / "lines.txt")],
        "next-sentence": ["the king lived in a castle .", "he was happy ."],
        "attention": ["the cat sat", "--layer", "0"],
        "tag": ["the king lived in paris"],
        "translate": ["the cat sat", "-t", "2", "--json"],  # a record even when the text is empty
        "summarize": ["the cat sat", "-t", "2", "--json"],
    }[command]
    if command == "evaluate" and model.name.endswith("-question-answering"):
        given = [str(data.parent / "qa.jsonl")]
    if model.name in SEQ2SEQ and command in ("score", "evaluate"):
        given = ["the dog\tle chien"] if command == "score" else [str(data.parent / "pairs.txt")]
    return [command, *given, "-m", str(model)]


def assert_refusal(result: object, model: Path, kind: Kind) -> None:
    code, out, err = result.returncode, result.stdout, result.stderr  # type: ignore[attr-defined]
    assert code == 3, (code, err)
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith(f"llmtool: error: {model} "), line
    assert f"({kind.architecture})" in line, line  # names what the model is
    assert len(line.replace(str(model), model.name)) <= 200, line
    for noise in ("Traceback", "Unrecognized configuration", "Model type should be one of", "Config,"):
        assert noise not in line, line
    if kind.suggests is not None and "is not a causal or masked language model" not in line:
        assert f"Did you mean `llmtool {kind.suggests}`?" in line, line  # score keeps its older wording
    else:
        assert "Did you mean" not in line, line


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name", list(KINDS))
def test_every_command_with_every_kind_of_model(
    name: str, command: str, models: dict[str, Path], data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import conftest

    kind, model = KINDS[name], models[name]
    if command not in kind.runs:
        for engine in ENGINES:  # refused before any engine is chosen: the same on both
            monkeypatch.setattr(conftest, "ENGINE", engine)
            assert_refusal(invoke(arguments(command, model, data)), model, kind)
        return
    result = invoke(arguments(command, model, data))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), result.stderr


def test_the_refusals_that_name_a_remedy(models: dict[str, Path], data: Path) -> None:
    """A model whose family can carry the missing head is told how to get one; other families are not."""
    bert, gpt2 = models["bert"], models["gpt2"]
    classify = invoke(arguments("classify", bert, data)).stderr.strip()
    assert classify == (
        f"llmtool: error: {bert} (BertForMaskedLM) has no trained sequence-classification head; "
        "train one with `llmtool finetune --task classify`. Did you mean `llmtool fill-mask`?"
    )
    nsp = invoke(arguments("next-sentence", bert, data)).stderr.strip()
    assert nsp == (
        f"llmtool: error: {bert} (BertForMaskedLM) has no trained next-sentence head; "
        "pre-train one with `llmtool pretrain --objective mlm --nsp`. Did you mean `llmtool fill-mask`?"
    )
    nsp = invoke(arguments("next-sentence", gpt2, data)).stderr.strip()
    assert nsp == (
        f"llmtool: error: {gpt2} (GPT2LMHeadModel) has no next-sentence head (only BERT-style models pre-trained "
        "with NSP have one). Did you mean `llmtool generate`?"
    )
    generate = invoke(arguments("generate", bert, data)).stderr.strip()
    assert generate == (
        f"llmtool: error: {bert} is a masked LM (BertForMaskedLM); generate needs a causal LM (GPT-2, Llama, ...). "
        "Did you mean `llmtool fill-mask`?"
    )


def test_the_python_api_refuses_alike(models: dict[str, Path]) -> None:
    import llmtool
    from llmtool.errors import ModelError

    with pytest.raises(ModelError, match=re.escape("is a masked LM (BertForMaskedLM); generate needs a causal LM")):
        llmtool.generate(["once upon a time"], model=str(models["bert"]))
    with pytest.raises(ModelError, match=re.escape("is a causal LM (GPT2LMHeadModel); fill-mask needs a masked LM")):
        llmtool.fill_mask(["a [MASK] day"], model=str(models["gpt2"]))


def test_a_config_that_records_no_class_runs_as_before(models_dir: Path, data: Path) -> None:
    """No ``architectures`` in config.json: the kind is unknown, and the command runs as it did before the check."""
    import json

    folder = tiny_models.build_bert(models_dir / "kinds-silent-bert")
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    result = invoke(arguments("fill-mask", folder, data))
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- nan and inf


def float_options() -> list[tuple[str, str]]:
    """(command, --flag) for every float option of every command, read from the CLI itself."""
    import importlib
    import inspect
    import typing

    from llmtool.tasks.registry import COMMANDS

    found = []
    for entry in COMMANDS:
        module, attribute = entry.cli.split(":")
        function = getattr(importlib.import_module(module), attribute)
        if not inspect.isfunction(function):
            continue  # a group of commands (cache, corpus): none takes a number
        for hint in typing.get_type_hints(function, include_extras=True).values():
            base, *meta = typing.get_args(hint) if typing.get_origin(hint) is typing.Annotated else (hint,)
            if float in (base, *typing.get_args(base)):
                # typer.Option's names: in Annotated, the first one stands where the default would
                names = [d for m in meta for d in (getattr(m, "default", None), *getattr(m, "param_decls", ()))]
                found.append((entry.name, max((n for n in names if str(n).startswith("--")), key=len)))
    return found


def test_the_float_options_are_found() -> None:
    found = set(float_options())
    assert {("generate", "--temperature"), ("generate", "--top-p"), ("finetune", "--lr")} <= found
    assert {("pretrain", "--mlm-probability"), ("finetune", "--lora-dropout"), ("finetune", "--valid-split")} <= found


@pytest.mark.parametrize(("command", "flag"), float_options())
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_inf_are_refused_for_every_float_option(
    command: str, flag: str, value: float, tiny_gpt2: Path, tmp_path: Path
) -> None:
    data = tmp_path / "train.csv"
    data.write_text("text,label\na great film,positive\na terrible movie,negative\n", encoding="utf-8")
    base = {
        "generate": ["generate", "once upon a time", "-m", str(tiny_gpt2)],
        "finetune": ["finetune", str(data), "-m", str(tiny_gpt2), "-o", str(tmp_path / "out")],
        "pretrain": ["pretrain", str(data), "-o", str(tmp_path / "out")],
        "qa": ["qa", "who ?", "--context", str(data), "-m", str(tiny_gpt2), "--no-answer"],
        "translate": ["translate", "the dog", "-m", str(tiny_gpt2)],  # refused for the number, before the model
        "summarize": ["summarize", "the dog", "-m", str(tiny_gpt2)],
    }[command]
    extra = ["--lora"] if flag.startswith("--lora") else []
    result = invoke([*base, *extra, flag, str(value)])
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"llmtool: error: {flag} must be a finite number, not {value}\n"
    assert not (tmp_path / "out").exists()
