"""``llmtool next-sentence``: its flags, then :func:`llmtool.tasks.next_sentence.next_sentence` (the Python
API's entry too) on what it reads; nothing here loads a model."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer

from llmtool.cli.common import handle_errors, write
from llmtool.cli.options import (
    MODEL,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    EncodingOpt,
    EngineOpt,
    FormatOpt,
    JsonOpt,
    OfflineOpt,
    PickleOpt,
    QuantizeOpt,
    QuietOpt,
    RemoteCodeOpt,
    RevisionOpt,
    VerboseOpt,
    default_model,
    encoding,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.io.console import Console
from llmtool.jobs.run import NO_JOB, JobOptions, run_job
from llmtool.settings import NextSentenceOptions, defaults

NSP = defaults(NextSentenceOptions)


@handle_errors
def next_sentence_command(
    first: Annotated[
        str | None,
        typer.Argument(help="Sentence A; '-' or none: read A<TAB>B lines from stdin.", show_default=False),
    ] = None,
    second: Annotated[str | None, typer.Argument(help="Sentence B.", show_default=False)] = None,
    input_path: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="Read pairs from FILE: .csv/.tsv (two columns, with a header) or text (A<TAB>B lines). '-' is stdin.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    first_column: Annotated[
        str | None,
        typer.Option("--first-column", help="CSV column of sentence A (default: the first).", show_default=False),
    ] = None,
    second_column: Annotated[
        str | None,
        typer.Option("--second-column", help="CSV column of sentence B (default: the second).", show_default=False),
    ] = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A BERT with its next-sentence head (BertForPreTraining or ...ForNSP).",
            envvar=model_envvars("next-sentence"),
        ),
    ] = default_model("next-sentence"),
    max_length: Annotated[
        int | None, option(NextSentenceOptions, "max_length", "--max-length", show_default=False, min=4)
    ] = NSP.max_length,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = NSP.batch_size,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    device: DeviceOpt = MODEL.device,
    dtype: DtypeOpt = MODEL.dtype,
    engine: EngineOpt = MODEL.engine,
    quantize: QuantizeOpt = MODEL.quantize,
    allow_pickle: PickleOpt = MODEL.allow_pickle,
    trust_remote_code: RemoteCodeOpt = MODEL.trust_remote_code,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
    job: JobOptions = NO_JOB,
) -> None:
    """Probability that sentence B follows sentence A, from BERT's next-sentence-prediction head.

    text: PROBABILITY<TAB>A<TAB>B per pair (4 decimals).
    jsonl: {"index", "first", "second", "is_next"}.

    Example: llmtool next-sentence --model ./bert-nsp "I was hungry." "I ate a sandwich."
    """
    from llmtool.tasks.next_sentence import FORMATTER, next_sentence, read_pairs

    output = output_format(fmt, json_flag)
    options = NextSentenceOptions(batch_size=batch_size, max_length=max_length)
    options.check()
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md)
        task = partial(next_sentence, options=options, model_options=model_options(**locals()))
        read = partial(
            read_pairs,
            None,
            None,
            first_column=first_column,
            second_column=second_column,
            encoding=encoding(encoding_name),
        )
        return run_job(job, read, task, output, FORMATTER, Console(quiet, verbose))
    pairs = read_pairs(
        first,
        second,
        input_path,
        first_column=first_column,
        second_column=second_column,
        encoding=encoding(encoding_name),
    )
    results = next_sentence(pairs, options=options, model_options=model_options(**locals()))
    write(results, output, FORMATTER, Console(quiet, verbose))
