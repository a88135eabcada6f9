"""``llmtool evaluate``: its flags, then :func:`llmtool.tasks.evaluate.evaluate` (the Python API's entry too)
on what it reads; nothing here loads a model."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llmtool.cli.common import handle_errors
from llmtool.cli.options import (
    MODEL,
    BatchOpt,
    BosOpt,
    DeviceOpt,
    DtypeOpt,
    EncodingOpt,
    EngineOpt,
    FormatOpt,
    JsonOpt,
    LabelColumnOpt,
    OfflineOpt,
    PickleOpt,
    QuantizeOpt,
    QuietOpt,
    RemoteCodeOpt,
    RevisionOpt,
    StrideOpt,
    TextColumnOpt,
    TextPairColumnOpt,
    VerboseOpt,
    encoding,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.io.console import Console
from llmtool.settings import EvaluateOptions, defaults

EVAL = defaults(EvaluateOptions)


@handle_errors
def evaluate_command(
    data: Annotated[
        str,
        typer.Argument(
            help="Classifiers: a .csv/.tsv with text and label columns. LMs: a .txt (a line each), .jsonl or "
            ".csv; '-' is stdin. QA models: SQuAD .json, .jsonl or .csv (docs/commands/qa.md).",
            show_default=False,
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A sequence classifier, or a causal or masked LM (folder or Hub id).",
            envvar=model_envvars("evaluate"),
        ),
    ],
    text_column: TextColumnOpt = None,
    text_pair_column: TextPairColumnOpt = None,
    label_column: LabelColumnOpt = EVAL.label_column,
    encoding_name: EncodingOpt = "utf-8",
    max_length: Annotated[
        int | None, option(EvaluateOptions, "max_length", "--max-length", show_default=False, min=2)
    ] = EVAL.max_length,
    stride: StrideOpt = EVAL.stride,
    bos: BosOpt = EVAL.bos,
    plot: Annotated[
        str | None, option(EvaluateOptions, "plot", "--plot", metavar="FILE.png", show_default=False)
    ] = EVAL.plot,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = EVAL.batch_size,
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
) -> None:
    """Judge a model on held-out data: classifiers by accuracy and F1, language models by perplexity.

    Classifiers: accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix.
    Causal LMs: corpus perplexity; masked LMs: pseudo-perplexity (both pooled by token count).
    Question-answering models: exact match and F1 (percent), the official SQuAD measure.

    text: Rich tables on a terminal; a plain report otherwise (see docs/commands/evaluate.md).
    jsonl: one object: {"task", "model", "data", "examples", "accuracy", "macro_f1", "labels",
    "per_class", "confusion_matrix"} or {"task", "objective", ..., "tokens", "perplexity"}.
    tsv: metric<TAB>label<TAB>predicted<TAB>value, one number per row.

    Example: llmtool evaluate dev.csv --model ./sst2-model --text-column sentence --json
    """
    from llmtool.io.console import stdout_isatty
    from llmtool.io.formats import write_records
    from llmtool.tasks.evaluate import FORMATTER, evaluate, render_rich

    output = output_format(fmt, json_flag)
    options = EvaluateOptions(
        text_column=text_column,
        pair_column=text_pair_column,
        label_column=label_column,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        bos=bos,
        encoding=encoding(encoding_name),
        plot=plot,
    )
    options.check()
    console = Console(quiet, verbose)
    result = evaluate(data, options=options, model_options=model_options(**locals()), console=console)
    if output == "text" and stdout_isatty():
        render_rich(result, sys.stdout)
    else:
        write_records([result], output, FORMATTER)
