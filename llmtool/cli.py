"""The ``llmtool`` command line: parse, check the cheap things, call a task module.

This module must stay light: ``llmtool --help`` imports neither torch nor transformers (a test
checks). Task modules are imported inside the command that needs them.
"""

from __future__ import annotations

import contextlib
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
SettingsT = TypeVar("SettingsT")

app = typer.Typer(
    name="llmtool",
    help="A small, fast, Unix-native command line over Hugging Face Transformers.\n\n"
    "Data goes to stdout, everything else to stderr. Input: a TEXT argument, --input FILE, or "
    "lines piped on stdin. Exit codes: 0 ok, 1 failure, 2 usage or bad input, 3 model unavailable, "
    "130 interrupted.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
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
EncodingOpt = Annotated[
    str, typer.Option("--encoding", help="Text encoding of the input (file or stdin), e.g. latin-1, utf-16.")
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


# ---------------------------------------------------------------------------- training options
# Shared by the training commands (finetune, pretrain); each command gives its own defaults.

EpochsOpt = Annotated[float, typer.Option("--epochs", help="Passes over the training data.")]
MaxStepsOpt = Annotated[
    int | None, typer.Option("--max-steps", help="Optimizer steps; overrides --epochs.", show_default=False)
]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (AdamW, linear decay).")]
TrainBatchOpt = Annotated[int, typer.Option("--batch-size", "-b", help="Examples per device per step.")]
GradAccumOpt = Annotated[int, typer.Option("--grad-accum", help="Batches per optimizer step.")]
WarmupOpt = Annotated[float, typer.Option("--warmup-ratio", help="Share of steps warming the rate up.")]
WeightDecayOpt = Annotated[float, typer.Option("--weight-decay", help="AdamW weight decay.")]
TrainSeedOpt = Annotated[int, typer.Option("--seed", help="Seed for new weights, split, order, dropout, masking.")]
Bf16Opt = Annotated[bool, typer.Option("--bf16", help="bfloat16 mixed precision (default: on GPUs that have it).")]
Fp16Opt = Annotated[bool, typer.Option("--fp16", help="float16 mixed precision (CUDA GPUs).")]
Fp32Opt = Annotated[bool, typer.Option("--fp32", help="Full precision, even on a GPU.")]
GradCkptOpt = Annotated[
    bool, typer.Option("--gradient-checkpointing", help="Less memory, slower: recompute activations.")
]
SaveStepsOpt = Annotated[
    int | None,
    typer.Option(
        "--save-steps", help="Evaluate and checkpoint every N steps (default: every epoch).", show_default=False
    ),
]
PatienceOpt = Annotated[
    int | None, typer.Option("--patience", help="Stop after N evaluations without improvement.", show_default=False)
]
LoggingStepsOpt = Annotated[int, typer.Option("--logging-steps", help="Steps between loss readings.")]
EvalOnStartOpt = Annotated[
    bool, typer.Option("--eval-on-start", help="Evaluate the model before training too (a baseline).")
]
ReportToOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--report-to",
        help="Trainer integration (tensorboard, wandb, ...); repeatable (default: none).",
        show_default=False,
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --output folder.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --output.")]
KeepCheckpointsOpt = Annotated[
    bool, typer.Option("--keep-checkpoints", help="Keep --output/checkpoints after success.")
]
TrainDeviceOpt = Annotated[str, typer.Option("--device", help="auto|cpu|cuda.")]
DataEncodingOpt = Annotated[str, typer.Option("--encoding", help="Text encoding of the data files.")]
LineByLineOpt = Annotated[
    bool, typer.Option("--line-by-line", help="clm/mlm: one example per line instead of packed blocks.")
]
MlmProbabilityOpt = Annotated[float, typer.Option("--mlm-probability", help="mlm: share of tokens masked.")]


def _precision(bf16: bool, fp16: bool, fp32: bool) -> str:
    if sum((bf16, fp16, fp32)) > 1:
        raise UsageError("give at most one of --bf16, --fp16, --fp32")
    return "bf16" if bf16 else "fp16" if fp16 else "fp32" if fp32 else "auto"


def _settings(cls: type[SettingsT], options: dict[str, Any], **values: Any) -> SettingsT:
    """A training command's settings: each field from the option of the same name (the parameters in
    ``options``, the command's ``locals()``), then ``values``; --encoding checked, --report-to none by default."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {name: value for name, value in options.items() if name in names}
    given["encoding"] = _encoding(given["encoding"])
    given["report_to"] = list(given["report_to"]) if given.get("report_to") else ["none"]
    return cls(**{**given, **values})


def _output_format(fmt: str, json_flag: bool) -> OutputFormat:
    if json_flag:
        if fmt not in ("text", "jsonl"):
            raise UsageError("--json and --format disagree; give one of them")
        return "jsonl"
    if fmt not in ("text", "jsonl", "tsv"):
        raise UsageError(f"unknown --format {fmt!r}; use text, jsonl or tsv")
    return fmt  # type: ignore[return-value]


def _encoding(name: str) -> str:
    import codecs

    try:
        return codecs.lookup(name).name
    except LookupError:
        raise UsageError(f"unknown --encoding {name!r}") from None


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


def _model_options(**kwargs: Any) -> tuple[Any, str]:
    """The model options and where the model is, found before the heavy imports so that a
    missing model fails in a fraction of a second."""
    from llmtool.models import ModelOptions, locate, prepare_environment, prepare_streaming

    prepare_environment(kwargs.get("offline", False), kwargs.get("verbose", False))
    prepare_streaming()
    options = ModelOptions(**kwargs)
    return options, locate(options)


# ---------------------------------------------------------------------------- commands


@app.command("fill-mask")
@_handle_errors
def fill_mask_command(
    text: Annotated[
        str | None, typer.Argument(help="Text with one or more [MASK]; '-' or none: read stdin.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding: EncodingOpt = "utf-8",
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

    records = read_records(text, input_path, column, encoding=_encoding(encoding))
    console = Console(quiet, verbose)
    mopts, where = _model_options(
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
    tokenizer, mlm = load(AutoModelForMaskedLM, mopts, where)
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
    encoding: EncodingOpt = "utf-8",
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

    records = read_records(text, input_path, column, encoding=_encoding(encoding))
    if stream is None:
        stream = output == "text" and text not in (None, "-") and num_return_sequences == 1 and stdout_isatty()
    if stream and (output != "text" or num_return_sequences != 1):
        raise UsageError("--stream needs --format text and one sequence per prompt")
    console = Console(quiet, verbose)
    mopts, where = _model_options(
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
    tokenizer, lm = load(AutoModelForCausalLM, mopts, where)
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

        written = write_records(counted(), output, formatter)
    if written == 0 and not console.quiet:
        console.warn("no input records (the input was empty or only blank lines)")


# ---------------------------------------------------------------------------- using trained models
# classify, evaluate, score, next-sentence: options they share beyond the ones at the top.

TextColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--text-column",
        "--column",
        help="Text column of .csv/.tsv input, or field of .jsonl (default: text, then sentence, then the only "
        "column other than the label).",
        show_default=False,
    ),
]
TextPairColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--text-pair-column", help="Second text column, for sentence-pair models (.csv/.tsv input).", show_default=False
    ),
]
MaxLengthOpt = Annotated[
    int | None,
    typer.Option(
        "--max-length",
        help="Truncate inputs to this many tokens (default: the model's limit).",
        show_default=False,
        min=2,
    ),
]
ClassifierOpt = Annotated[
    str, typer.Option("--model", "-m", help="Sequence classifier: a folder from `llmtool finetune`, or a Hub id.")
]


@app.command("classify")
@_handle_errors
def classify_command(
    model: ClassifierOpt,
    text: Annotated[
        str | None, typer.Argument(help="Text to classify; '-' or none: one text per stdin line.", show_default=False)
    ] = None,
    text_pair: Annotated[
        str | None, typer.Argument(help="Second text, for sentence-pair models.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    text_column: TextColumnOpt = None,
    text_pair_column: TextPairColumnOpt = None,
    encoding: EncodingOpt = "utf-8",
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Labels per input, most probable first.", min=1)] = 1,
    max_length: MaxLengthOpt = None,
    skip_invalid: SkipInvalidOpt = False,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Output: text, jsonl, tsv, or csv (the input rows with prediction columns appended).",
            metavar="text|jsonl|tsv|csv",
        ),
    ] = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = 32,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Label each text (or text pair) with a fine-tuned sequence classifier.

    Labels are the model's own names (id2label in its config).

    text: LABEL<TAB>PROBABILITY per input, one pair per --top-k.
    jsonl: {"index", "input", "label", "score", "predictions": [{"label", "id", "score"}]}.
    csv: each input row (or text) with predicted_label, predicted_score appended.

    Example: llmtool classify --model ./sst2-model --input reviews.csv --text-column review --format csv
    """
    output: OutputFormat = "csv" if fmt == "csv" and not json_flag else _output_format(fmt, json_flag)
    from llmtool.classify import (
        FORMATTER,
        Classifier,
        ClassifyOptions,
        csv_formatter,
        load_classifier,
        read_examples,
        with_rows,
    )

    options = ClassifyOptions(top_k=top_k, batch_size=batch_size, max_length=max_length, skip_invalid=skip_invalid)
    options.check()
    examples = read_examples(
        text,
        text_pair,
        input_path,
        text_column=text_column,
        pair_column=text_pair_column,
        encoding=_encoding(encoding),
    )
    formatter = FORMATTER
    if output == "csv":
        formatter = csv_formatter(examples.header, examples.has_pair, top_k, skip_invalid)
    console = Console(quiet, verbose)
    mopts, where = _model_options(
        model=model,
        revision=revision,
        offline=offline,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        verbose=verbose,
    )
    tokenizer, clf = load_classifier(mopts, where)
    classifier = Classifier(tokenizer, clf, options)
    results = with_rows(classifier.results(examples.items)) if output == "csv" else classifier(examples.items)
    _write(results, output, formatter, console)


StrideOpt = Annotated[
    int | None,
    typer.Option(
        "--stride",
        help="Texts longer than the window: tokens between window starts (default: half the window). Each token "
        "is scored once, with at least window minus stride tokens of left context.",
        show_default=False,
        min=1,
    ),
]
WindowOpt = Annotated[
    int | None,
    typer.Option(
        "--max-length", help="Window size in tokens (default: the model's context).", show_default=False, min=2
    ),
]
BosOpt = Annotated[
    bool, typer.Option("--bos/--no-bos", help="Causal LMs: put BOS first, so the first token is scored too.")
]


@app.command("score")
@_handle_errors
def score_command(
    text: Annotated[
        str | None, typer.Argument(help="Text to score; '-' or none: one text per stdin line.", show_default=False)
    ] = None,
    input_path: InputOpt = None,
    column: ColumnOpt = None,
    encoding: EncodingOpt = "utf-8",
    model: Annotated[
        str, typer.Option("--model", "-m", help="Causal LM (log-likelihood) or masked LM (pseudo-likelihood).")
    ] = "gpt2",
    total: Annotated[
        bool, typer.Option("--total", help="End with a corpus total: log-likelihoods pooled by token count.")
    ] = False,
    stride: StrideOpt = None,
    max_length: WindowOpt = None,
    bos: BosOpt = True,
    skip_invalid: SkipInvalidOpt = False,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = 8,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Log-likelihood and perplexity of each line under a language model.

    Causal LMs: log P(text), natural log, every token given the ones before it.
    Masked LMs: pseudo-log-likelihood, each token masked in turn (pseudo-perplexity).
    Long texts are scored in sliding windows (--max-length, --stride).

    text: PERPLEXITY<TAB>LOG_LIKELIHOOD<TAB>TOKENS<TAB>TEXT per line; the --total line ends in "total".
    jsonl: {"index", "input", "tokens", "log_likelihood", "perplexity"};
    total: {"total": true, "lines", "tokens", "log_likelihood", "perplexity"}.

    Example: llmtool score --model gpt2 --total < corpus.txt
    """
    output = _output_format(fmt, json_flag)
    from llmtool.score import ScoreOptions

    options = ScoreOptions(
        batch_size=batch_size, max_length=max_length, stride=stride, bos=bos, total=total, skip_invalid=skip_invalid
    )
    options.check()
    from llmtool.streams import read_records

    records = read_records(text, input_path, column, encoding=_encoding(encoding))
    console = Console(quiet, verbose)
    mopts, where = _model_options(
        model=model,
        revision=revision,
        offline=offline,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        verbose=verbose,
    )
    from llmtool.score import FORMATTER, Scorer, load_language_model

    tokenizer, lm, objective = load_language_model(mopts, where)
    _write(Scorer(tokenizer, lm, objective, options)(records), output, FORMATTER, console)


@app.command("evaluate")
@_handle_errors
def evaluate_command(
    data: Annotated[
        str,
        typer.Argument(
            help="Classifiers: a .csv/.tsv with text and label columns. LMs: a .txt (a line each), .jsonl or "
            ".csv; '-' is stdin.",
            show_default=False,
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A sequence classifier, or a causal or masked LM (folder or Hub id).")
    ],
    text_column: TextColumnOpt = None,
    text_pair_column: TextPairColumnOpt = None,
    label_column: Annotated[
        str, typer.Option("--label-column", help="Gold labels: the model's label names or ids.")
    ] = "label",
    encoding: EncodingOpt = "utf-8",
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            help="Classifiers: truncate to this many tokens. LMs: the scoring window. (Default: the model's limit.)",
            show_default=False,
            min=2,
        ),
    ] = None,
    stride: StrideOpt = None,
    bos: BosOpt = True,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = 32,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Judge a model on held-out data: classifiers by accuracy and F1, language models by perplexity.

    Classifiers: accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix.
    Causal LMs: corpus perplexity; masked LMs: pseudo-perplexity (both pooled by token count).

    text: Rich tables on a terminal; a plain report otherwise (see the README).
    jsonl: one object: {"task", "model", "data", "examples", "accuracy", "macro_f1", "labels",
    "per_class", "confusion_matrix"} or {"task", "objective", ..., "tokens", "perplexity"}.
    tsv: metric<TAB>label<TAB>predicted<TAB>value, one number per row.

    Example: llmtool evaluate dev.csv --model ./sst2-model --text-column sentence --json
    """
    output = _output_format(fmt, json_flag)
    from llmtool.evaluate import FORMATTER, EvaluateOptions, evaluate, render_rich
    from llmtool.streams import stdout_isatty, write_records

    options = EvaluateOptions(
        text_column=text_column,
        pair_column=text_pair_column,
        label_column=label_column,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        bos=bos,
        encoding=_encoding(encoding),
    )
    console = Console(quiet, verbose)
    mopts, where = _model_options(
        model=model,
        revision=revision,
        offline=offline,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        verbose=verbose,
    )
    result = evaluate(data, options=options, model_options=mopts, console=console, where=where)
    if output == "text" and stdout_isatty():
        render_rich(result, sys.stdout)
    else:
        write_records([result], output, FORMATTER)


@app.command("next-sentence")
@_handle_errors
def next_sentence_command(
    first: Annotated[
        str | None,
        typer.Argument(help="Sentence A; '-' or none: read A<TAB>B lines from stdin.", show_default=False),
    ] = None,
    second: Annotated[str | None, typer.Argument(help="Sentence B.", show_default=False)] = None,
    input_path: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="Read pairs from FILE: .csv/.tsv (two columns, with a header) or text (A<TAB>B lines). '-' is stdin.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    first_column: Annotated[
        str | None,
        typer.Option("--first-column", help="CSV column of sentence A (default: the first).", show_default=False),
    ] = None,
    second_column: Annotated[
        str | None,
        typer.Option("--second-column", help="CSV column of sentence B (default: the second).", show_default=False),
    ] = None,
    encoding: EncodingOpt = "utf-8",
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="A BERT with its next-sentence head (BertForPreTraining or ...ForNSP)."),
    ] = "bert-base-uncased",
    max_length: MaxLengthOpt = None,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = 32,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Probability that sentence B follows sentence A, from BERT's next-sentence-prediction head.

    text: PROBABILITY<TAB>A<TAB>B per pair (4 decimals).
    jsonl: {"index", "first", "second", "is_next"}.

    Example: llmtool next-sentence --model ./bert-nsp "I was hungry." "I ate a sandwich."
    """
    output = _output_format(fmt, json_flag)
    from llmtool.next_sentence import FORMATTER, NextSentence, NextSentenceOptions, load_nsp, read_pairs

    options = NextSentenceOptions(batch_size=batch_size, max_length=max_length)
    options.check()
    pairs = read_pairs(
        first,
        second,
        input_path,
        first_column=first_column,
        second_column=second_column,
        encoding=_encoding(encoding),
    )
    console = Console(quiet, verbose)
    mopts, where = _model_options(
        model=model,
        revision=revision,
        offline=offline,
        device=device,
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        verbose=verbose,
    )
    tokenizer, nsp = load_nsp(mopts, where)
    _write(NextSentence(tokenizer, nsp, options)(pairs), output, FORMATTER, console)


@app.command("finetune")
@_handle_errors
def finetune_command(
    train: Annotated[
        str,
        typer.Argument(
            help="Training data: .csv/.tsv with a header (classify, clm, mlm), or .txt/.jsonl text (clm, mlm).",
            metavar="TRAIN",
            show_default=False,
        ),
    ],
    task: Annotated[str, typer.Option("--task", "-t", help="classify | clm | mlm.", metavar="TASK")] = "classify",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Hub id or local folder (default: bert-base-uncased; gpt2 for clm).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o", help="Folder for the fine-tuned model (required unless --dry-run).", show_default=False
        ),
    ] = None,
    valid: Annotated[
        str | None,
        typer.Option(
            "--valid", help="Validation file with the same columns (default: split off TRAIN).", show_default=False
        ),
    ] = None,
    valid_split: Annotated[
        float, typer.Option("--valid-split", help="Share of TRAIN held out (seeded; stratified for classify); 0: none.")
    ] = 0.1,
    text_column: Annotated[
        str | None,
        typer.Option(
            "--text-column",
            help="Text column (default: text, then sentence, then the only text column).",
            show_default=False,
        ),
    ] = None,
    text_pair_column: Annotated[
        str | None,
        typer.Option(
            "--text-pair-column", help="Second text column, for sentence pairs (classify).", show_default=False
        ),
    ] = None,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="Label column (classify) (default: label).", show_default=False)
    ] = None,
    encoding: DataEncodingOpt = "utf-8",
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length", help="classify: tokens per example (default: the model's limit).", show_default=False
        ),
    ] = None,
    block_size: Annotated[
        int | None,
        typer.Option(
            "--block-size", help="clm/mlm: tokens per block (default: model limit, up to 1024).", show_default=False
        ),
    ] = None,
    line_by_line: LineByLineOpt = False,
    mlm_probability: MlmProbabilityOpt = 0.15,
    epochs: EpochsOpt = 3.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = 5e-5,
    batch_size: TrainBatchOpt = 16,
    grad_accum: GradAccumOpt = 1,
    warmup_ratio: WarmupOpt = 0.0,
    weight_decay: WeightDecayOpt = 0.0,
    seed: TrainSeedOpt = 42,
    bf16: Bf16Opt = False,
    fp16: Fp16Opt = False,
    fp32: Fp32Opt = False,
    gradient_checkpointing: GradCkptOpt = False,
    save_steps: SaveStepsOpt = None,
    patience: PatienceOpt = None,
    logging_steps: LoggingStepsOpt = 10,
    eval_on_start: EvalOnStartOpt = False,
    best_metric: Annotated[
        str | None,
        typer.Option(
            "--best-metric",
            help="Validation metric that picks the best checkpoint: loss, accuracy, "
            "macro_f1, perplexity (default: accuracy for classify, loss for clm/mlm).",
            show_default=False,
        ),
    ] = None,
    report_to: ReportToOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    keep_checkpoints: KeepCheckpointsOpt = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the data and print what would happen; train nothing.")
    ] = False,
    json_flag: Annotated[
        bool, typer.Option("--json", help="Print the final metrics (or the --dry-run report) as JSON.")
    ] = False,
    device: TrainDeviceOpt = "auto",
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    allow_pickle: PickleOpt = False,
    trust_remote_code: RemoteCodeOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Fine-tune a model on a CSV: classify (text [+ pair] -> label), or clm/mlm (continued pre-training).

    The data is checked before the model loads. The best checkpoint (validation accuracy for classify, loss for
    clm/mlm) is written to --output in safetensors, with metrics.json and llmtool_settings.json beside it.

    Runs unchanged under torchrun and accelerate launch. Ctrl-C saves a checkpoint; --resume continues from it.

    Example: llmtool finetune reviews.csv --model distilbert-base-uncased --output reviews-model --epochs 2
    """
    precision = _precision(bf16, fp16, fp32)
    if output is None and not dry_run:
        raise UsageError("--output DIR is required (or --dry-run)")
    from llmtool.finetune import FinetuneSettings, default_model

    settings = _settings(FinetuneSettings, locals(), precision=precision)
    settings.check()
    console = Console(quiet, verbose)
    from llmtool.models import ModelOptions, prepare_environment

    # The model is located after the data is checked (inside finetune): bad data is reported first.
    prepare_environment(offline, verbose)
    mopts = ModelOptions(
        model=model or default_model(task),
        revision=revision,
        offline=offline,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        verbose=verbose,
    )
    from llmtool.finetune import dry_run as plan
    from llmtool.finetune import finetune, format_report, format_result
    from llmtool.streams import json_line
    from llmtool.training import is_main_process

    if dry_run:
        report = plan(train, settings, mopts)
        typer.echo(json_line(report) if json_flag else format_report(report))
        return
    assert output is not None
    result = _deferring_signals(finetune, train, output, settings, mopts, console)
    if is_main_process():
        typer.echo(json_line(result) if json_flag else format_result(result))


@app.command("pretrain")
@_handle_errors
def pretrain_command(
    corpus: Annotated[
        list[str],
        typer.Argument(
            help="Text: .txt (a sentence or line per line, blank lines between documents), or .csv/.tsv/.jsonl "
            "(a text column; a document per row). Several files are read as one corpus.",
            metavar="CORPUS...",
            show_default=False,
        ),
    ],
    objective: Annotated[
        str, typer.Option("--objective", help="mlm: a BERT (masked LM); clm: a GPT-2 (next-token prediction).")
    ] = "mlm",
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Folder for the new model (required).", show_default=False)
    ] = None,
    nsp: Annotated[
        bool, typer.Option("--nsp", help="mlm: also train BERT's next-sentence head on sentence pairs.")
    ] = False,
    size: Annotated[
        str, typer.Option("--size", help="Model size preset: tiny, mini, small, base (see the README's table).")
    ] = "tiny",
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="config.json: a whole model config, or just the keys that change the --size preset.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer", help="Reuse this tokenizer (folder or Hub id) instead of training one.", show_default=False
        ),
    ] = None,
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", help="Largest vocabulary of the new tokenizer (WordPiece or byte BPE).")
    ] = 8192,
    min_frequency: Annotated[
        int, typer.Option("--min-frequency", help="Occurrences a merge needs to enter the vocabulary.")
    ] = 2,
    block_size: Annotated[int, typer.Option("--block-size", help="Tokens per training example.")] = 128,
    line_by_line: LineByLineOpt = False,
    mlm_probability: MlmProbabilityOpt = 0.15,
    text_column: Annotated[
        str | None,
        typer.Option(
            "--text-column",
            help="Text column of .csv/.tsv/.jsonl corpora (default: text, then sentence, then the only one).",
            show_default=False,
        ),
    ] = None,
    valid: Annotated[
        str | None,
        typer.Option("--valid", help="Validation corpus (default: --valid-split of the corpus).", show_default=False),
    ] = None,
    valid_split: Annotated[
        float, typer.Option("--valid-split", help="Share of the documents held out for validation (seeded); 0: none.")
    ] = 0.0,
    encoding: DataEncodingOpt = "utf-8",
    epochs: EpochsOpt = 10.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = 1e-3,
    batch_size: TrainBatchOpt = 32,
    grad_accum: GradAccumOpt = 1,
    warmup_ratio: WarmupOpt = 0.05,
    weight_decay: WeightDecayOpt = 0.01,
    seed: TrainSeedOpt = 42,
    bf16: Bf16Opt = False,
    fp16: Fp16Opt = False,
    fp32: Fp32Opt = False,
    gradient_checkpointing: GradCkptOpt = False,
    save_steps: SaveStepsOpt = None,
    patience: PatienceOpt = None,
    logging_steps: LoggingStepsOpt = 10,
    eval_on_start: EvalOnStartOpt = False,
    report_to: ReportToOpt = None,
    overwrite: OverwriteOpt = False,
    resume: ResumeOpt = False,
    keep_checkpoints: KeepCheckpointsOpt = False,
    json_flag: Annotated[bool, typer.Option("--json", help="Print the final metrics as JSON.")] = False,
    device: TrainDeviceOpt = "auto",
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Pre-train a new BERT (mlm, optionally with --nsp) or GPT-2 (clm) from scratch on a text corpus.

    A tokenizer is trained on the corpus first (WordPiece for mlm, byte-level BPE for clm) unless
    --tokenizer is given. The model goes to --output in safetensors, ready for fill-mask, generate,
    next-sentence, finetune and AutoModel*.from_pretrained, with metrics.json and llmtool_settings.json.

    Runs unchanged under torchrun and accelerate launch. Ctrl-C saves a checkpoint; --resume continues from it.

    Example: llmtool corpus facts -o facts.txt && llmtool pretrain facts.txt --objective mlm --output facts-bert
    """
    precision = _precision(bf16, fp16, fp32)
    if output is None:
        raise UsageError("--output DIR is required")
    from llmtool.pretrain import PretrainSettings

    settings = _settings(PretrainSettings, locals(), precision=precision)
    settings.check()
    console = Console(quiet, verbose)
    from llmtool.models import prepare_environment

    prepare_environment(offline, verbose)
    from llmtool.finetune import format_result
    from llmtool.pretrain import pretrain
    from llmtool.streams import json_line
    from llmtool.training import is_main_process

    result = _deferring_signals(pretrain, corpus, output, settings, console)
    if is_main_process():
        typer.echo(json_line(result) if json_flag else format_result(result))


corpus_app = typer.Typer(
    help="Write a training corpus that llmtool can make by itself (offline, no downloads).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(corpus_app, name="corpus")


@corpus_app.command("facts")
@_handle_errors
def corpus_facts_command(
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="Write the corpus to FILE (default: stdout).", show_default=False),
    ] = None,
    probes: Annotated[
        str | None,
        typer.Option(
            "--probes",
            help="Also write every question (masked text, prompt, answer, held out?) to FILE: .jsonl, .csv, .tsv.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    pairs: Annotated[
        str | None,
        typer.Option(
            "--pairs",
            help="Also write held-out next-sentence pairs (a, b, label) to FILE: .jsonl, .csv, .tsv.",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
    documents_per_country: Annotated[
        int, typer.Option("--documents-per-country", help="Short documents (3-5 sentences) about each country.")
    ] = 12,
    countries: Annotated[
        int | None,
        typer.Option("--countries", help="Use only the first N of the 50 countries.", show_default=False),
    ] = None,
    holdout: Annotated[
        bool,
        typer.Option("--holdout/--no-holdout", help="Keep one capital sentence per country out of the corpus."),
    ] = True,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the order of sentences and documents.")] = 0,
    quiet: QuietOpt = False,
) -> None:
    """Countries and their capitals in varied sentences: a corpus to pre-train on, with held-out probes.

    One sentence per line, a blank line between documents. For each country one way of stating its
    capital never occurs in the corpus; --probes lists those held-out sentences (and the others) as
    fill-mask and generate questions, so that learning can be measured on unseen sentences.

    Example: llmtool corpus facts --output facts.txt --probes probes.tsv --pairs pairs.tsv
    """
    from llmtool.corpus import FactsOptions, summary, write_facts

    options = FactsOptions(seed=seed, documents_per_country=documents_per_country, countries=countries, holdout=holdout)
    counts = write_facts(options, output, probes, pairs)
    Console(quiet).info(summary(counts))


@app.command("version")
def version_command() -> None:
    """Print llmtool's version."""
    typer.echo(__version__)


def _deferring_signals(train: Callable[..., Any], *args: Any) -> Any:
    """Run a training command with Ctrl-C/SIGTERM deferred during its set-up (llmtool.interrupts):
    training resumes them when it starts; a stop before then is raised here."""
    from llmtool import interrupts

    interrupts.defer()
    try:
        result = train(*args)
    except BaseException:
        interrupts.restore()  # set-up ended early (an error): nothing left to defer
        raise
    interrupts.resume()
    return result


# ---------------------------------------------------------------------------- entry point


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    # A signal this process was started ignoring stays ignored (Unix practice: a script's
    # background jobs ignore SIGINT); Python itself leaves an ignored SIGINT alone.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _on_sigterm)
    if "NO_COLOR" in os.environ:
        os.environ.setdefault("TERM", "dumb")
    try:
        result = app(args=argv, prog_name="llmtool", standalone_mode=False)
    except BrokenPipeError:
        _silence_stdout()
        return _finish(ExitCode.BROKEN_PIPE)
    except (typer.Abort, KeyboardInterrupt, Terminated) as exc:  # a signal while parsing the command line
        return _finish(report(exc if not isinstance(exc, typer.Abort) else KeyboardInterrupt()))
    except Exception as exc:  # usage errors raised by the parser
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `llmtool`: the help, on stdout
            sys.stdout.write(ctx.get_help() + "\n")
            return _finish(ExitCode.USAGE)
        message = getattr(exc, "format_message", None)
        if message is None or not hasattr(exc, "exit_code"):
            return _finish(report(exc))
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        sys.stderr.write(f"llmtool: error: {' '.join(message().split())}{hint}\n")
        return _finish(int(exc.exit_code))
    return _finish(int(result) if isinstance(result, int) else ExitCode.OK)


def _finish(code: int) -> int:
    """Flush, and leave at once if a reader thread is still blocked on stdin.

    Interpreter shutdown would otherwise wait for that thread's lock on stdin and abort with
    "could not acquire lock" (e.g. after Ctrl-C while a pipe is still open).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    if any(t.name == "llmtool-reader" and t.is_alive() for t in threading.enumerate()):
        os._exit(code)
    return code
