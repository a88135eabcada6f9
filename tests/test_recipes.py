"""The fine-tuning recipes: one per --task name, each complete, and the training layer's imports one-way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from llmtool.errors import UsageError
from llmtool.settings import TASKS, FinetuneSettings
from llmtool.training.recipes import RECIPES, Recipe, language_model, recipe_for

ROOT = Path(__file__).resolve().parents[1]


def test_every_task_has_a_recipe() -> None:
    assert tuple(RECIPES) == TASKS
    for name, recipe in RECIPES.items():
        assert isinstance(recipe, Recipe) and recipe.name == name
        assert recipe.limit_flag in ("--max-length", "--block-size")
        assert recipe.best_metric in ("accuracy", "loss")


def test_unknown_names_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown --task 'translate'"):
        recipe_for("translate")
    with pytest.raises(UsageError, match="unknown --objective 'classify'"):
        language_model("classify")


def test_what_differs_by_objective() -> None:
    classify, clm, mlm = RECIPES["classify"], RECIPES["clm"], RECIPES["mlm"]
    assert (classify.peft_task_type, clm.peft_task_type, mlm.peft_task_type) == ("SEQ_CLS", "CAUSAL_LM", None)
    assert classify.one_example_per_row(FinetuneSettings(task="classify"))
    assert not clm.one_example_per_row(FinetuneSettings(task="clm"))
    assert mlm.one_example_per_row(FinetuneSettings(task="mlm", line_by_line=True))
    assert classify.derived_metrics() is None and clm.derived_metrics() is not None
    assert mlm.default_limit(4096) == 1024 and classify.default_limit(4096) == 4096


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):  # imports inside functions too
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_adapters_and_models_import_no_lora() -> None:
    """lora -> models -> adapters: loading an adapter folder needs no training code."""
    for module in ("models", "adapters", "engines/choice"):
        assert not any(i.startswith("llmtool.lora") for i in _imports(ROOT / "llmtool" / f"{module}.py")), module
    assert not any(i.startswith("llmtool.models") for i in _imports(ROOT / "llmtool" / "adapters.py"))


def test_recipes_do_not_import_the_commands() -> None:
    for path in (ROOT / "llmtool" / "training" / "recipes").glob("*.py"):
        imported = _imports(path)
        assert not any(i.startswith(("llmtool.training.finetune", "llmtool.training.pretrain")) for i in imported)
