"""Fine-tuning objectives: the ``--task`` names of ``finetune`` and the recipe of each.

A recipe (:class:`~llmtool.training.recipes.base.Recipe`) holds what differs by objective; adding
an objective is one new module here and one line in :data:`RECIPES` (docs/architecture.md,
"Adding a fine-tuning objective"). Importing a recipe imports neither torch nor transformers.
"""

from __future__ import annotations

from llmtool.errors import UsageError
from llmtool.training.recipes.base import Recipe
from llmtool.training.recipes.classify import Classify
from llmtool.training.recipes.clm import CausalLM
from llmtool.training.recipes.embed import Embed
from llmtool.training.recipes.language import LanguageModel, Masking
from llmtool.training.recipes.mlm import MaskedLM
from llmtool.training.recipes.qa import QuestionAnswering
from llmtool.training.recipes.seq2seq import Seq2Seq
from llmtool.training.recipes.tag import Tag

RECIPES: dict[str, Recipe] = {
    recipe.name: recipe
    for recipe in (Classify(), CausalLM(), MaskedLM(), Embed(), Tag(), QuestionAnswering(), Seq2Seq())
}


def recipe_for(objective: str) -> Recipe:
    """The recipe of a ``--task`` name."""
    try:
        return RECIPES[objective]
    except KeyError:
        raise UsageError(f"unknown --task {objective!r}; use {', '.join(RECIPES)}") from None


def language_model(objective: str) -> LanguageModel:
    """The recipe of a language-model objective (``pretrain --objective mlm|clm``)."""
    recipe = recipe_for(objective)
    if not isinstance(recipe, LanguageModel):
        raise UsageError(f"unknown --objective {objective!r}; use mlm or clm")
    return recipe


__all__ = ["RECIPES", "LanguageModel", "Masking", "Recipe", "language_model", "recipe_for"]
