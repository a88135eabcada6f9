"""The sentence-embedding commands: ``embed`` (a vector per line) and ``similar`` (lines ranked by cosine
similarity to a query). Each reads its input, builds its settings and calls its task module's one entry."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Annotated, Any

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
    VerboseOpt,
    default_model,
    encoding,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.errors import UsageError
from llmtool.io.streams import Console, Record
from llmtool.jobs.run import NO_JOB, JobOptions, run_job
from llmtool.settings import EmbedOptions, SimilarOptions, defaults

EMBED = defaults(EmbedOptions)
SIMILAR = defaults(SimilarOptions)

PoolingOpt = Annotated[
    str | None, option(EmbedOptions, "pooling", "--pooling", metavar="mean|cls|max|lasttoken", show_default=False)
]
NormalizeOpt = Annotated[
    bool | None, option(EmbedOptions, "normalize", "--normalize/--no-normalize", show_default=False)
]
PromptOpt = Annotated[str | None, option(EmbedOptions, "prompt", "--prompt", metavar="STR", show_default=False)]
PromptNameOpt = Annotated[
    str | None, option(EmbedOptions, "prompt_name", "--prompt-name", metavar="NAME", show_default=False)
]
EmbedMaxLengthOpt = Annotated[int | None, option(EmbedOptions, "max_length", "--max-length", min=2, show_default=False)]


def _model_option(command: str) -> object:
    return typer.Option(
        "--model",
        "-m",
        help="Sentence encoder (a sentence-transformers model, or any BERT-like encoder): Hub id or local folder.",
        envvar=model_envvars(command),
    )


@handle_errors
def embed_command(
    text: Annotated[
        str | None, typer.Argument(help="Text to embed; '-' or none: one text per stdin line.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[str, _model_option("embed")] = default_model("embed"),
    pooling: PoolingOpt = EMBED.pooling,
    normalize: NormalizeOpt = EMBED.normalize,
    prompt: PromptOpt = EMBED.prompt,
    prompt_name: PromptNameOpt = EMBED.prompt_name,
    max_length: EmbedMaxLengthOpt = EMBED.max_length,
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the vectors as one float32 matrix to FILE.npy (row i: input record i) instead of stdout.",
            metavar="FILE.npy",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = EMBED.batch_size,
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
    """One sentence vector per input line, pooled and normalised as the model's sentence-transformers files say.

    text: INDEX<TAB>V1 V2 ... VN per input (awk: $1 is the index, $2.. the values).
    jsonl: {"index", "input", "embedding": [...]}. tsv: index, input, embedding (space-separated).
    Values carry 8 decimals; --output FILE.npy keeps float32 exactly.

    Example: llmtool embed --input sentences.txt --output vectors.npy
    """
    from llmtool.io.streams import read_records
    from llmtool.tasks.embed import FORMATTER, check_npy_path, embed, open_embedder, write_npy

    out_format = output_format(fmt, json_flag)
    if output is not None:
        if fmt != "text" or json_flag:
            raise UsageError("--output writes a .npy matrix; it does not go with --format or --json")
        check_npy_path(output)
    options = EmbedOptions(
        pooling=pooling,
        normalize=normalize,
        prompt=prompt,
        prompt_name=prompt_name,
        max_length=max_length,
        batch_size=batch_size,
    )
    options.check()
    if job.active and output is not None:
        raise UsageError("--output FILE.npy does not go with --output-dir (a job writes part files)")
    if job.active:  # --output-dir: a resumable job (docs/large-jobs.md)
        task = partial(embed, options=options, model_options=model_options(**locals()))
        read = partial(read_records, None, column=column, encoding=encoding(encoding_name))
        return run_job(job, read, task, out_format, FORMATTER, Console(quiet, verbose))
    console = Console(quiet, verbose)
    records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    embedder = open_embedder(model_options(**locals()), options)
    if output is None:
        write((embedder.record(r, v) for r, v in embedder.pairs(records)), out_format, FORMATTER, console)
        return
    with console.progress("records") as bar:

        def counted() -> Iterator[tuple[Record, Any]]:
            for pair in embedder.pairs(records):
                yield pair
                bar.advance()

        rows, dim = write_npy(counted(), output, embedder.dimension)
    if rows == 0:
        console.warn("no input records (the input was empty or only blank lines)")
    console.info(
        f"wrote {rows} x {dim} float32 to {output}; row i is input record i (the i-th non-blank line, "
        "'index' in --json output)"
    )


@handle_errors
def similar_command(
    query: Annotated[
        str | None, typer.Argument(help="The query; the lines to rank come from --input or stdin.", show_default=False)
    ] = None,
    queries: Annotated[
        str | None,
        typer.Option(
            "--queries",
            help="Several queries, one per line of FILE: a result group each.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[str, _model_option("similar")] = default_model("similar"),
    top_k: Annotated[int, option(SimilarOptions, "top_k", "--top-k", "-k", min=1)] = SIMILAR.top_k,
    all_flag: Annotated[bool, option(SimilarOptions, "all", "--all")] = SIMILAR.all,
    pooling: PoolingOpt = SIMILAR.pooling,
    prompt: PromptOpt = SIMILAR.prompt,
    prompt_name: PromptNameOpt = SIMILAR.prompt_name,
    query_prompt: Annotated[
        str | None, option(SimilarOptions, "query_prompt", "--query-prompt", metavar="STR", show_default=False)
    ] = SIMILAR.query_prompt,
    query_prompt_name: Annotated[
        str | None,
        option(SimilarOptions, "query_prompt_name", "--query-prompt-name", metavar="NAME", show_default=False),
    ] = SIMILAR.query_prompt_name,
    max_length: EmbedMaxLengthOpt = SIMILAR.max_length,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = SIMILAR.batch_size,
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
    """Rank input lines by cosine similarity to QUERY (or each line of --queries FILE): the top -k, best first.

    Memory stays flat for any input size: a window of vectors at a time, the k best kept per query.

    text: SCORE<TAB>LINE<TAB>TEXT per match (LINE: the line number in the input); with --queries, each
    group starts with "# QUERY", groups separated by a blank line.
    jsonl: {"query_index", "query", "results": [{"rank", "score", "index", "line", "input"}]} per query.
    tsv: query_index, query, rank, score, line, index, input: a row per match.

    Example: llmtool similar "how do I reset my password" --input faq.txt -k 3
    """
    from llmtool.io.streams import read_records
    from llmtool.tasks.similar import formatter, similar

    out_format = output_format(fmt, json_flag)
    if (query is None) == (queries is None):
        raise UsageError("give a QUERY or --queries FILE (one of them)")
    if queries is not None and queries == "-" and input_path in (None, "-"):
        raise UsageError("--queries - reads stdin, so the lines to rank need --input FILE")
    options = SimilarOptions(
        pooling=pooling,
        prompt=prompt,
        prompt_name=prompt_name,
        max_length=max_length,
        batch_size=batch_size,
        top_k=top_k,
        all=all_flag,
        query_prompt=query_prompt,
        query_prompt_name=query_prompt_name,
    )
    options.check()
    query_list = (
        [query]
        if query is not None
        else [r.text for r in read_records(None, queries, encoding=encoding(encoding_name))]
    )
    records = read_records(None, input_path, column, encoding=encoding(encoding_name))
    results = similar(query_list, records, options=options, model_options=model_options(**locals()))
    write(results, out_format, formatter(len(query_list) > 1), Console(quiet, verbose))
