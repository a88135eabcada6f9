"""llmtool: a small, fast, Unix-native command line over Hugging Face Transformers.

The Python API returns plain records (dicts), the same ones ``--json`` prints::

    import llmtool
    for record in llmtool.fill_mask(["The capital of France is [MASK]."], model="bert-base-uncased"):
        print(record["output"])

Attributes are imported lazily, so ``import llmtool`` stays cheap.
"""

from __future__ import annotations

import sys
import types
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("llmtool")  # stated once, in pyproject.toml
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "attention", "classify", "evaluate", "fill_mask", "generate", "next_sentence", "score"]

_LAZY = {
    "attention": ("llmtool.attention", "attention"),
    "fill_mask": ("llmtool.fill_mask", "fill_mask"),
    "generate": ("llmtool.generate", "generate"),
    "classify": ("llmtool.classify", "classify"),
    "evaluate": ("llmtool.evaluate", "evaluate"),
    "next_sentence": ("llmtool.next_sentence", "next_sentence"),
    "score": ("llmtool.score", "score"),
}

if TYPE_CHECKING:
    from llmtool.attention import attention
    from llmtool.classify import classify
    from llmtool.evaluate import evaluate
    from llmtool.fill_mask import fill_mask
    from llmtool.generate import generate
    from llmtool.next_sentence import next_sentence
    from llmtool.score import score


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'llmtool' has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps ``llmtool.score`` (and the rest) the function, not the submodule of the same name.

    Importing a submodule sets it as an attribute of its package, so once anything had imported
    ``llmtool.score`` the module, ``llmtool.score(...)`` would fail with "module is not callable".
    The submodules stay importable by name (``from llmtool.score import Scorer``).
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            value = getattr(value, _LAZY[name][1])
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
