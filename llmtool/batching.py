"""The batching every inference command shares: length-sorted batches and padded tensors.

A window of piped records is tokenised at once, then cut into batches of similar length (little
padding), run, and the results put back in input order by the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def by_length(items: Sequence[T], length: Callable[[T], int], size: int) -> Iterator[list[T]]:
    """Batches of at most ``size`` items, shortest first."""
    ordered = sorted(items, key=length)
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


def pad(rows: Sequence[dict[str, list[int]]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded model inputs on ``device``: each key of the rows (``input_ids`` padded with
    ``pad_id``, others such as ``token_type_ids`` with 0) and an ``attention_mask``."""
    import torch

    longest = max(len(r["input_ids"]) for r in rows)
    inputs = {
        key: torch.full((len(rows), longest), pad_id if key == "input_ids" else 0, dtype=torch.long) for key in rows[0]
    }
    attention = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        for key, values in row.items():
            inputs[key][i, :n] = torch.tensor(values, dtype=torch.long)
        attention[i, :n] = 1
    inputs["attention_mask"] = attention
    return {key: value.to(device) for key, value in inputs.items()}
