"""``llmtool attention``: its flags, then :func:`llmtool.tasks.attention.attention` (the Python API's entry too)
on what it reads; nothing here loads a model."""

from __future__ import annotations

from typing import Annotated

import typer

from llmtool.cli.common import handle_errors
from llmtool.cli.options import (
    MODEL,
    DeviceOpt,
    DtypeOpt,
    FormatOpt,
    JsonOpt,
    OfflineOpt,
    PickleOpt,
    QuietOpt,
    RemoteCodeOpt,
    RevisionOpt,
    VerboseOpt,
    default_model,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.io.console import Console
from llmtool.settings import AttentionOptions, defaults

ATTN = defaults(AttentionOptions)


@handle_errors
def attention_command(
    text: Annotated[str, typer.Argument(help="The text whose tokens' attention to show.", show_default=False)],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A Transformers model (BERT, GPT-2, ...): Hub id or local folder.",
            envvar=model_envvars("attention"),
        ),
    ] = default_model("attention"),
    layer: Annotated[int | None, option(AttentionOptions, "layer", "--layer", show_default=False)] = ATTN.layer,
    head: Annotated[int | None, option(AttentionOptions, "head", "--head", show_default=False)] = ATTN.head,
    output: Annotated[
        str | None, option(AttentionOptions, "output", "--output", "-o", metavar="FILE.png", show_default=False)
    ] = ATTN.output,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    device: DeviceOpt = MODEL.device,
    dtype: DtypeOpt = MODEL.dtype,
    allow_pickle: PickleOpt = MODEL.allow_pickle,
    trust_remote_code: RemoteCodeOpt = MODEL.trust_remote_code,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
) -> None:
    """Self-attention weights of one layer for TEXT: the numbers on stdout, a heatmap with --output.

    Each row is one token (the query) and how much it attends to every token (softmaxed: a row sums
    to 1). Without --head, every head of the layer (a grid of heatmaps).

    text: QUERY<TAB>MOST-ATTENDED-TOKEN<TAB>WEIGHT per token (the heads' mean without --head).
    jsonl: {"text", "model", "tokens", "layer", "layers", "heads", "head", "attentions", "output"}.
    tsv: layer, head, query, query_token, key, key_token, weight: one row per weight.

    Example: llmtool attention "The cat sat on the mat." -m bert-base-uncased --layer 0 --output att.png
    """
    from llmtool.io.formats import write_records
    from llmtool.tasks.attention import FORMATTER, attention

    out_format = output_format(fmt, json_flag)
    options = AttentionOptions(layer=layer, head=head, output=output)
    options.check()
    console = Console(quiet, verbose)
    record = attention(text, options=options, model_options=model_options(**locals()), console=console)
    write_records([record], out_format, FORMATTER)
    if output is not None:
        console.info(f"wrote {output}")
