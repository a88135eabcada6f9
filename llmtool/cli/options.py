"""The command line's flags: one definition per flag, its default and help read from :mod:`llmtool.settings`.

Every command spells and documents a flag the same way, and a default lives in one place (the
settings dataclass the Python API takes too). Nothing here imports torch.
"""

from __future__ import annotations

import codecs
import os
from typing import Annotated, Any

import typer

from llmtool.errors import UsageError
from llmtool.io.formats import OutputFormat
from llmtool.settings import (
    DTYPES,
    ENGINES,
    EvaluateOptions,
    FinetuneSettings,
    ModelOptions,
    PretrainSettings,
    ScoreOptions,
    TrainSettings,
    help_of,
)
from llmtool.tasks.registry import command


def option(cls: type, name: str, *decls: str, **kwargs: Any) -> Any:
    """A ``typer.Option`` whose help text is that of field ``name`` of settings class ``cls``."""
    return typer.Option(*decls, help=help_of(cls, name), **kwargs)


MODEL = ModelOptions()

# ---------------------------------------------------------------------------- defaults from the environment
# A flag always wins; then the variable; then the default. --help shows each option's variables
# ("[env var: ...]"), and a bad value from one is a usage error naming it (cli.main).


def model_envvars(name: str) -> list[str]:
    """The variables --model of command ``name`` reads, first set wins: LLMTOOL_<COMMAND>_MODEL, then
    LLMTOOL_MODEL (see :attr:`llmtool.tasks.registry.Command.model_envvars`)."""
    return command(name).model_envvars


def default_model(name: str) -> str:
    """--model's default for command ``name`` (:attr:`llmtool.tasks.registry.Command.default_model`)."""
    return command(name).default_model or ""


class FromEnvironment(str):
    """A string option's value that came from its environment variable (not a flag): --json beats it,
    and a message about it names the variable."""

    variable: str


def mark_environment(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    """Callback: tag a string value that came from the environment with the variable it came from."""
    source = ctx.get_parameter_source(param.name or "")
    if isinstance(value, str) and source is not None and source.name == "ENVIRONMENT":
        marked = FromEnvironment(value)
        marked.variable = next((v for v in _envvars(param) if os.environ.get(v)), "")
        return marked
    return value


def _envvars(param: typer.CallbackParam) -> list[str]:
    names = param.envvar
    return [names] if isinstance(names, str) else list(names or [])


def _choice(values: tuple[str, ...], what: str) -> Any:
    """Callback: the value must be one of ``values`` (checked while parsing: a bad value from the
    environment is reported naming its variable)."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        if value is not None and value.strip().lower() not in values:
            raise typer.BadParameter(f"unknown --{what} {value!r}; use {'|'.join(values)}")
        return value

    return check


def _device(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
    spec = (value or "").strip().lower()
    known = spec in ("auto", "cpu", "cuda", "mps") or (spec.startswith("cuda:") and spec[5:].isdigit())
    listed = spec.startswith("cuda:") and all(i.isdigit() for i in spec[5:].split(","))  # jobs: a process each
    if value is not None and not known and not listed:
        raise typer.BadParameter(f"unknown --device {value!r}; use auto|cpu|cuda[:N]|mps (cuda:0,1 for jobs)")
    return value


# ---------------------------------------------------------------------------- input and output

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
        "--text-column",
        "--column",
        help="Field of .jsonl input, or column of .csv/.tsv input (default: the table rule: text, then sentence, "
        "then the only column that holds text).",
        show_default=False,
    ),
]
EncodingOpt = Annotated[
    str, typer.Option("--encoding", help="Text encoding of the input (file or stdin), e.g. latin-1, utf-16.")
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="Output: text (for people and filters), jsonl, tsv.",
        metavar="text|jsonl|tsv",
        envvar="LLMTOOL_FORMAT",
        callback=mark_environment,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Short for --format jsonl.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or info on stderr.")]
SkipInvalidOpt = Annotated[
    bool, typer.Option("--skip-invalid", help="Write an error record for a bad line and go on (default: stop, exit 2).")
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", "-b", help="Inputs per forward pass.", min=1, envvar="LLMTOOL_BATCH_SIZE")
]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed, for repeatable output.", show_default=False)]

# ---------------------------------------------------------------------------- the model (ModelOptions)

RevisionOpt = Annotated[str | None, option(ModelOptions, "revision", "--revision", show_default=False)]
OfflineOpt = Annotated[bool, option(ModelOptions, "offline", "--offline", envvar="LLMTOOL_OFFLINE")]
DeviceOpt = Annotated[str, option(ModelOptions, "device", "--device", envvar="LLMTOOL_DEVICE", callback=_device)]
DtypeOpt = Annotated[
    str, option(ModelOptions, "dtype", "--dtype", envvar="LLMTOOL_DTYPE", callback=_choice(DTYPES, "dtype"))
]
PickleOpt = Annotated[bool, option(ModelOptions, "allow_pickle", "--allow-pickle")]
RemoteCodeOpt = Annotated[bool, option(ModelOptions, "trust_remote_code", "--trust-remote-code")]
VerboseOpt = Annotated[bool, option(ModelOptions, "verbose", "--verbose", "-v")]
EngineOpt = Annotated[
    str, option(ModelOptions, "engine", "--engine", envvar="LLMTOOL_ENGINE", callback=_choice(ENGINES, "engine"))
]
QuantizeOpt = Annotated[str, option(ModelOptions, "quantize", "--quantize")]

# ---------------------------------------------------------------------------- using trained models

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
StrideOpt = Annotated[int | None, option(ScoreOptions, "stride", "--stride", show_default=False, min=1)]
WindowOpt = Annotated[
    int | None,
    typer.Option(
        "--max-length", help="Window size in tokens (default: the model's context).", show_default=False, min=2
    ),
]
BosOpt = Annotated[bool, option(ScoreOptions, "bos", "--bos/--no-bos")]
TextColumnOpt = Annotated[
    str | None,
    typer.Option(
        "--text-column",
        "--column",
        help="Text column of .csv/.tsv input, or field of .jsonl (default: the table rule: text, then sentence, "
        "then the only column that holds text besides the label).",
        show_default=False,
    ),
]
LabelColumnOpt = Annotated[str, option(EvaluateOptions, "label_column", "--label-column")]

# ---------------------------------------------------------------------------- training (TrainSettings)
# Shared by finetune and pretrain; each command's default comes from its own settings class.

EpochsOpt = Annotated[float | None, option(TrainSettings, "epochs", "--epochs", show_default=False)]
MaxStepsOpt = Annotated[int | None, option(TrainSettings, "max_steps", "--max-steps", show_default=False)]
LrOpt = Annotated[float | None, option(TrainSettings, "lr", "--lr", show_default=False)]
TrainBatchOpt = Annotated[int | None, option(TrainSettings, "batch_size", "--batch-size", "-b", show_default=False)]
GradAccumOpt = Annotated[int, option(TrainSettings, "grad_accum", "--grad-accum")]
WarmupOpt = Annotated[float | None, option(TrainSettings, "warmup_ratio", "--warmup-ratio", show_default=False)]
WeightDecayOpt = Annotated[float, option(TrainSettings, "weight_decay", "--weight-decay")]
TrainSeedOpt = Annotated[int, option(TrainSettings, "seed", "--seed")]
Bf16Opt = Annotated[bool, typer.Option("--bf16", help="bfloat16 mixed precision (default: on GPUs that have it).")]
Fp16Opt = Annotated[bool, typer.Option("--fp16", help="float16 mixed precision (CUDA GPUs).")]
Fp32Opt = Annotated[bool, typer.Option("--fp32", help="Full precision, even on a GPU.")]
GradCkptOpt = Annotated[bool, option(TrainSettings, "gradient_checkpointing", "--gradient-checkpointing")]
SaveStepsOpt = Annotated[int | None, option(TrainSettings, "save_steps", "--save-steps", show_default=False)]
PatienceOpt = Annotated[int | None, option(TrainSettings, "patience", "--patience", show_default=False)]
LoggingStepsOpt = Annotated[int, option(TrainSettings, "logging_steps", "--logging-steps")]
EvalOnStartOpt = Annotated[bool, option(TrainSettings, "eval_on_start", "--eval-on-start")]
ReportToOpt = Annotated[list[str] | None, option(TrainSettings, "report_to", "--report-to", show_default=False)]
OverwriteOpt = Annotated[bool, option(TrainSettings, "overwrite", "--overwrite")]
ResumeOpt = Annotated[bool, option(TrainSettings, "resume", "--resume")]
KeepCheckpointsOpt = Annotated[bool, option(TrainSettings, "keep_checkpoints", "--keep-checkpoints")]
TrainDeviceOpt = Annotated[
    str,
    option(
        TrainSettings,
        "device",
        "--device",
        envvar="LLMTOOL_DEVICE",
        callback=_choice(("auto", "cpu", "cuda"), "device"),
    ),
]
DataEncodingOpt = Annotated[str, option(FinetuneSettings, "encoding", "--encoding")]
LineByLineOpt = Annotated[bool, option(FinetuneSettings, "line_by_line", "--line-by-line")]
MlmProbabilityOpt = Annotated[float, option(FinetuneSettings, "mlm_probability", "--mlm-probability")]
WholeWordMaskOpt = Annotated[bool, option(FinetuneSettings, "whole_word_mask", "--whole-word-mask")]
TextColumnTrainOpt = Annotated[str | None, option(FinetuneSettings, "text_column", "--text-column", show_default=False)]
ValidSplitPretrainOpt = Annotated[float, option(PretrainSettings, "valid_split", "--valid-split")]


# ---------------------------------------------------------------------------- checks of flag values


def output_format(fmt: str, json_flag: bool, extra: tuple[str, ...] = ()) -> OutputFormat:
    """The output format from --format and --json (``extra``: formats only this command has, e.g. csv)."""
    from_env = isinstance(fmt, FromEnvironment)
    if json_flag:
        if fmt not in ("text", "jsonl") and not from_env:  # a flag beats LLMTOOL_FORMAT
            raise UsageError("--json and --format disagree; give one of them")
        return "jsonl"
    known = ("text", "jsonl", "tsv", *extra)
    if fmt not in known:
        where = f"{fmt.variable}" if isinstance(fmt, FromEnvironment) else "--format"
        raise UsageError(f"unknown {where} {fmt!r}; use {', '.join(known[:-1])} or {known[-1]}")
    return fmt  # type: ignore[return-value]


def encoding(name: str) -> str:
    """The codec's canonical name; an unknown one is a usage error."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise UsageError(f"unknown --encoding {name!r}") from None


def model_options(**values: Any) -> ModelOptions:
    """ModelOptions from the command's flags of the same names (the rest keep their defaults)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(ModelOptions)}
    return ModelOptions(**{k: v for k, v in values.items() if k in names})
