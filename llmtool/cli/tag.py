"""``llmtool tag``: its flags, then :func:`llmtool.tasks.tag.tag` (the Python API's entry too) on what it
reads; nothing here loads a model."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer

from llmtool.cli.common import handle_errors, write
from llmtool.cli.options import (
    MODEL,
    BatchOpt,
    ColumnOpt,
    DeviceOpt,
    DtypeOpt,
    EncodingOpt,
    EngineOpt,
    InputOpt,
    JsonOpt,
    OfflineOpt,
    PickleOpt,
    QuantizeOpt,
    QuietOpt,
    RemoteCodeOpt,
    RevisionOpt,
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
from llmtool.settings import TAG_AGGREGATIONS, TagOptions, defaults

TAG = defaults(TagOptions)

TaggerOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Token classifier (NER, part of speech...): a folder from `llmtool finetune --task tag`, or a Hub id.",
        envvar=model_envvars("tag"),
    ),
]


@handle_errors
def tag_command(
    model: TaggerOpt,
    text: Annotated[
        str | None, typer.Argument(help="Text to tag; '-' or none: one text per stdin line.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    aggregation: Annotated[
        str, option(TagOptions, "aggregation", "--aggregation", "-a", metavar="|".join(TAG_AGGREGATIONS))
    ] = TAG.aggregation,
    ignore_labels: Annotated[str, option(TagOptions, "ignore_labels", "--ignore-labels", metavar="LABELS")] = ",".join(
        TAG.ignore_labels
    ),
    max_length: Annotated[
        int | None, option(TagOptions, "max_length", "--max-length", min=3, show_default=False)
    ] = TAG.max_length,
    stride: Annotated[int | None, option(TagOptions, "stride", "--stride", min=0, show_default=False)] = TAG.stride,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Output: text (entities marked inline: [Paris](LOC)), jsonl, tsv (a row per entity), or conll "
            "(word and IOB2 tag per line, a blank line after each input).",
            metavar="text|jsonl|tsv|conll",
            envvar="LLMTOOL_FORMAT",
            callback=mark_environment,
        ),
    ] = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = TAG.batch_size,
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
    """Label the tokens of each line with a token classifier, grouped into entities with character offsets.

    Entities are grouped as Transformers' token-classification pipeline does (--aggregation); lines
    longer than the model's window are read in overlapping windows (--stride), never truncated.

    text: the line with each entity marked inline, e.g. "the capital is [Paris](LOC) .".
    jsonl: {"index", "input", "entities": [{"text", "label", "start", "end", "score"}]}, text == input[start:end].
    conll: "word TAG" (IOB2) per word, a blank line after each input, for conlleval-style tools.

    Example: llmtool tag --model ./ner-model "Angela Merkel visited Paris"
    """
    from llmtool.io.streams import read_records
    from llmtool.tasks.tag import CONLL, FORMATTER, tag

    output = output_format(fmt, json_flag, extra=("conll",))
    labels = tuple(label.strip() for label in ignore_labels.split(",") if label.strip())
    options = TagOptions(
        aggregation=aggregation, ignore_labels=labels, max_length=max_length, stride=stride, batch_size=batch_size
    )
    options.check()
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md); conll is refused there (text, jsonl, tsv)
        task = partial(tag, options=options, model_options=model_options(**locals()))
        read = partial(read_records, None, column=column, encoding=encoding(encoding_name))
        return run_job(job, read, task, output, FORMATTER, Console(quiet, verbose))
    records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    conll = output == "conll"
    results = tag(records, options=options, model_options=model_options(**locals()), with_words=conll)
    write(results, "text" if conll else output, CONLL if conll else FORMATTER, Console(quiet, verbose))
