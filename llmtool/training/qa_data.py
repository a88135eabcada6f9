"""``finetune --task qa``'s data: SQuAD files as checked rows, and rows as training windows.

Reading and checking is :func:`llmtool.tasks.evaluate_qa.read_squad` (the same files ``evaluate``
reads: nested SQuAD JSON v1.1/v2.0, JSON Lines, CSV/TSV). Each row keeps its first answer (SQuAD's
training set has one per question; an unanswerable question has none).

Windows follow run_qa.py's ``prepare_train_features``: the question (left-stripped) and the context
tokenized as a pair, only the context cut, ``stride`` tokens shared between windows; in each window
the answer's first and last tokens found through the offset map, or the CLS token (index 0) when the
answer is not wholly inside the window or there is none.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from llmtool.errors import UsageError
from llmtool.tasks.evaluate_qa import QAExample

DEFAULT_LIMIT = 384  # tokens per window when --max-length is not given (run_qa's max_seq_length), within the model's
STRIDE = 128  # tokens neighbouring windows share (run_qa's doc_stride), at most a third of the window


def stride_for(limit: int, asked: int | None = None) -> int:
    """The tokens neighbouring windows share: ``--doc-stride`` when given (less than half a window, so that
    the windows move on), else 128, at most a third of the window."""
    if asked is None:
        return min(STRIDE, limit // 3)
    if not 0 <= asked < limit // 2:
        raise UsageError(f"--doc-stride {asked}: must be at least 0 and less than half the {limit}-token window")
    return asked


def rows_of(examples: Sequence[QAExample]) -> Iterator[dict[str, Any]]:
    """One dataset row per question (the questions left out when empty): its first answer, or none."""
    for e in examples:
        if not e.question:
            continue
        text, start = e.answers[0] if e.answers else ("", -1)
        yield {
            "id": e.id,
            "question": e.question,
            "context": e.context,
            "answer_text": text,
            "answer_start": start,
            "line": e.line,
        }


def too_long(tokenizer: Any, questions: Sequence[str], limit: int, stride: int | None = None) -> list[int]:
    """The rows whose question leaves no more context per window than the stride (they cannot be cut)."""
    room = limit - stride_for(limit, stride) - tokenizer.num_special_tokens_to_add(pair=True)
    ids = tokenizer([q.lstrip() for q in questions], add_special_tokens=False)["input_ids"]
    return [i for i, row in enumerate(ids) if len(row) >= room]


class WindowEncoder:
    """The batched ``datasets.map`` function: rows -> windows with ``start_positions``/``end_positions``."""

    def __init__(self, tokenizer: Any, limit: int, stride: int | None = None) -> None:
        self.tokenizer, self.limit, self.stride = tokenizer, limit, stride_for(limit, stride)

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        skip = set(too_long(self.tokenizer, batch["question"], self.limit, self.stride))
        keep = [i for i in range(len(batch["question"])) if i not in skip]
        out: dict[str, list[Any]] = {"input_ids": [], "start_positions": [], "end_positions": []}
        if not keep:
            return out
        encoded = self.tokenizer(
            [batch["question"][i].lstrip() for i in keep],
            [batch["context"][i] for i in keep],
            truncation="only_second",
            max_length=self.limit,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in encoded]
        for key in keys:
            out[key] = []
        for w, row in enumerate(encoded["overflow_to_sample_mapping"]):
            source = keep[row]
            for key in keys:
                out[key].append(encoded[key][w])
            start, end = answer_tokens(
                encoded.sequence_ids(w),
                encoded["offset_mapping"][w],
                batch["answer_start"][source],
                len(batch["answer_text"][source]),
            )
            out["start_positions"].append(start)
            out["end_positions"].append(end)
        return out


def answer_tokens(
    sequence_ids: Sequence[int | None], offsets: Sequence[tuple[int, int]], start_char: int, length: int
) -> tuple[int, int]:
    """The answer's first and last token in a window, or (0, 0) (CLS) when it is not wholly inside or there is
    none: run_qa's rule."""
    if start_char < 0 or length == 0:
        return 0, 0
    end_char = start_char + length
    first = next(i for i, s in enumerate(sequence_ids) if s == 1)
    last = max(i for i, s in enumerate(sequence_ids) if s == 1)
    if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
        return 0, 0
    while first < len(offsets) and sequence_ids[first] == 1 and offsets[first][0] <= start_char:
        first += 1
    while sequence_ids[last] == 1 and offsets[last][1] >= end_char:
        last -= 1
    return first - 1, last + 1
