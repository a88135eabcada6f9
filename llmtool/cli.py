"""The ``llmtool`` command line: parse, check the cheap things, call a task module.

This module must stay light: ``llmtool --help`` imports neither torch nor transformers (a test
checks). Task modules are imported inside the command that needs them.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from llmtool import __version__
from llmtool.errors import ExitCode, Terminated, UsageError, report
from llmtool.streams import Console, OutputFormat

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="llmtool",
    help="A small, fast, Unix-native command line over Hugging Face Transformers.\n\n"
    "Data goes to stdout, everything else to stderr. Input: a TEXT argument, --input FILE, or "
    "lines piped on stdin. Exit codes: 0 ok, 1 failure, 2 usage or bad input, 3 model unavailable, "
    "130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ---------------------------------------------------------------------------- shared options
# One definition per flag, so every command spells and documents it the same way.

InputOpt = Annotated[
    str | None,
    typer.Option(
        "--input",
        "-i",
        help="Read records from FILE: .txt (a line each), .jsonl (a field), .csv/.tsv (a column). '-' is stdin.",
        metavar="FILE",
        show_default=False,
    ),
]
ColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--column", help="Field of .jsonl or column of .csv input [default: text, then sentence].", show_default=False
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option("--format", "-f", help="Output: text (for people and filters), jsonl, tsv.", metavar="text|jsonl|tsv"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Short for --format jsonl.")]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit.", show_default=False)]
OfflineOpt = Annotated[
    bool, typer.Option("--offline", help="Never use the network (as HF_HUB_OFFLINE=1); fail fast if not cached.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda[:N]|mps.")]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="auto|float32|bfloat16|float16 (auto: bf16/fp16 on GPU, fp32 on CPU).")
]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Inputs per forward pass.", min=1)]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed, for repeatable output.", show_default=False)]
PickleOpt = Annotated[
    bool, typer.Option("--allow-pickle", help="Also load pickled *.bin weights (they can run code: trust needed).")
]
RemoteCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run the model repository's own Python code.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or info on stderr.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Transformers/Hub warnings and bars.")]
SkipInvalidOpt = Annotated[
    bool, typer.Option("--skip-invalid", help="Write an error record for a bad line and go on (default: stop, exit 2).")
]


def _output_format(fmt: str, json_flag: bool) -> OutputFormat:
    if json_flag:
        if fmt not in ("text", "jsonl"):
            raise UsageError("--json and --format disagree; give one of them")
        return "jsonl"
    if fmt not in ("text", "jsonl", "tsv"):
        raise UsageError(f"unknown --format {fmt!r}; use text, jsonl or tsv")
    return fmt  # type: ignore[return-value]


def _handle_errors(func: F) -> F:
    """Run a command body; turn every failure into one line on stderr and a documented status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(ExitCode.BROKEN_PIPE) from None
        except BaseException as exc:  # every failure gets reported, Ctrl-C and SIGTERM included
            raise typer.Exit(report(exc)) from None

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """After the reader of stdout has gone, make the interpreter's final flush a no-op."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _model_options(**kwargs: Any) -> Any:
    from llmtool.models import ModelOptions, prepare_environment

    prepare_environment(kwargs.get("offline", False), kwargs.get("verbose", False))
    return ModelOptions(**kwargs)


# ---------------------------------------------------------------------------- commands


@app.command("fill-mask")
@_handle_errors
def fill_mask_command(
    text: Annotated[
        str | None, typer.Argument(help="Text with one or more [MASK]; '-' or none: read stdin.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Masked LM: Hub id or local folder.")
    ] = "bert-base-uncased",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Predictions per mask.", min=1)] = 5,
    targets: Annotated[
        str | None,
        typer.Option("--targets", help="Comma-separated candidate words; each must be one token.", show_default=False),
    ] = None,
    skip_invalid: SkipInvalidOpt = False,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = 32,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    seed: SeedOpt = None,
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Predict the words behind [MASK] with a masked language model (BERT, RoBERTa, ...).

    text: each line with its masks replaced by the top prediction. jsonl: every mask's top-k
    tokens, ids and scores.

    Example: echo "The capital of France is [MASK]." | llmtool fill-mask --json
    """
    output = _output_format(fmt, json_flag)
    target_list = [t.strip() for t in targets.split(",") if t.strip()] if targets is not None else None
    if targets is not None and not target_list:
        raise UsageError("--targets is empty")
    from llmtool.streams import read_records

    records = read_records(text, input_path, column)
    console = Console(quiet, verbose)
    mopts = _model_options(
        model=model,
        revision=revision,
        offline=offline,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        verbose=verbose,
    )

    from transformers import AutoModelForMaskedLM

    from llmtool.fill_mask import FORMATTER, FillMaskOptions, MaskFiller
    from llmtool.models import load, set_seed

    set_seed(seed)
    tokenizer, mlm = load(AutoModelForMaskedLM, mopts)
    filler = MaskFiller(
        tokenizer,
        mlm,
        FillMaskOptions(top_k=top_k, targets=target_list, batch_size=batch_size, skip_invalid=skip_invalid),
    )
    _write(filler(records), output, FORMATTER, console)


@app.command("generate")
@_handle_errors
def generate_command(
    text: Annotated[
        str | None, typer.Argument(help="The prompt; '-' or none: one prompt per stdin line.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Causal LM: Hub id or local folder.")] = "gpt2",
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", "-t", help="Tokens to generate.", min=1)] = 50,
    greedy: Annotated[
        bool, typer.Option("--greedy", help="Take the most likely token each step (no sampling).")
    ] = False,
    temperature: Annotated[float, typer.Option("--temperature", help="Sampling temperature.")] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample from the k most likely tokens (0: all).", min=0)] = 50,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus sampling probability mass.")] = 1.0,
    repetition_penalty: Annotated[float, typer.Option("--repetition-penalty", help=">1 discourages repeats.")] = 1.0,
    num_return_sequences: Annotated[
        int, typer.Option("--num-return-sequences", "-n", help="Outputs per prompt.", min=1)
    ] = 1,
    stop: Annotated[
        list[str] | None,
        typer.Option("--stop", help="Cut the output before STR (repeatable).", metavar="STR", show_default=False),
    ] = None,
    no_prompt: Annotated[bool, typer.Option("--no-prompt", help="Print the continuation only.")] = False,
    chat: Annotated[bool, typer.Option("--chat", help="Wrap the prompt as a user message (chat template).")] = False,
    stream: Annotated[
        bool | None,
        typer.Option(
            "--stream/--no-stream",
            help="Print tokens as they come [default: one prompt to a terminal].",
            show_default=False,
        ),
    ] = None,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = 8,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    seed: SeedOpt = None,
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Continue each prompt with a causal language model (GPT-2, Llama, ...).

    text: each output followed by a newline (outputs may hold newlines: use --json to parse).
    jsonl: {"index", "input", "generations": [{"text", "finish_reason", "new_tokens"}]}.

    Example: llmtool generate "Once upon a time" --max-new-tokens 20 --seed 1
    """
    output = _output_format(fmt, json_flag)
    from llmtool.generate import GenerateOptions

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
    )
    options.check()
    from llmtool.streams import read_records, stdout_isatty

    records = read_records(text, input_path, column)
    if stream is None:
        stream = output == "text" and text not in (None, "-") and num_return_sequences == 1 and stdout_isatty()
    if stream and (output != "text" or num_return_sequences != 1):
        raise UsageError("--stream needs --format text and one sequence per prompt")
    console = Console(quiet, verbose)
    mopts = _model_options(
        model=model,
        revision=revision,
        offline=offline,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        verbose=verbose,
    )

    from transformers import AutoModelForCausalLM

    from llmtool.generate import FORMATTER, Generator
    from llmtool.models import load, set_seed

    set_seed(seed)
    tokenizer, lm = load(AutoModelForCausalLM, mopts)
    generator = Generator(tokenizer, lm, options)
    if stream and options.include_prompt and not chat:
        # The prompt is printed before generation starts, as the user typed it.
        results = generator(_echo_prompts(records), stream_to=sys.stdout)
    else:
        results = generator(records, stream_to=sys.stdout if stream else None)
    _write(results, output, FORMATTER, console)


def _echo_prompts(records: Any) -> Any:
    for record in records:
        sys.stdout.write(record.text)
        sys.stdout.flush()
        yield record


def _write(results: Any, output: OutputFormat, formatter: Any, console: Console) -> None:
    from llmtool.streams import write_records

    with console.progress("records") as bar:

        def counted() -> Any:
            for result in results:
                yield result
                bar.advance()

        write_records(counted(), output, formatter)


corpus_app = typer.Typer(
    help="Write small synthetic corpora for pre-training and testing, offline.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("facts")
@_handle_errors
def corpus_facts_command(
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write the corpus here (default: stdout).", metavar="FILE"),
    ] = None,
    probes: Annotated[
        str | None,
        typer.Option(
            "--probes",
            help="Also write every test question (masked text, prompt, answer, split) to FILE (.jsonl, .csv, .tsv).",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            help="Also write held-out next-sentence pairs (a, b, label) to FILE (.jsonl, .csv, .tsv).",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Shuffles sentences and documents.")] = 0,
    documents_per_country: Annotated[
        int, typer.Option("--documents-per-country", help="Documents about each country (3-5 sentences each).", min=1)
    ] = 12,
    countries: Annotated[
        int | None,
        typer.Option("--countries", help="Use only the first N of the 50 countries.", min=2, show_default=False),
    ] = None,
    holdout: Annotated[
        bool,
        typer.Option("--holdout/--no-holdout", help="Keep one capital sentence per country out, for testing."),
    ] = True,
    quiet: QuietOpt = False,
) -> None:
    """Write a synthetic corpus of true facts: 50 countries, their capitals and continents.

    One sentence per line, a blank line between documents (each about one country).

    For each country one capital sentence is held out of the corpus. --probes lists every
    question with its split, so learning is measured on sentences the model never saw.

    Example: llmtool corpus facts -o facts.txt --probes probes.jsonl --pairs pairs.tsv
    """
    from llmtool import corpus

    options = corpus.FactsOptions(
        seed=seed, documents_per_country=documents_per_country, countries=countries, holdout=holdout
    )
    options.check()
    corpus.check_table_path(probes, "--probes")
    corpus.check_table_path(pairs, "--pairs")
    docs = corpus.documents(options)
    probe_rows = corpus.probes(options)
    pair_rows = corpus.nsp_pairs(options) if pairs is not None else []
    if output is None or output == "-":
        corpus.write_documents(docs, sys.stdout)
        sys.stdout.flush()
    else:
        with open(output, "w", encoding="utf-8", newline="\n") as out:
            corpus.write_documents(docs, out)
    if probes is not None:
        corpus.write_table(probe_rows, probes, ("masked", "prompt", "answer", "split", "relation", "country"))
    if pairs is not None:
        corpus.write_table(pair_rows, pairs, ("a", "b", "label"))
    Console(quiet).info(corpus.summary(docs, probe_rows) + (f"; {len(pair_rows)} sentence pairs" if pairs else ""))


@app.command("version")
def version_command() -> None:
    """Print llmtool's version."""
    typer.echo(__version__)


# ---------------------------------------------------------------------------- entry point


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    if "NO_COLOR" in os.environ:
        os.environ.setdefault("TERM", "dumb")
    try:
        result = app(args=argv, prog_name="llmtool", standalone_mode=False)
    except BrokenPipeError:
        _silence_stdout()
        return ExitCode.BROKEN_PIPE
    except (typer.Abort, KeyboardInterrupt):
        sys.stderr.write("llmtool: interrupted\n")
        return ExitCode.INTERRUPTED
    except Exception as exc:  # usage errors raised by the parser
        message = getattr(exc, "format_message", None)
        if message is None or not hasattr(exc, "exit_code"):
            return report(exc)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"llmtool: error: {' '.join(message().split())}{hint}\n")
        return int(exc.exit_code)
    return int(result) if isinstance(result, int) else ExitCode.OK
