"""What every inference command does around the engine: length-sorted batches, and top-k in numpy.

A window of piped records is tokenised at once, then cut into batches of similar length (little
padding), run, and the results put back in input order by the command. Engines pad the batches
themselves (see :mod:`llmtool.engines.torch_engine`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

T = TypeVar("T")


def by_length(items: Sequence[T], length: Callable[[T], int], size: int) -> Iterator[list[T]]:
    """Batches of at most ``size`` items, shortest first."""
    ordered = sorted(items, key=length)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def top_k(
    logits: np.ndarray, k: int, candidates: Sequence[int] | None = None, exclude: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most probable ids per row of ``logits`` and their softmax probabilities.

    Probabilities of the top k only: exp(logit - logsumexp), without a vocabulary-sized softmax.
    ``candidates`` restricts the choice to those ids, ``exclude`` leaves those ids out (k results
    still, from the rest); probabilities stay over the whole vocabulary.
    """
    import numpy as np

    logits = np.asarray(logits, dtype=np.float32)
    peak = logits.max(axis=-1, keepdims=True)
    log_total = peak + np.log(np.exp(logits - peak).sum(axis=-1, keepdims=True))
    if len(exclude):
        logits = logits.copy()
        logits[:, list(exclude)] = -np.inf
    pool = logits if candidates is None else logits[:, list(candidates)]
    k = min(k, pool.shape[-1])
    part = (
        np.argpartition(-pool, k - 1, axis=-1)[:, :k] if k < pool.shape[-1] else np.tile(np.arange(k), (len(pool), 1))
    )
    order = (-np.take_along_axis(pool, part, axis=-1)).argsort(axis=-1, kind="stable")
    index = np.take_along_axis(part, order, axis=-1)
    probs = np.exp(np.take_along_axis(pool, index, axis=-1) - log_total)
    ids = index if candidates is None else np.asarray(candidates)[index]
    return ids, probs
