"""Sentence embeddings from token states: the pooling and normalisation of sentence-transformers, in numpy.

A sentence-transformers model folder says how its vectors are made, in files beside the weights:

- ``modules.json``: the pipeline, e.g. Transformer -> Pooling -> Normalize;
- ``1_Pooling/config.json`` (the Pooling module's folder): the pooling mode, as the newer
  ``"pooling_mode": "mean"`` (or a list, concatenated) or the older booleans
  ``pooling_mode_mean_tokens``, ``pooling_mode_cls_token``, ...; ``include_prompt``;
- ``sentence_bert_config.json``: ``max_seq_length`` (longer inputs are truncated), ``do_lower_case``;
- ``config_sentence_transformers.json``: named ``prompts`` ({"query": "query: ", ...}) and
  ``default_prompt_name``.

:func:`read_sentence_config` reads them into a :class:`SentenceConfig`; a plain encoder without
them gets mean pooling, normalised. :func:`pool` and :func:`normalize` compute what
sentence-transformers' ``Pooling`` and ``Normalize`` modules compute, on numpy arrays: the
CTranslate2 engine needs no torch for it. This module imports only numpy (lazily) and the standard
library.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.errors import ModelError

if TYPE_CHECKING:
    import numpy as np

# What sentence-transformers' Pooling computes; the command line offers the first four.
POOLINGS: tuple[str, ...] = ("mean", "cls", "max", "lasttoken", "mean_sqrt_len_tokens", "weightedmean")
# The old boolean keys, in the order sentence-transformers concatenates them.
LEGACY_KEYS: dict[str, str] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# Modules of a sentence-transformers pipeline that llmtool runs (by the last part of their type).
KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")

JsonReader = Callable[[str], Any]  # a file's path inside the model folder -> its JSON, or None when absent


@dataclass(frozen=True)
class SentenceConfig:
    """How a model turns token states into one vector, as its sentence-transformers files say."""

    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = True
    max_seq_length: int | None = None
    do_lower_case: bool = False
    include_prompt: bool = True
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    sentence_transformers: bool = False  # the model has modules.json (else: the plain-encoder defaults)

    def describe(self) -> str:
        """For messages: ``mean pooling, normalised``."""
        return f"{'+'.join(self.pooling)} pooling, {'normalised' if self.normalize else 'not normalised'}"


def folder_reader(folder: Path) -> JsonReader:
    """Read JSON files from a model folder on disk."""

    def read(name: str) -> Any:
        path = folder / name
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None

    return read


def pooling_modes(config: dict[str, Any]) -> tuple[str, ...]:
    """The pooling modes of a Pooling module's config.json, new key or old booleans (default mean)."""
    if "pooling_mode" in config:
        value = config["pooling_mode"]
        modes = tuple(value) if isinstance(value, list | tuple) else (value,)
    else:
        modes = tuple(mode for key, mode in LEGACY_KEYS.items() if config.get(key)) or ("mean",)
    for mode in modes:
        if mode not in POOLINGS:
            raise ModelError(
                f"unknown pooling mode {mode!r} in the model's Pooling config; known: {', '.join(POOLINGS)}"
            )
    return modes


def read_sentence_config(read: JsonReader, name: str = "the model") -> SentenceConfig:
    """The model's pooling, normalisation, length limit and prompts (:class:`SentenceConfig`)."""
    modules = read("modules.json")
    extra = read("config_sentence_transformers.json") or {}
    prompts = {str(k): str(v) for k, v in (extra.get("prompts") or {}).items()}
    default_prompt = extra.get("default_prompt_name") or None
    if not isinstance(modules, list):
        found = read("1_Pooling/config.json")  # a folder with the pooling config but no modules.json
        limits = read("sentence_bert_config.json") or {}
        return SentenceConfig(
            pooling=pooling_modes(found) if isinstance(found, dict) else ("mean",),
            normalize=True,
            max_seq_length=_positive(limits.get("max_seq_length")),
            do_lower_case=bool(limits.get("do_lower_case", False)),
            include_prompt=bool(found.get("include_prompt", True)) if isinstance(found, dict) else True,
            prompts=prompts,
            default_prompt_name=default_prompt,
        )
    kinds = [
        (str(m.get("type", "")).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in modules if isinstance(m, dict)
    ]
    unknown = [kind for kind, _ in kinds if kind not in KNOWN_MODULES]
    if unknown:
        raise ModelError(
            f"{name}: its sentence-transformers pipeline has a {unknown[0]} module, which llmtool does not run "
            f"(it runs {', '.join(KNOWN_MODULES)})"
        )
    modes: tuple[str, ...] = ("mean",)
    include_prompt = True
    bert: dict[str, Any] = {}
    for kind, path in kinds:
        prefix = f"{path.strip('/')}/" if path.strip("/") else ""
        if kind == "Pooling":
            pooling = read(f"{prefix}config.json")
            if isinstance(pooling, dict):
                modes = pooling_modes(pooling)
                include_prompt = bool(pooling.get("include_prompt", True))
        elif kind == "Transformer":
            bert = read(f"{prefix}sentence_bert_config.json") or {}
    return SentenceConfig(
        pooling=modes,
        normalize=any(kind == "Normalize" for kind, _ in kinds),
        max_seq_length=_positive(bert.get("max_seq_length")),
        do_lower_case=bool(bert.get("do_lower_case", False)),
        include_prompt=include_prompt,
        prompts=prompts,
        default_prompt_name=default_prompt,
        sentence_transformers=True,
    )


def _positive(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and value > 0 else None


# --------------------------------------------------------------------------- the arithmetic


def pool(hidden: np.ndarray, mask: np.ndarray, modes: Sequence[str], skip: int = 0) -> np.ndarray:
    """One vector per row from token states ``hidden`` (rows x tokens x dim) under ``mask`` (rows x tokens,
    1 on real tokens, padding on the right); several modes are concatenated in the order given.

    ``skip``: leading tokens left out (a prompt, for models whose Pooling has ``include_prompt: false``).
    """
    import numpy as np

    hidden = np.asarray(hidden, dtype=np.float32)
    mask = np.asarray(mask, dtype=np.float32).copy()
    if skip:
        mask[:, :skip] = 0
    out: list[np.ndarray] = []
    for mode in modes:
        if mode == "cls":
            first = mask.argmax(axis=1)  # the first token pooled (0 without a skipped prompt)
            out.append(hidden[np.arange(len(hidden)), first])
        elif mode == "max":
            masked = np.where(mask[:, :, None] > 0, hidden, -np.inf)
            out.append(masked.max(axis=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            total = (hidden * mask[:, :, None]).sum(axis=1)
            count = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
            out.append(total / (count if mode == "mean" else np.sqrt(count)))
        elif mode == "weightedmean":
            weights = mask * np.arange(1, mask.shape[1] + 1, dtype=np.float32)[None, :]
            total = (hidden * weights[:, :, None]).sum(axis=1)
            out.append(total / np.maximum(weights.sum(axis=1, keepdims=True), 1e-9))
        elif mode == "lasttoken":
            last = np.where(mask.any(axis=1), mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), mask.shape[1] - 1)
            out.append(hidden[np.arange(len(hidden)), last] * mask[np.arange(len(hidden)), last][:, None])
        else:
            raise ModelError(f"unknown pooling mode {mode!r}; known: {', '.join(POOLINGS)}")
    return np.concatenate(out, axis=1).astype(np.float32, copy=False)


def normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Each row scaled to unit length (torch's ``F.normalize``: a zero row stays zero)."""
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32, copy=False)
