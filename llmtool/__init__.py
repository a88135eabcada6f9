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

__all__ = [
    "__version__",
    "attention",
    "classify",
    "embed",
    "evaluate",
    "fill_mask",
    "generate",
    "next_sentence",
    "score",
    "similar",
]

_LAZY = {
    "attention": ("llmtool.tasks.attention", "attention"),
    "fill_mask": ("llmtool.tasks.fill_mask", "fill_mask"),
    "generate": ("llmtool.tasks.generate", "generate"),
    "classify": ("llmtool.tasks.classify", "classify"),
    "evaluate": ("llmtool.tasks.evaluate", "evaluate"),
    "next_sentence": ("llmtool.tasks.next_sentence", "next_sentence"),
    "score": ("llmtool.tasks.score", "score"),
    "embed": ("llmtool.tasks.embed", "embed"),
    "similar": ("llmtool.tasks.similar", "similar"),
}

if TYPE_CHECKING:
    from llmtool.tasks.attention import attention
    from llmtool.tasks.classify import classify
    from llmtool.tasks.embed import embed
    from llmtool.tasks.evaluate import evaluate
    from llmtool.tasks.fill_mask import fill_mask
    from llmtool.tasks.generate import generate
    from llmtool.tasks.next_sentence import next_sentence
    from llmtool.tasks.score import score
    from llmtool.tasks.similar import similar


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'llmtool' has no attribute {name!r}")
