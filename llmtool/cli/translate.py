"""``llmtool translate`` and ``llmtool summarize``: their flags, then :func:`llmtool.tasks.translate.translate`
or :func:`llmtool.tasks.summarize.summarize` (the Python API's entries too) on what they read; nothing
here loads a model."""

from __future__ import annotations

import sys
from dataclasses import fields
from functools import partial
from typing import Annotated, Any

import typer

from llmtool.cli.common import handle_errors, write
from llmtool.cli.options import (
    MODEL,
    ColumnOpt,
    DeviceOpt,
    DtypeOpt,
    EncodingOpt,
    EngineOpt,
    FormatOpt,
    InputOpt,
    JsonOpt,
    OfflineOpt,
    PickleOpt,
    QuantizeOpt,
    QuietOpt,
    RemoteCodeOpt,
    RevisionOpt,
    SeedOpt,
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
from llmtool.settings import Seq2SeqOptions, SummarizeOptions, TranslateOptions, defaults

S2S = defaults(Seq2SeqOptions)
Seq2SeqBatchOpt = Annotated[
    int, option(Seq2SeqOptions, "batch_size", "--batch-size", "-b", min=1, envvar="LLMTOOL_BATCH_SIZE")
]
S = Seq2SeqOptions

TextArg = Annotated[
    str | None, typer.Argument(help="The text; '-' or none: one text per stdin line.", show_default=False)
]
MaxNewOpt = Annotated[int | None, option(S, "max_new_tokens", "--max-new-tokens", "-t", min=1, show_default=False)]
BeamsOpt = Annotated[int | None, option(S, "num_beams", "--beams", min=1, show_default=False)]
GreedyOpt = Annotated[bool | None, option(S, "greedy", "--greedy/--sample", show_default=False)]
TemperatureOpt = Annotated[float | None, option(S, "temperature", "--temperature", show_default=False)]
TopKOpt = Annotated[int | None, option(S, "top_k", "--top-k", min=0, show_default=False)]
TopPOpt = Annotated[float | None, option(S, "top_p", "--top-p", show_default=False)]
LengthPenaltyOpt = Annotated[float | None, option(S, "length_penalty", "--length-penalty", show_default=False)]
NoRepeatOpt = Annotated[
    int | None, option(S, "no_repeat_ngram_size", "--no-repeat-ngram-size", min=0, show_default=False)
]
ReturnOpt = Annotated[int, option(S, "num_return_sequences", "--num-return-sequences", "-n", min=1)]
PrefixOpt = Annotated[str | None, option(S, "prefix", "--prefix", metavar="STR", show_default=False)]
MaxLengthOpt = Annotated[int | None, option(S, "max_length", "--max-length", min=2, show_default=False)]
StreamOpt = Annotated[bool | None, option(S, "stream", "--stream/--no-stream", show_default=False)]


def _run(command: str, text: str | None, settings: type[Seq2SeqOptions], given: dict[str, Any]) -> None:
    from llmtool.io.console import stdout_isatty
    from llmtool.io.streams import read_records
    from llmtool.tasks.generate import FORMATTER
    from llmtool.tasks.seq2seq import should_stream

    output = output_format(given["fmt"], given["json_flag"])
    # each settings field from the flag of the same name (--beams fills num_beams)
    options = settings(**{f.name: given["beams" if f.name == "num_beams" else f.name] for f in fields(settings)})
    options.check()
    if command == "translate":
        from llmtool.tasks.translate import translate

        assert isinstance(options, TranslateOptions)
        run = partial(translate, options=options, model_options=model_options(**given))
    else:
        from llmtool.tasks.summarize import summarize

        assert isinstance(options, SummarizeOptions)
        run = partial(summarize, options=options, model_options=model_options(**given))
    job: JobOptions = given["job"]
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md)
        read = partial(read_records, None, column=given["column"], encoding=encoding(given["encoding_name"]))
        return run_job(job, read, run, output, FORMATTER, Console(given["quiet"], given["verbose"]))
    records = read_records(text, given["input_path"], given["column"], encoding=encoding(given["encoding_name"]))
    streaming = should_stream(options, text not in (None, "-"), output == "text", stdout_isatty())
    results = run(records, stream_to=sys.stdout if streaming else None)
    write(results, output, FORMATTER, Console(given["quiet"], given["verbose"]))


@handle_errors
def translate_command(
    text: TextArg = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Encoder-decoder: Hub id or local folder.", envvar=model_envvars("translate")
        ),
    ] = default_model("translate"),
    source_lang: Annotated[
        str | None, option(TranslateOptions, "source_lang", "--source-lang", "-s", show_default=False)
    ] = None,
    target_lang: Annotated[
        str | None, option(TranslateOptions, "target_lang", "--target-lang", "-l", show_default=False)
    ] = None,
    max_new_tokens: MaxNewOpt = S2S.max_new_tokens,
    beams: BeamsOpt = S2S.num_beams,
    greedy: GreedyOpt = S2S.greedy,
    temperature: TemperatureOpt = S2S.temperature,
    top_k: TopKOpt = S2S.top_k,
    top_p: TopPOpt = S2S.top_p,
    length_penalty: LengthPenaltyOpt = S2S.length_penalty,
    no_repeat_ngram_size: NoRepeatOpt = S2S.no_repeat_ngram_size,
    num_return_sequences: ReturnOpt = S2S.num_return_sequences,
    prefix: PrefixOpt = S2S.prefix,
    max_length: MaxLengthOpt = S2S.max_length,
    stream: StreamOpt = S2S.stream,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: Seq2SeqBatchOpt = S2S.batch_size,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    device: DeviceOpt = MODEL.device,
    dtype: DtypeOpt = MODEL.dtype,
    engine: EngineOpt = MODEL.engine,
    quantize: QuantizeOpt = MODEL.quantize,
    seed: SeedOpt = S2S.seed,
    allow_pickle: PickleOpt = MODEL.allow_pickle,
    trust_remote_code: RemoteCodeOpt = MODEL.trust_remote_code,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
    job: JobOptions = NO_JOB,
) -> None:
    """Translate each text with an encoder-decoder (Marian/OPUS-MT, T5, mBART, NLLB, M2M100).

    text: each translation followed by a newline.
    jsonl: {"index", "input", "generations": [{"text", "finish_reason", "new_tokens"}]}.

    Example: llmtool translate "The cat sleeps." -m Helsinki-NLP/opus-mt-en-fr --beams 4
    """
    _run("translate", text, TranslateOptions, locals())


@handle_errors
def summarize_command(
    text: TextArg = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Encoder-decoder: Hub id or local folder.", envvar=model_envvars("summarize")
        ),
    ] = default_model("summarize"),
    max_new_tokens: MaxNewOpt = S2S.max_new_tokens,
    beams: BeamsOpt = S2S.num_beams,
    greedy: GreedyOpt = S2S.greedy,
    temperature: TemperatureOpt = S2S.temperature,
    top_k: TopKOpt = S2S.top_k,
    top_p: TopPOpt = S2S.top_p,
    length_penalty: LengthPenaltyOpt = S2S.length_penalty,
    no_repeat_ngram_size: NoRepeatOpt = S2S.no_repeat_ngram_size,
    num_return_sequences: ReturnOpt = S2S.num_return_sequences,
    prefix: PrefixOpt = S2S.prefix,
    max_length: MaxLengthOpt = S2S.max_length,
    stream: StreamOpt = S2S.stream,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: Seq2SeqBatchOpt = S2S.batch_size,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    device: DeviceOpt = MODEL.device,
    dtype: DtypeOpt = MODEL.dtype,
    engine: EngineOpt = MODEL.engine,
    quantize: QuantizeOpt = MODEL.quantize,
    seed: SeedOpt = S2S.seed,
    allow_pickle: PickleOpt = MODEL.allow_pickle,
    trust_remote_code: RemoteCodeOpt = MODEL.trust_remote_code,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
    job: JobOptions = NO_JOB,
) -> None:
    """Summarize each text with an encoder-decoder (BART, T5, Pegasus, ...).

    text: each summary followed by a newline.
    jsonl: {"index", "input", "generations": [{"text", "finish_reason", "new_tokens"}]}.

    Example: llmtool summarize --input article.txt -m sshleifer/distilbart-cnn-12-6 --beams 4
    """
    _run("summarize", text, SummarizeOptions, locals())
