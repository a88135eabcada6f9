"""What every command's settings share: ``setting()`` (a field with its default and help, stated once),
the readers of those (``help_of``, ``defaults``), the checks, the engine choices and :class:`ModelOptions`."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from llmtool.errors import UsageError

T = TypeVar("T")

Engine = Literal["auto", "torch", "ctranslate2"]
ENGINES: tuple[str, ...] = ("auto", "torch", "ctranslate2")
QUANTIZATIONS: tuple[str, ...] = ("none", "int8")
DTYPES: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
TASKS: tuple[str, ...] = ("classify", "clm", "mlm", "embed", "tag", "qa", "seq2seq")
OBJECTIVES: tuple[str, ...] = ("mlm", "clm", "seq2seq")


def setting(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with its ``--help`` text."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def help_of(cls: type, name: str) -> str:
    """The help text of field ``name`` of settings class ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def defaults(cls: type[T]) -> T:
    """An instance with every default (the classes here have a default for every field)."""
    return cls()


def env_default(name: str, fallback: T) -> T | str:
    """``LLMTOOL_<NAME>`` when set and not empty, else ``fallback``: a flag given on the command line wins."""
    value = os.environ.get(f"LLMTOOL_{name}", "").strip()
    return value if value else fallback


def finite(settings: Any) -> None:
    """Every float setting is a number: nan, inf and -inf are refused (each check() starts with this)."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"--{f.name.replace('_', '-')} must be a finite number, not {value}")


def at_least(value: int | None, minimum: int, flag: str) -> None:
    if value is not None and value < minimum:
        raise UsageError(f"{flag} must be at least {minimum}")


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelOptions:
    """Where a model comes from and how it is placed: the flags every command that loads a model shares."""

    model: str = setting("", "Hub id or local folder.")
    revision: str | None = setting(None, "Hub branch, tag or commit.")
    offline: bool = setting(False, "Never use the network (as HF_HUB_OFFLINE=1); fail fast if not cached.")
    device: str = setting("auto", "auto|cpu|cuda[:N]|mps.")
    dtype: str = setting("auto", "auto|float32|bfloat16|float16 (auto: bf16/fp16 on GPU, fp32 on CPU).")
    allow_pickle: bool = setting(False, "Also load pickled *.bin weights (they can run code: trust needed).")
    trust_remote_code: bool = setting(False, "Run the model repository's own Python code.")
    verbose: bool = setting(False, "Show Transformers/Hub warnings and bars.")
    engine: str = setting(
        "auto",
        "auto|torch|ctranslate2: the inference engine (auto: CTranslate2 when it can run the model and every "
        "option asked for, else torch).",
    )
    quantize: str = setting("none", "none|int8: the CTranslate2 engine's weights (int8: faster, close to float32).")

    def check(self) -> None:
        finite(self)
        if self.dtype.strip().lower() not in DTYPES:
            raise UsageError(f"unknown --dtype {self.dtype!r}; use {'|'.join(DTYPES)}")
        if self.engine not in ENGINES:
            raise UsageError(f"unknown --engine {self.engine!r}; use {'|'.join(ENGINES)}")
        if self.quantize not in QUANTIZATIONS:
            raise UsageError(f"unknown --quantize {self.quantize!r}; use {'|'.join(QUANTIZATIONS)}")
        if self.quantize != "none" and self.engine == "torch":
            raise UsageError("--quantize applies to the CTranslate2 engine; it does not go with --engine torch")
