"""``llmtool tag``'s settings (token classification)."""

from __future__ import annotations

from dataclasses import dataclass

from llmtool.errors import UsageError
from llmtool.settings.base import at_least, finite, setting

TAG_AGGREGATIONS = ("none", "simple", "first", "average", "max")


@dataclass
class TagOptions:
    aggregation: str = setting(
        "simple",
        "How tokens become entities, as Transformers' token-classification pipeline: none (one per token), "
        "simple (adjacent tokens of a type grouped), first, average or max (one label per word first).",
    )
    ignore_labels: tuple[str, ...] = setting(("O",), "Labels that are not entities (comma-separated on the CLI).")
    max_length: int | None = setting(None, "Window size in tokens (default: the model's limit).")
    stride: int | None = setting(
        None,
        "Lines longer than a window: tokens shared by consecutive windows (default: a quarter of the window). "
        "Entities are merged across windows; nothing is truncated.",
    )
    batch_size: int = setting(32, "Windows per forward pass.")
    skip_invalid: bool = setting(False, "Write an error record for a bad line and go on (default: stop, exit 2).")
    window: int = setting(8, "Batches read ahead and sorted by length together.")

    def check(self) -> None:
        finite(self)
        if self.aggregation not in TAG_AGGREGATIONS:
            raise UsageError(f"unknown --aggregation {self.aggregation!r}; use {', '.join(TAG_AGGREGATIONS)}")
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.max_length, 3, "--max-length")
        if self.stride is not None:
            at_least(self.stride, 0, "--stride")
            if self.max_length is not None and self.stride >= self.max_length:
                raise UsageError(f"--stride must be below the window (--max-length {self.max_length})")
