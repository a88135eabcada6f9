"""The CTranslate2 engine's run time, shared by :mod:`~llmtool.engines.ct2.encoder` and
:mod:`~llmtool.engines.ct2.decoder`: loading a checked entry, CTranslate2 arrays as numpy arrays,
and the numpy pieces of the heads CTranslate2 leaves out (activations, layer norm).

Only ctranslate2 and numpy are imported here: never torch or transformers.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
import numpy.typing as npt

from llmtool.engines.base import FloatArray
from llmtool.engines.ct2.cache import FORMAT, MODEL_META, read_json, verify_entry
from llmtool.errors import ModelError


def load_checked(entry: str | os.PathLike[str], kind: str) -> tuple[Path, dict[str, Any]]:
    """The entry's folder and its ``model_meta.json``, once the entry matches its manifest and holds
    a model of this kind ("encoder" or "decoder"); :class:`ModelError` otherwise."""
    where = Path(entry)
    problem = verify_entry(where)
    if problem is not None:
        raise ModelError(f"the CTranslate2 entry {where} is damaged ({problem}); run again to convert it anew")
    meta = read_json(where / MODEL_META)
    if meta.get("format") != FORMAT or meta.get("kind") != kind:
        raise ModelError(f"the CTranslate2 entry {where} holds a {meta.get('kind')} model, not an {kind}")
    return where, meta


def to_numpy(value: ctranslate2.StorageView) -> FloatArray:
    """A CTranslate2 array as a float32 numpy array on the CPU (a copy)."""
    if value.dtype != ctranslate2.DataType.float32:
        value = value.to(ctranslate2.DataType.float32)
    if value.device != "cpu":
        value = value.to_device(ctranslate2.Device.cpu)
    return np.array(value, dtype=np.float32, copy=True)


def erf(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """erf, exactly (math.erf per element: the heads see few rows, so this stays cheap)."""
    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=np.float64)


def activation(name: str, x: FloatArray) -> FloatArray:
    """The named activation (as Transformers computes it), elementwise."""
    if name in ("gelu", "gelu_python"):
        return (0.5 * x * (1.0 + erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(np.float32)
    if name == "quick_gelu":
        return (x / (1.0 + np.exp(-1.702 * x))).astype(np.float32)
    if name == "relu":
        return np.maximum(x, 0).astype(np.float32)
    if name in ("silu", "swish"):
        return (x / (1.0 + np.exp(-x))).astype(np.float32)
    raise ModelError(f"the ctranslate2 engine does not compute the {name} activation")


def layer_norm(x: FloatArray, weight: FloatArray, bias: FloatArray, eps: float) -> FloatArray:
    """Layer normalization over the last axis."""
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32)


def threads(intra_threads: int | None) -> int:
    """CTranslate2's ``intra_threads``: as given, else ``$OMP_NUM_THREADS``, else 0 (its own default)."""
    if intra_threads is not None:
        return intra_threads
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() else 0


def wait_for(pending: Sequence[Any], failure: list[BaseException]) -> list[Any]:
    """The results of an asynchronous CTranslate2 call, polled so that Ctrl-C and SIGTERM reach this thread.
    An exception here, or one a callback carried into ``failure`` from CTranslate2's threads, is raised
    once every job has finished (none is left running)."""
    results: list[Any] = []
    try:
        while not all(r.done() for r in pending):
            time.sleep(0.002)
        results = [r.result() for r in pending]
    except BaseException as exc:
        failure.append(exc)
        for r in pending:
            with contextlib.suppress(Exception):
                r.result()
    if failure:
        raise failure[0]
    return results
