"""LoRA adapter folders: recognise one, read its config, and apply it to its base model (PEFT).

A leaf module (it imports no other llmtool module but ``errors``): :mod:`llmtool.models` loads an
adapter folder as its base model with the adapter merged in (:func:`merged`), and
:mod:`llmtool.engines.choice` keeps adapters on the torch engine; training them, and writing
merged models, is :mod:`llmtool.lora`, which builds on both.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeGuard

from llmtool.errors import MissingHeadError, ModelError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_adapter(folder: Path | None) -> TypeGuard[Path]:
    """Whether ``folder`` holds a PEFT adapter (``adapter_config.json``)."""
    return folder is not None and (Path(folder) / ADAPTER_CONFIG).is_file()


def adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a readable adapter config ({type(exc).__name__})") from None
    if not isinstance(config, dict) or not config.get("base_model_name_or_path"):
        raise ModelError(f"{path}: names no base model (base_model_name_or_path)")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ModelError(f"{folder / ADAPTER_WEIGHTS}: missing; the adapter folder is incomplete")
    return config


def base_options(folder: Path, opts: Any) -> Any:
    """The ModelOptions that locate the base model of the adapter in ``folder``."""
    config = adapter_config(folder)
    base = str(config["base_model_name_or_path"])
    revision = config.get("revision") or None
    return dataclasses.replace(opts, model=base, revision=revision, engine="torch")


def apply(model: Any, folder: Path, base_name: str) -> Any:
    """The PEFT model of the adapter in ``folder`` on ``model``, its base (loaded with the adapter
    folder's config: its label names), unmerged and frozen."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=False)
    except Exception as exc:
        text = " ".join(str(exc).split())
        raise ModelError(f"{folder}: the adapter does not fit its base model {base_name}: {text[:300]}") from None


def merged(base: Any, missing_keys: list[str], folder: Path, base_name: str, require_head: str | None) -> Any:
    """The adapter in ``folder`` applied to ``base`` (its base model, loaded with the adapter folder's
    config: its label names) and merged into its weights, in eval mode: inference then runs at the base
    model's speed. ``missing_keys``: the weights the base checkpoint lacked; with ``require_head``, those
    the adapter does not save either (an untrained head) are a :class:`MissingHeadError`."""
    adapted = apply(base, folder, base_name)
    saved = list(getattr(adapted.peft_config["default"], "modules_to_save", None) or [])
    if require_head is not None:
        uncovered = [k for k in missing_keys if not any(f"{name}." in f".{k}" for name in saved)]
        if uncovered:
            raise MissingHeadError(f"{folder}: neither the base model {base_name} nor the adapter has a trained "
                                   f"{require_head} ({', '.join(uncovered[:3])} missing)")  # fmt: skip
    result = adapted.merge_and_unload()
    result.eval()
    return result
