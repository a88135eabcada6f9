"""``llmtool classify``: its flags, then :func:`llmtool.tasks.classify.classify` (the Python API's entry too)
on what it reads; nothing here loads a model."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Annotated, Any

import typer

from llmtool.cli.common import handle_errors, write
from llmtool.cli.options import (
    MODEL,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    EncodingOpt,
    EngineOpt,
    InputOpt,
    JsonOpt,
    MaxLengthOpt,
    OfflineOpt,
    PickleOpt,
    QuantizeOpt,
    QuietOpt,
    RemoteCodeOpt,
    RevisionOpt,
    SkipInvalidOpt,
    TextColumnOpt,
    TextPairColumnOpt,
    VerboseOpt,
    encoding,
    mark_environment,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.io.console import Console
from llmtool.jobs.run import NO_JOB, JobOptions, run_job
from llmtool.settings import ClassifyOptions, defaults

CLASSIFY = defaults(ClassifyOptions)


def job_examples(path: str, **columns: Any) -> Iterator[Any]:
    """One input file's examples, for a job (:mod:`llmtool.jobs`)."""
    from llmtool.tasks.classify import read_examples

    return read_examples(None, None, path, **columns).items


ClassifierOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Sequence classifier: a folder from `llmtool finetune`, or a Hub id.",
        envvar=model_envvars("classify"),
    ),
]


@handle_errors
def classify_command(
    model: ClassifierOpt,
    text: Annotated[
        str | None, typer.Argument(help="Text to classify; '-' or none: one text per stdin line.", show_default=False)
    ] = None,
    text_pair: Annotated[
        str | None, typer.Argument(help="Second text, for sentence-pair models.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    text_column: TextColumnOpt = None,
    text_pair_column: TextPairColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    top_k: Annotated[int, option(ClassifyOptions, "top_k", "--top-k", "-k", min=1)] = CLASSIFY.top_k,
    max_length: MaxLengthOpt = CLASSIFY.max_length,
    skip_invalid: SkipInvalidOpt = CLASSIFY.skip_invalid,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Output: text, jsonl, tsv, or csv (the input rows with prediction columns appended).",
            metavar="text|jsonl|tsv|csv",
            envvar="LLMTOOL_FORMAT",
            callback=mark_environment,
        ),
    ] = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = CLASSIFY.batch_size,
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
    """Label each text (or text pair) with a fine-tuned sequence classifier.

    Labels are the model's own names (id2label in its config).

    text: LABEL<TAB>PROBABILITY per input, one pair per --top-k.
    jsonl: {"index", "input", "label", "score", "predictions": [{"label", "id", "score"}]}.
    csv: each input row (or text) with predicted_label, predicted_score appended.

    Example: llmtool classify --model ./sst2-model --input reviews.csv --text-column review --format csv
    """
    from llmtool.tasks.classify import FORMATTER, classify, csv_formatter, read_examples

    output = output_format(fmt, json_flag, extra=("csv",))
    options = ClassifyOptions(top_k=top_k, batch_size=batch_size, max_length=max_length, skip_invalid=skip_invalid)
    options.check()
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md)
        task = partial(classify, options=options, model_options=model_options(**locals()))
        enc = encoding(encoding_name)
        read = partial(job_examples, text_column=text_column, pair_column=text_pair_column, encoding=enc)
        return run_job(job, read, task, output, FORMATTER, Console(quiet, verbose))
    examples = read_examples(
        text,
        text_pair,
        input_path,
        text_column=text_column,
        pair_column=text_pair_column,
        encoding=encoding(encoding_name),
    )
    formatter = FORMATTER
    if output == "csv":
        formatter = csv_formatter(examples.header, examples.has_pair, top_k, skip_invalid)
    results = classify(
        examples.items, options=options, model_options=model_options(**locals()), with_rows=output == "csv"
    )
    write(results, output, formatter, Console(quiet, verbose))
