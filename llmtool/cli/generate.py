"""``llmtool generate``: its flags, then :func:`llmtool.tasks.generate.generate` (the Python API's entry too)
on what it reads; nothing here loads a model."""

from __future__ import annotations

import sys
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
from llmtool.settings import GenerateOptions, defaults

GEN = defaults(GenerateOptions)


@handle_errors
def generate_command(
    text: Annotated[
        str | None, typer.Argument(help="The prompt; '-' or none: one prompt per stdin line.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str, typer.Option("--model", "-m", help="Causal LM: Hub id or local folder.", envvar=model_envvars("generate"))
    ] = default_model("generate"),
    max_new_tokens: Annotated[
        int | None, option(GenerateOptions, "max_new_tokens", "--max-new-tokens", "-t", min=1, show_default=False)
    ] = GEN.max_new_tokens,
    greedy: Annotated[
        bool | None, option(GenerateOptions, "greedy", "--greedy/--sample", show_default=False)
    ] = GEN.greedy,
    temperature: Annotated[
        float | None, option(GenerateOptions, "temperature", "--temperature", show_default=False)
    ] = GEN.temperature,
    top_k: Annotated[int | None, option(GenerateOptions, "top_k", "--top-k", min=0, show_default=False)] = GEN.top_k,
    top_p: Annotated[float | None, option(GenerateOptions, "top_p", "--top-p", show_default=False)] = GEN.top_p,
    repetition_penalty: Annotated[
        float | None, option(GenerateOptions, "repetition_penalty", "--repetition-penalty", show_default=False)
    ] = GEN.repetition_penalty,
    num_return_sequences: Annotated[
        int, option(GenerateOptions, "num_return_sequences", "--num-return-sequences", "-n", min=1)
    ] = GEN.num_return_sequences,
    stop: Annotated[
        list[str] | None, option(GenerateOptions, "stop", "--stop", metavar="STR", show_default=False)
    ] = None,
    no_prompt: Annotated[bool, typer.Option("--no-prompt", help="Print the continuation only.")] = False,
    chat: Annotated[bool, option(GenerateOptions, "chat", "--chat")] = GEN.chat,
    stream: Annotated[
        bool | None, option(GenerateOptions, "stream", "--stream/--no-stream", show_default=False)
    ] = GEN.stream,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = GEN.batch_size,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    device: DeviceOpt = MODEL.device,
    dtype: DtypeOpt = MODEL.dtype,
    engine: EngineOpt = MODEL.engine,
    quantize: QuantizeOpt = MODEL.quantize,
    seed: SeedOpt = GEN.seed,
    allow_pickle: PickleOpt = MODEL.allow_pickle,
    trust_remote_code: RemoteCodeOpt = MODEL.trust_remote_code,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
    job: JobOptions = NO_JOB,
) -> None:
    """Continue each prompt with a causal language model (GPT-2, Llama, ...).

    text: each output followed by a newline (outputs may hold newlines: use --json to parse).
    jsonl: {"index", "input", "generations": [{"text", "finish_reason", "new_tokens"}]}.

    Example: llmtool generate "Once upon a time" --max-new-tokens 20 --seed 1
    """
    from llmtool.io.console import stdout_isatty
    from llmtool.io.streams import read_records
    from llmtool.tasks.generate import FORMATTER, generate, should_stream

    output = output_format(fmt, json_flag)
    options = GenerateOptions(
        max_new_tokens=max_new_tokens,
        greedy=greedy,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        num_return_sequences=num_return_sequences,
        stop=list(stop or []),
        include_prompt=not no_prompt,
        seed=seed,
        batch_size=batch_size,
        chat=chat,
        stream=stream,
    )
    options.check()
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md)
        task = partial(generate, options=options, model_options=model_options(**locals()))
        read = partial(read_records, None, column=column, encoding=encoding(encoding_name))
        return run_job(job, read, task, output, FORMATTER, Console(quiet, verbose))
    records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    streaming = should_stream(options, text not in (None, "-"), output == "text", stdout_isatty())
    results = generate(
        records, options=options, model_options=model_options(**locals()), stream_to=sys.stdout if streaming else None
    )
    write(results, output, FORMATTER, Console(quiet, verbose))
