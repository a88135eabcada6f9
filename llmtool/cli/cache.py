"""``llmtool cache``: the converted models of the CTranslate2 engine (list, add, rm)."""

from __future__ import annotations

from typing import Annotated

import typer

from llmtool.cli.common import handle_errors
from llmtool.cli.options import MODEL, OfflineOpt, QuantizeOpt, QuietOpt, RevisionOpt, model_options
from llmtool.errors import UsageError
from llmtool.io.console import Console

cache_app = typer.Typer(
    help="The CTranslate2 engine's converted models: where they are, converting one ahead of use, removing them.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e9 else f"{n / 1e9:,.2f} GB"


@cache_app.command("list")
@handle_errors
def cache_list_command(
    json_flag: Annotated[bool, typer.Option("--json", help="One JSON object per entry.")] = False,
) -> None:
    """List the converted models: key, quantization, size, whether the entry is intact, and its source.

    text: KEY<TAB>QUANTIZATION<TAB>SIZE<TAB>STATE<TAB>SOURCE per entry (STATE: ok, or what is wrong).
    jsonl: {"key", "path", "source", "quantization", "size", "created", "ctranslate2_version", "valid", "problem"}.

    Example: llmtool cache list --json | jq -r .source
    """
    from llmtool.engines.ct2.cache import list_entries
    from llmtool.io.streams import json_line

    for entry in list_entries():
        if json_flag:
            typer.echo(json_line(entry))
        else:
            state = "ok" if entry["valid"] else f"damaged: {entry['problem']}"
            fields = [entry["key"][:16], str(entry["quantization"]), _size(entry["size"]), state, str(entry["source"])]
            typer.echo("\t".join(fields))


@cache_app.command("add")
@handle_errors
def cache_add_command(
    model: Annotated[str, typer.Argument(help="A model folder, or a Hub id in the local cache.", show_default=False)],
    quantize: QuantizeOpt = MODEL.quantize,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    quiet: QuietOpt = False,
) -> None:
    """Convert a model for the CTranslate2 engine now (any size), instead of on first use.

    Prints the entry's folder. Example: llmtool cache add ./facts-gpt --quantize int8
    """
    from llmtool.engines.choice import prepare
    from llmtool.engines.ct2.convert import ensure_entry

    ref = prepare(model_options(model=model, quantize=quantize, revision=revision, offline=offline))
    if ref.folder is None:
        raise UsageError(f"{model} is not on disk; download it first (hf download {model})")
    quantization = "int8" if quantize == "int8" else "float32"
    console = Console(quiet)
    entry = ensure_entry(ref.folder, quantization, allow_convert=True, notify=console.info)
    typer.echo(str(entry))


@cache_app.command("rm")
@handle_errors
def cache_rm_command(
    match: Annotated[
        str | None,
        typer.Argument(help="A key (or its first characters), or the model folder converted.", show_default=False),
    ] = None,
    all_entries: Annotated[bool, typer.Option("--all", help="Remove every entry.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Remove converted models: one by key or by source folder, or --all. Prints each folder removed.

    Example: llmtool cache rm ./facts-gpt
    """
    from llmtool.engines.ct2.cache import entries_dir, remove_entries

    if (match is None) == (not all_entries):
        raise UsageError("give a KEY or MODEL folder, or --all")
    removed = remove_entries(None if all_entries else match)
    for path in removed:
        typer.echo(str(path))
    if not removed and not quiet:
        Console().warn(f"nothing in {entries_dir()} matches {match!r}" if match else "the cache is empty")
