"""llmtool: a small, fast, Unix-native command line over Hugging Face Transformers.

The Python API returns plain records (dicts), the same ones ``--json`` prints::

    import llmtool
    for record in llmtool.fill_mask(["The capital of France is [MASK]."], model="bert-base-uncased"):
        print(record["output"])

Attributes are imported lazily, so ``import llmtool`` stays cheap.
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("llmtool")  # stated once, in pyproject.toml
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

from llmtool.tasks.registry import python_api

# llmtool.NAME -> (module, function), one per task of llmtool.tasks.registry: imported on first use.
_LAZY = python_api()
__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # for type checkers, which cannot follow _LAZY (a test checks they agree)
    from llmtool.tasks.attention import attention as attention
    from llmtool.tasks.classify import classify as classify
    from llmtool.tasks.embed import embed as embed
    from llmtool.tasks.evaluate import evaluate as evaluate
    from llmtool.tasks.fill_mask import fill_mask as fill_mask
    from llmtool.tasks.generate import generate as generate
    from llmtool.tasks.next_sentence import next_sentence as next_sentence
    from llmtool.tasks.qa import qa as qa
    from llmtool.tasks.score import score as score
    from llmtool.tasks.similar import similar as similar
    from llmtool.tasks.summarize import summarize as summarize
    from llmtool.tasks.tag import tag as tag
    from llmtool.tasks.translate import translate as translate


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'llmtool' has no attribute {name!r}")
