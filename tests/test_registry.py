"""The command registry is the one list: the CLI, the Python API, the engines' task keys and the
environment variables all follow it, and no module of the CLI, the tasks or io imports back into itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import invoke

from llmtool import kinds
from llmtool.tasks import registry

PACKAGE = Path(__file__).resolve().parents[1] / "llmtool"


def test_the_python_api_is_the_registrys() -> None:
    import importlib

    import llmtool

    apis = {c.api for c in registry.COMMANDS if c.api is not None}
    assert set(llmtool.__all__) == {"__version__", *apis}
    for entry in registry.COMMANDS:
        if entry.api is not None:
            assert entry.module is not None
            assert getattr(llmtool, entry.api) is getattr(importlib.import_module(entry.module), entry.api)
    # The names type checkers see (llmtool/__init__.py's TYPE_CHECKING imports) are the same ones.
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    typed = {(n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {(c.module, c.api) for c in registry.COMMANDS if c.api is not None} <= typed


def test_help_lists_the_registrys_commands_in_its_order() -> None:
    result = invoke(["--help"])
    assert result.returncode == 0
    listed = re.findall(r"^  ([a-z][a-z-]*)  ", result.stdout.split("Commands:")[1], flags=re.MULTILINE)
    assert listed == registry.commands()
    assert registry.commands("inference") == [
        "fill-mask",
        "generate",
        "translate",
        "summarize",
        "classify",
        "score",
        "evaluate",
        "next-sentence",
        "qa",
        "tag",
        "embed",
        "similar",
        "attention",
    ]


SUBCOMMANDS = [("cache", "list"), ("cache", "add"), ("cache", "rm"), ("corpus", "facts")]


@pytest.mark.parametrize("args", [[name] for name in registry.commands()] + [list(s) for s in SUBCOMMANDS])
def test_every_help_ends_with_its_docs_page(args: list[str]) -> None:
    result = invoke([*args, "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().splitlines()[-1].strip() == f"Docs: docs/commands/{args[0]}.md"


def test_model_variables_follow_the_command_names() -> None:
    import typer

    from llmtool.cli import app

    group = typer.main.get_command(app)
    for name in registry.commands("inference"):
        (model,) = [p for p in group.commands[name].params if p.name == "model"]  # type: ignore[attr-defined]
        variable = "LLMTOOL_" + name.upper().replace("-", "_") + "_MODEL"
        assert model.envvar == [variable, "LLMTOOL_MODEL"] == registry.command(name).model_envvars


def test_every_engine_task_key_has_one_engine_kind() -> None:
    from llmtool.engines import choice

    assert set(registry.engine_tasks("encoder")) == set(choice.ENCODER_TASKS)
    assert set(registry.engine_tasks("decoder")) == set(choice.DECODER_TASKS)
    assert registry.engine_kind("score-clm") == "decoder" and registry.engine_kind("score-mlm") == "encoder"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"architectures": ["BertForMaskedLM"], "model_type": "bert"}, {kinds.MASKED_LM}),
        ({"architectures": ["BertForPreTraining"], "model_type": "bert"}, {kinds.MASKED_LM, kinds.NEXT_SENTENCE}),
        ({"architectures": ["RobertaForMaskedLM"], "model_type": "roberta"}, {kinds.MASKED_LM}),
        ({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, {kinds.CAUSAL_LM}),
        ({"architectures": ["GPT2DoubleHeadsModel"], "model_type": "gpt2"}, {kinds.CAUSAL_LM}),
        ({"architectures": ["BertLMHeadModel"], "model_type": "bert", "is_decoder": True}, {kinds.CAUSAL_LM}),
        ({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}, {kinds.CAUSAL_LM}),
        ({"architectures": ["LlamaForSequenceClassification"]}, {kinds.SEQUENCE_CLASSIFIER}),
        ({"architectures": ["BartForSequenceClassification"], "is_encoder_decoder": True}, {kinds.SEQUENCE_CLASSIFIER}),
        ({"architectures": ["DistilBertForTokenClassification"]}, {kinds.TOKEN_CLASSIFIER}),
        ({"architectures": ["RobertaForQuestionAnswering"]}, {kinds.QUESTION_ANSWERING}),
        ({"architectures": ["T5ForConditionalGeneration"], "is_encoder_decoder": True}, {kinds.ENCODER_DECODER}),
        ({"architectures": ["MarianMTModel"], "is_encoder_decoder": True}, {kinds.ENCODER_DECODER}),
        ({"model_type": "t5", "is_encoder_decoder": True}, {kinds.ENCODER_DECODER}),
        ({"architectures": ["MPNetModel"], "model_type": "mpnet"}, {kinds.ENCODER}),
        ({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"}, set()),
        ({"architectures": ["Wav2Vec2ForCTC"]}, set()),
        ({"model_type": "bert"}, set()),
    ],
)
def test_the_kind_of_a_config(config: dict[str, object], expected: set[str]) -> None:
    assert kinds.kinds_of_config(config) == expected


# --------------------------------------------------------------------------- no import cycles


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """llmtool's modules and the llmtool modules each imports, at the top or inside functions."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].add(target)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_through_the_cli_tasks_or_io() -> None:
    mine = ("llmtool.cli", "llmtool.tasks", "llmtool.io", "llmtool.settings", "llmtool.kinds")
    cycles = [c for c in _cycles(_imports()) if any(m == "llmtool" or m.startswith(mine) for m in c)]
    assert not cycles, cycles
