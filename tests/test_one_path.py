"""One path per command: the CLI and the Python API share each command's entry, and each rule lives once.

- no module reaches into another's private names; the CLI imports neither torch nor transformers;
- every CLI default is its settings dataclass's default;
- the Python API returns exactly the records the CLI prints with --json;
- one table gets one text column (or one refusal) from every command.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import tiny_models
from conftest import run_cli

PACKAGE = Path(__file__).resolve().parents[1] / "llmtool"


@pytest.fixture(autouse=True)
def default_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI with its default engine (auto), as the Python API has it."""
    import conftest

    monkeypatch.setattr(conftest, "ENGINE", "auto")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_uses_another_modules_private_names() -> None:
    offences = []
    for path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmtool"):
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                offences += [f"{path.name}: from {node.module} import {name}" for name in private]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                value = node.value
                if isinstance(value, ast.Name) and value.id in {"llmtool", "data", "streams", "models", "engines"}:
                    offences.append(f"{path.name}:{node.lineno}: {value.id}.{node.attr}")
    assert not offences, offences


TESTS = Path(__file__).resolve().parent
TEST_HELPERS = {p.stem for p in TESTS.glob("*.py") if not p.stem.startswith("test_")}  # conftest, tiny_models...


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_test_uses_private_names_of_llmtool_or_of_another_test_module() -> None:
    """Tests use llmtool's public names, and their own helpers' (conftest, tiny_models, ...) public ones."""
    offences = []
    for path in sorted(TESTS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        ours: set[str] = set()  # local names bound to llmtool's modules or to other test modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                top = node.module.split(".")[0]
                if top == "llmtool" or (top in TEST_HELPERS and node.module != path.stem):
                    offences += [
                        f"{path.name}:{node.lineno}: from {node.module} import {a.name}"
                        for a in node.names
                        if _private(a.name)
                    ]
                    ours |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top == "llmtool" or (top in TEST_HELPERS and alias.name != path.stem):
                        ours.add(alias.asname or top)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                root = node.value
                while isinstance(root, ast.Attribute):
                    root = root.value
                if isinstance(root, ast.Name) and root.id in ours:
                    offences.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    assert not offences, offences


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, known: set[str]) -> set[str]:
    """llmtool's modules that ``path`` imports anywhere in it (inside functions too). ``from a import b``
    counts as importing ``a.b`` when that is a module, else ``a``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
    return {m for m in found if m in known and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _cycle_path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One import loop through the first module of ``component``, e.g. "a -> b -> a"."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for target in sorted(graph[node] & members):
            if target == start:
                return " -> ".join([*paths[node], start])
            if target not in paths:
                paths[target] = [*paths[node], target]
                queue.append(target)
    return " -> ".join(component)


def test_no_import_cycle_among_llmtools_modules() -> None:
    """Imports inside functions count: a cycle there is still two modules that need each other."""
    known = {_module_name(p) for p in _modules()}
    graph = {_module_name(p): _imported_modules(p, known) for p in _modules()}
    loops = [f"{_cycle_path(graph, c)} (all of {', '.join(c)})" for c in _cycles(graph)]
    assert not loops, "import cycles:\n" + "\n".join(loops)


MAX_MODULE_LINES = 600


def test_no_module_is_over_600_lines() -> None:
    sizes = {str(p.relative_to(PACKAGE.parent)): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    too_long = {module: lines for module, lines in sizes.items() if lines > MAX_MODULE_LINES}
    assert not too_long, too_long


def test_the_cli_imports_neither_torch_nor_transformers() -> None:
    for path in sorted((PACKAGE / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            heavy = [n for n in names if n.split(".")[0] in ("torch", "transformers")]
            assert not heavy, f"{path.name}:{node.lineno} imports {heavy}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
                called = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
                assert called not in ("from_pretrained", "load_model", "load"), (
                    f"{path.name}:{node.lineno} loads a model"
                )


def _cli_defaults(command: str) -> dict[str, Any]:
    import typer

    from llmtool.cli import app

    group: Any = typer.main.get_command(app)
    return {p.name: p.default for p in group.commands[command].params}


COMMAND_SETTINGS = {
    "fill-mask": ("FillMaskOptions", "ModelOptions"),
    "generate": ("GenerateOptions", "ModelOptions"),
    "classify": ("ClassifyOptions", "ModelOptions"),
    "score": ("ScoreOptions", "ModelOptions"),
    "evaluate": ("EvaluateOptions", "ModelOptions"),
    "next-sentence": ("NextSentenceOptions", "ModelOptions"),
    "finetune": ("FinetuneSettings", "ModelOptions"),
    "pretrain": ("PretrainSettings",),
    "attention": ("AttentionOptions", "ModelOptions"),
}
NOT_SETTINGS = {"model", "report_to", "stop", "targets", "encoding"}  # the CLI's own spelling of these


@pytest.mark.parametrize("command", sorted(COMMAND_SETTINGS))
def test_every_cli_default_is_the_settings_default(command: str) -> None:
    import llmtool.settings as settings

    cli = _cli_defaults(command)
    compared = 0
    for class_name in COMMAND_SETTINGS[command]:
        cls = getattr(settings, class_name)
        for f in dataclasses.fields(cls):
            if f.name in cli and f.name not in NOT_SETTINGS:
                if command in ("finetune", "pretrain") and class_name == "ModelOptions" and f.name == "device":
                    continue  # training's --device is TrainSettings.device (compared above)
                default = getattr(cls(), f.name)
                assert cli[f.name] == default, f"{command} --{f.name}: CLI {cli[f.name]!r}, {class_name} {default!r}"
                compared += 1
    assert compared >= 5


# --------------------------------------------------------------------------- Python API == CLI --json


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> Path:
    return tiny_models.build_bert_classifier(models_dir / "one-path-classifier")


@pytest.fixture(scope="module")
def nsp_model(models_dir: Path) -> Path:
    return tiny_models.build_bert_pretraining(models_dir / "one-path-pretraining")


def _json_lines(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def _same(api: Any, cli: Any) -> None:
    assert json.loads(json.dumps(list(api))) == cli


LINES = ["the capital of [MASK] is paris .", "a [MASK] day", "the [MASK] and the [MASK] ."]


def test_api_equals_cli_json_fill_mask_and_score(tiny_bert: Path, tiny_gpt2: Path) -> None:
    import llmtool

    cli = _json_lines(run_cli(["fill-mask", "-m", str(tiny_bert), "--json", "-k", "3"], input="\n".join(LINES)))
    _same(llmtool.fill_mask(LINES, model=str(tiny_bert), top_k=3), cli)
    texts = ["the cat sat on the mat", "once upon a time"]
    cli = _json_lines(run_cli(["score", "-m", str(tiny_gpt2), "--json", "--total"], input="\n".join(texts)))
    _same(llmtool.score(texts, model=str(tiny_gpt2), total=True), cli)
    cli = _json_lines(run_cli(["score", "-m", str(tiny_bert), "--json"], input="\n".join(texts)))
    _same(llmtool.score(texts, model=str(tiny_bert)), cli)


def test_api_equals_cli_json_generate(tiny_gpt2: Path) -> None:
    import llmtool

    prompts = ["Once upon a time", "The capital of France is"]
    args = ["generate", "-m", str(tiny_gpt2), "--json", "-t", "6"]
    cli = _json_lines(run_cli([*args, "--greedy"], input="\n".join(prompts)))
    _same(llmtool.generate(prompts, model=str(tiny_gpt2), greedy=True, max_new_tokens=6), cli)
    cli = _json_lines(run_cli([*args, "--seed", "3", "-n", "2"], input="\n".join(prompts)))
    sampled = llmtool.generate(prompts, model=str(tiny_gpt2), seed=3, num_return_sequences=2, max_new_tokens=6)
    _same(sampled, cli)


def test_api_equals_cli_json_classify_evaluate_next_sentence(classifier: Path, nsp_model: Path, tmp_path: Path) -> None:
    import llmtool

    texts = ["a great film", "a terrible movie", "the dog"]
    cli = _json_lines(run_cli(["classify", "-m", str(classifier), "--json", "-k", "2"], input="\n".join(texts)))
    _same(llmtool.classify(texts, model=str(classifier), top_k=2), cli)
    data = tmp_path / "dev.csv"
    data.write_text("text,label\na great film,positive\na terrible movie,negative\n", encoding="utf-8")
    cli = _json_lines(run_cli(["evaluate", str(data), "-m", str(classifier), "--json"]))
    assert [llmtool.evaluate(str(data), model=str(classifier))] == cli
    pairs = [("the king lived in a castle .", "he was happy ."), ("the dog is red .", "paris is a city .")]
    cli = _json_lines(
        run_cli(["next-sentence", "-m", str(nsp_model), "--json"], input="\n".join(map("\t".join, pairs)))
    )
    _same(llmtool.next_sentence(pairs, model=str(nsp_model)), cli)


# --------------------------------------------------------------------------- one table, one text column


def _picked_by_every_command(table: Path, classifier: Path, tiny_gpt2: Path, tiny_bert: Path) -> dict[str, str]:
    """What each command makes of ``table`` with no column flag: the chosen text (its first row), or its error."""
    outcomes: dict[str, str] = {}

    def outcome(name: str, args: list[str], pick: Any) -> None:
        result = run_cli(args)
        outcomes[name] = pick(result.stdout) if result.returncode == 0 else result.stderr.strip()

    first_input = lambda out: json.loads(out.splitlines()[0])["input"]  # noqa: E731
    outcome("classify", ["classify", "-m", str(classifier), "-i", str(table), "--json"], first_input)
    outcome("score", ["score", "-m", str(tiny_gpt2), "-i", str(table), "--json"], first_input)
    outcome("fill-mask", ["fill-mask", "-m", str(tiny_bert), "-i", str(table), "--json", "--skip-invalid"], first_input)
    outcome("finetune", ["finetune", str(table), "-m", str(tiny_bert), "--valid-split", "0", "--dry-run", "--json"],
            lambda out: json.loads(out)["columns"]["text"])  # fmt: skip
    return outcomes


def test_one_table_one_text_column(classifier: Path, tiny_gpt2: Path, tiny_bert: Path, tmp_path: Path) -> None:
    table = tmp_path / "reviews.csv"
    table.write_text("id,review,label\n1,a great [MASK] film,positive\n2,a terrible movie,negative\n", encoding="utf-8")
    outcomes = _picked_by_every_command(table, classifier, tiny_gpt2, tiny_bert)
    assert outcomes["finetune"] == "review"
    assert {outcomes[c] for c in ("classify", "score", "fill-mask")} == {"a great [MASK] film"}, outcomes
    evaluated = run_cli(["evaluate", str(table), "-m", str(classifier), "--json"])
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["examples"] == 2


def test_an_ambiguous_table_is_refused_alike_everywhere(
    classifier: Path, tiny_gpt2: Path, tiny_bert: Path, tmp_path: Path
) -> None:
    table = tmp_path / "posts.csv"
    table.write_text("id,title,body,label\n1,good [MASK],a great film,positive\n2,bad,a bad film,negative\n")
    outcomes = _picked_by_every_command(table, classifier, tiny_gpt2, tiny_bert)
    evaluated = run_cli(["evaluate", str(table), "-m", str(classifier)])
    outcomes["evaluate"] = evaluated.stderr.strip()
    expected = f"llmtool: error: {table}:1: which column is the text? pass --text-column (columns: 'id', 'title', "
    expected += "'body', 'label')"
    assert set(outcomes.values()) == {expected}, outcomes
