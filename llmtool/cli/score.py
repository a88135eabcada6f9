"""``llmtool score``: its flags, then :func:`llmtool.tasks.score.score` (the Python API's entry too)
on what it reads; nothing here loads a model."""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer

from llmtool.cli.common import handle_errors, write
from llmtool.cli.options import (
    MODEL,
    BatchOpt,
    BosOpt,
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
    SkipInvalidOpt,
    StrideOpt,
    VerboseOpt,
    WindowOpt,
    default_model,
    encoding,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.io.console import Console
from llmtool.jobs.run import NO_JOB, JobOptions, run_job
from llmtool.settings import ScoreOptions, defaults

SCORE = defaults(ScoreOptions)


@handle_errors
def score_command(
    text: Annotated[
        str | None, typer.Argument(help="Text to score; '-' or none: one text per stdin line.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="Causal LM (log-likelihood) or masked LM (pseudo-likelihood).",
            envvar=model_envvars("score"),
        ),
    ] = default_model("score"),
    total: Annotated[bool, option(ScoreOptions, "total", "--total")] = SCORE.total,
    stride: StrideOpt = SCORE.stride,
    max_length: WindowOpt = SCORE.max_length,
    bos: BosOpt = SCORE.bos,
    skip_invalid: SkipInvalidOpt = SCORE.skip_invalid,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = SCORE.batch_size,
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
    """Log-likelihood and perplexity of each line under a language model.

    Causal LMs: log P(text), natural log, every token given the ones before it.
    Masked LMs: pseudo-log-likelihood, each token masked in turn (pseudo-perplexity).
    Encoder-decoders: log P(target | source), from SOURCE<TAB>TARGET lines or a .csv/.tsv/.jsonl file.
    Long texts are scored in sliding windows (--max-length, --stride).

    text: PERPLEXITY<TAB>LOG_LIKELIHOOD<TAB>TOKENS<TAB>TEXT per line; the --total line ends in "total".
    jsonl: {"index", "input", "tokens", "log_likelihood", "perplexity"};
    total: {"total": true, "lines", "tokens", "log_likelihood", "perplexity"}.

    Example: llmtool score --model gpt2 --total < corpus.txt
    """
    from llmtool.io.streams import read_records
    from llmtool.tasks.score import FORMATTER, score
    from llmtool.tasks.seq2seq_pairs import is_pair_file, pair_records, seq2seq_folder

    output = output_format(fmt, json_flag)
    options = ScoreOptions(
        batch_size=batch_size, max_length=max_length, stride=stride, bos=bos, total=total, skip_invalid=skip_invalid
    )
    options.check()
    pairs = is_pair_file(input_path) and input_path is not None and seq2seq_folder(model)
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md)
        task = partial(score, options=options, model_options=model_options(**locals()))
        read = (
            partial(pair_records, source_column=column, encoding=encoding(encoding_name))  # (source, target) rows
            if pairs
            else partial(read_records, None, column=column, encoding=encoding(encoding_name))
        )
        return run_job(job, read, task, output, FORMATTER, Console(quiet, verbose))
    if pairs and input_path is not None:
        records = pair_records(input_path, column, None, encoding(encoding_name))  # (source, target) rows
    else:
        records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    results = score(records, options=options, model_options=model_options(**locals()))
    write(results, output, FORMATTER, Console(quiet, verbose))
