"""``llmtool translate``: translation with an encoder-decoder (Marian/OPUS-MT, T5, mBART, NLLB, M2M100),
batched over piped sentences; the work is :mod:`llmtool.tasks.seq2seq`'s."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, Any

from llmtool.io.inputs import Record, as_records
from llmtool.settings import ModelOptions, TranslateOptions
from llmtool.tasks.registry import command
from llmtool.tasks.seq2seq import open_model

COMMAND = command("translate")
DEFAULT_MODEL = COMMAND.default_model or ""


def translate(
    inputs: str | Iterable[str] | Iterable[Record],
    *,
    model: str = DEFAULT_MODEL,
    options: TranslateOptions | None = None,
    model_options: ModelOptions | None = None,
    stream_to: IO[str] | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Translate each input; yields one plain dict per input, in input order (the records ``llmtool
    translate --json`` prints): ``{"index", "input", "generations": [{"text", "finish_reason", "new_tokens"}]}``.

    ``kwargs`` are :class:`TranslateOptions` fields (``target_lang="fr"``, ``num_beams=4``)."""
    opts = options or TranslateOptions(**kwargs)
    opts.check()
    runner, _ = open_model(COMMAND.name, "translate", opts, model_options or ModelOptions(model=model))
    return runner(as_records(inputs), stream_to=stream_to)
