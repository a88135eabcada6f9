"""``llmtool summarize``: summaries with an encoder-decoder (BART, T5, Pegasus...), batched over piped
texts; the work is :mod:`llmtool.tasks.seq2seq`'s (the model's ``summarization`` parameters apply)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

from llmtool.io.inputs import Record, as_records
from llmtool.settings import ModelOptions, SummarizeOptions
from llmtool.tasks.registry import command
from llmtool.tasks.seq2seq import open_model

COMMAND = command("summarize")
DEFAULT_MODEL = COMMAND.default_model or ""


def summarize(
    inputs: str | Iterable[str] | Iterable[Record],
    *,
    model: str = DEFAULT_MODEL,
    options: SummarizeOptions | None = None,
    model_options: ModelOptions | None = None,
    stream_to: IO[str] | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Summarize each input; yields one plain dict per input, in input order (the records ``llmtool
    summarize --json`` prints), as :func:`llmtool.translate` does.

    ``kwargs`` are :class:`SummarizeOptions` fields (``num_beams=4``, ``max_new_tokens=60``)."""
    opts = options or SummarizeOptions(**kwargs)
    opts.check()
    runner, _ = open_model(COMMAND.name, "summarize", opts, model_options or ModelOptions(model=model))
    return runner(as_records(inputs), stream_to=stream_to)
