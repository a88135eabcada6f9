"""``llmtool qa``: its flags, then :func:`llmtool.tasks.qa.qa` (the Python API's entry too) on what it reads;
nothing here loads a model."""

from __future__ import annotations

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
    SkipInvalidOpt,
    VerboseOpt,
    default_model,
    encoding,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.io.console import Console
from llmtool.settings import QAOptions, defaults

QA = defaults(QAOptions)


def _column(flag: str, what: str) -> object:
    return typer.Option(flag, help=f"Column (or JSON field) of the {what} (default: {what}).", show_default=False)


@handle_errors
def qa_command(
    question: Annotated[
        str | None,
        typer.Argument(
            help="The question (with --context); '-' or none: read questions from stdin.", show_default=False
        ),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(
            "--context",
            "-c",
            help="Answer from this text file (all of it); questions: QUESTION, or a line each from --input or stdin.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    input_path: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="Questions from FILE: with --context a line each; else .csv/.tsv (question and context columns) "
            'or .jsonl ({"question", "context"[, "id"]}). Without either, stdin is JSON Lines.',
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    question_column: Annotated[str | None, _column("--question-column", "question")] = None,
    context_column: Annotated[str | None, _column("--context-column", "context")] = None,
    id_column: Annotated[str | None, _column("--id-column", "id")] = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A question-answering model (BertForQuestionAnswering, ...; `llmtool finetune --task qa`).",
            envvar=model_envvars("qa"),
        ),
    ] = default_model("qa"),
    top_k: Annotated[int, option(QAOptions, "top_k", "--top-k", "-k", min=1)] = QA.top_k,
    max_answer_length: Annotated[
        int, option(QAOptions, "max_answer_length", "--max-answer-length", min=1)
    ] = QA.max_answer_length,
    max_length: Annotated[
        int | None, option(QAOptions, "max_length", "--max-length", min=8, show_default=False)
    ] = QA.max_length,
    doc_stride: Annotated[
        int | None, option(QAOptions, "doc_stride", "--doc-stride", min=0, show_default=False)
    ] = QA.doc_stride,
    max_question_length: Annotated[
        int, option(QAOptions, "max_question_length", "--max-question-length", min=1)
    ] = QA.max_question_length,
    no_answer: Annotated[bool, option(QAOptions, "no_answer", "--no-answer")] = QA.no_answer,
    null_threshold: Annotated[float, option(QAOptions, "null_threshold", "--null-threshold")] = QA.null_threshold,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = QA.batch_size,
    skip_invalid: SkipInvalidOpt = False,
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
    """Answer questions from a context: the answer is a span of the context (extractive QA, SQuAD-style).

    Long contexts are read in windows of --max-length tokens sharing --doc-stride tokens.
    --no-answer allows an empty answer (SQuAD 2.0) when the model's null score wins.

    text: the answer, a line per question (with --top-k: SCORE<TAB>ANSWER lines).
    jsonl: {"index", ["rank",] "answer", "start", "end", "score"[, "id"]}: context[start:end] == answer.

    Example: llmtool qa "Who wrote it?" --context story.txt --model ./squad-model
    """
    from llmtool.tasks.qa import FORMATTER, qa, read_questions

    output = output_format(fmt, json_flag)
    options = QAOptions(
        top_k=top_k,
        max_answer_length=max_answer_length,
        max_length=max_length,
        doc_stride=doc_stride,
        max_question_length=max_question_length,
        no_answer=no_answer,
        null_threshold=null_threshold,
        batch_size=batch_size,
        skip_invalid=skip_invalid,
    )
    options.check()
    if null_threshold != QA.null_threshold and not no_answer:
        from llmtool.errors import UsageError

        raise UsageError("--null-threshold goes with --no-answer")
    questions = read_questions(
        question,
        input_path,
        context,
        question_column=question_column,
        context_column=context_column,
        id_column=id_column,
        encoding=encoding(encoding_name),
    )
    results = qa(questions, options=options, model_options=model_options(**locals()))
    write(results, output, FORMATTER, Console(quiet, verbose))
