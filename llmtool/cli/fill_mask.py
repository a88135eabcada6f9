"""``llmtool fill-mask``: its flags, then :func:`llmtool.tasks.fill_mask.fill_mask` (the Python API's entry too)
on what it reads; nothing here loads a model."""

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
from llmtool.jobs.run import NO_JOB, JobOptions, run_job
from llmtool.settings import FillMaskOptions, defaults

FILL = defaults(FillMaskOptions)


@handle_errors
def fill_mask_command(
    text: Annotated[
        str | None, typer.Argument(help="Text with one or more [MASK]; '-' or none: read stdin.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str, typer.Option("--model", "-m", help="Masked LM: Hub id or local folder.", envvar=model_envvars("fill-mask"))
    ] = default_model("fill-mask"),
    top_k: Annotated[int, option(FillMaskOptions, "top_k", "--top-k", "-k", min=1)] = FILL.top_k,
    targets: Annotated[str | None, option(FillMaskOptions, "targets", "--targets", show_default=False)] = None,
    allow_special: Annotated[bool, option(FillMaskOptions, "allow_special", "--allow-special")] = FILL.allow_special,
    skip_invalid: SkipInvalidOpt = FILL.skip_invalid,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = FILL.batch_size,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    device: DeviceOpt = MODEL.device,
    dtype: DtypeOpt = MODEL.dtype,
    engine: EngineOpt = MODEL.engine,
    quantize: QuantizeOpt = MODEL.quantize,
    seed: SeedOpt = FILL.seed,
    allow_pickle: PickleOpt = MODEL.allow_pickle,
    trust_remote_code: RemoteCodeOpt = MODEL.trust_remote_code,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
    job: JobOptions = NO_JOB,
) -> None:
    """Predict the words behind [MASK] with a masked language model (BERT, RoBERTa, ...).

    text: each line with its masks replaced by the top prediction. jsonl: every mask's top-k
    tokens, ids and scores.

    Example: echo "The capital of France is [MASK]." | llmtool fill-mask --json
    """
    from llmtool.io.streams import read_records
    from llmtool.tasks.fill_mask import FORMATTER, fill_mask

    output = output_format(fmt, json_flag)
    target_list = [t.strip() for t in targets.split(",") if t.strip()] if targets is not None else None
    options = FillMaskOptions(
        top_k=top_k,
        targets=target_list,
        allow_special=allow_special,
        batch_size=batch_size,
        skip_invalid=skip_invalid,
        seed=seed,
    )
    options.check()
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md)
        task = partial(fill_mask, options=options, model_options=model_options(**locals()))
        read = partial(read_records, None, column=column, encoding=encoding(encoding_name))
        return run_job(job, read, task, output, FORMATTER, Console(quiet, verbose))
    records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    results = fill_mask(records, options=options, model_options=model_options(**locals()))
    write(results, output, FORMATTER, Console(quiet, verbose))
