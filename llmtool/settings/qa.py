"""``llmtool qa``'s settings: extractive question answering over a context (the defaults are those of
Transformers 4.x's question-answering pipeline)."""

from __future__ import annotations

from dataclasses import dataclass

from llmtool.errors import UsageError
from llmtool.settings.base import at_least, finite, setting


@dataclass
class QAOptions:
    top_k: int = setting(1, "Answers per question, best first.")
    max_answer_length: int = setting(15, "Longest answer, in tokens.")
    max_length: int | None = setting(
        None, "Tokens per window: question, a piece of context, special tokens (default: 384, or the model's limit)."
    )
    doc_stride: int | None = setting(
        None, "Tokens two neighbouring windows of a long context share (default: 128, at most half a window)."
    )
    max_question_length: int = setting(64, "Longest question, in tokens (a longer one is an input error).")
    no_answer: bool = setting(False, 'Allow "no answer" (SQuAD 2.0): an empty answer when the null score (CLS) wins.')
    null_threshold: float = setting(
        0.0, "With --no-answer: answer nothing only when the null score beats the best span's by more than this."
    )
    batch_size: int = setting(32, "Windows per forward pass.")
    skip_invalid: bool = setting(False, "Write an error record for a bad question and go on (default: stop, exit 2).")
    window: int = setting(8, "Batches read ahead and sorted by length together.")

    def check(self) -> None:
        finite(self)
        at_least(self.top_k, 1, "--top-k")
        at_least(self.max_answer_length, 1, "--max-answer-length")
        at_least(self.max_length, 8, "--max-length")
        at_least(self.doc_stride, 0, "--doc-stride")
        at_least(self.max_question_length, 1, "--max-question-length")
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.window, 1, "--window")
        if self.max_length is not None and self.doc_stride is not None and self.doc_stride >= self.max_length:
            raise UsageError(f"--doc-stride {self.doc_stride} must be under --max-length {self.max_length}")
        if not -1 <= self.null_threshold <= 1:
            raise UsageError("--null-threshold is a difference of probabilities: between -1 and 1")
