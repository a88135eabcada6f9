"""The training commands (finetune, pretrain) and the corpus maker: each builds its settings from the
flags of the same names and calls its task module's one entry, which owns the run (signals deferred
during set-up, the output folder, the result printed by the main process)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, TypeVar

import typer

from llmtool.cli.common import handle_errors
from llmtool.cli.options import (
    MODEL,
    Bf16Opt,
    DataEncodingOpt,
    EpochsOpt,
    EvalOnStartOpt,
    Fp16Opt,
    Fp32Opt,
    GradAccumOpt,
    GradCkptOpt,
    KeepCheckpointsOpt,
    LineByLineOpt,
    LoggingStepsOpt,
    LrOpt,
    MaxStepsOpt,
    MlmProbabilityOpt,
    OfflineOpt,
    OverwriteOpt,
    PatienceOpt,
    PickleOpt,
    QuietOpt,
    RemoteCodeOpt,
    ReportToOpt,
    ResumeOpt,
    RevisionOpt,
    SaveStepsOpt,
    TrainBatchOpt,
    TrainDeviceOpt,
    TrainSeedOpt,
    VerboseOpt,
    WarmupOpt,
    WeightDecayOpt,
    WholeWordMaskOpt,
    encoding,
    model_envvars,
    model_options,
    option,
)
from llmtool.errors import UsageError
from llmtool.io.console import Console
from llmtool.settings import FinetuneSettings, PretrainSettings, defaults, precision_flag

SettingsT = TypeVar("SettingsT")
FT = defaults(FinetuneSettings)
PT = defaults(PretrainSettings)


def settings_from(cls: type[SettingsT], options: dict[str, Any], **values: Any) -> SettingsT:
    """A training command's settings: each field from the option of the same name (the parameters in
    ``options``, the command's ``locals()``), then ``values``; --encoding checked, --report-to none by default."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    given = {name: value for name, value in options.items() if name in names}
    given["encoding"] = encoding(given["encoding"])
    given["report_to"] = list(given["report_to"]) if given.get("report_to") else ["none"]
    return cls(**{**given, **values})


@handle_errors
def finetune_command(
    train: Annotated[
        str,
        typer.Argument(
            help="Training data: .csv/.tsv with a header (classify, clm, mlm), or .txt/.jsonl text (clm, mlm); "
            "seq2seq: source/target pairs in a .csv/.tsv/.jsonl, or a headerless .txt of source<TAB>target.",
            metavar="TRAIN",
            show_default=False,
        ),
    ],
    task: Annotated[
        str, typer.Option("--task", "-t", help="classify | clm | mlm | embed | tag | qa | seq2seq.", metavar="TASK")
    ] = FT.task,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Hub id or local folder (default: bert-base-uncased; gpt2 for clm; all-MiniLM-L6-v2 for embed; "
            "t5-small for seq2seq).",
            show_default=False,
            envvar=model_envvars("finetune"),
        ),
    ] = MODEL.model,
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
    ] = FT.valid,
    valid_split: Annotated[
        float, typer.Option("--valid-split", help="Share of TRAIN held out (seeded; stratified for classify); 0: none.")
    ] = FT.valid_split,
    text_column: Annotated[
        str | None,
        typer.Option(
            "--text-column",
            help="Text column (default: text, then sentence, then the only text column).",
            show_default=False,
        ),
    ] = FT.text_column,
    text_pair_column: Annotated[
        str | None,
        typer.Option(
            "--text-pair-column", help="Second text column, for sentence pairs (classify).", show_default=False
        ),
    ] = FT.text_pair_column,
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="Label column (classify) (default: label).", show_default=False)
    ] = FT.label_column,
    encoding: DataEncodingOpt = FT.encoding,
    max_length: Annotated[
        int | None,
        typer.Option(
            "--max-length",
            help="classify: tokens per example (default: the model's limit); seq2seq: per source and per target "
            "(default: the model's limit, at most 256).",
            show_default=False,
        ),
    ] = FT.max_length,
    block_size: Annotated[
        int | None,
        typer.Option(
            "--block-size", help="clm/mlm: tokens per block (default: model limit, up to 1024).", show_default=False
        ),
    ] = FT.block_size,
    line_by_line: LineByLineOpt = FT.line_by_line,
    mlm_probability: MlmProbabilityOpt = FT.mlm_probability,
    whole_word_mask: WholeWordMaskOpt = FT.whole_word_mask,
    label_all_subwords: Annotated[
        bool, option(FinetuneSettings, "label_all_subwords", "--label-all-subwords")
    ] = FT.label_all_subwords,
    doc_stride: Annotated[
        int | None, option(FinetuneSettings, "doc_stride", "--doc-stride", show_default=False)
    ] = FT.doc_stride,
    epochs: EpochsOpt = FT.epochs,
    max_steps: MaxStepsOpt = FT.max_steps,
    prompt_column: Annotated[
        str | None, option(FinetuneSettings, "prompt_column", "--prompt-column", show_default=False)
    ] = FT.prompt_column,
    response_column: Annotated[
        str | None, option(FinetuneSettings, "response_column", "--response-column", show_default=False)
    ] = FT.response_column,
    source_column: Annotated[
        str | None, option(FinetuneSettings, "source_column", "--source-column", show_default=False)
    ] = FT.source_column,
    target_column: Annotated[
        str | None, option(FinetuneSettings, "target_column", "--target-column", show_default=False)
    ] = FT.target_column,
    lora: Annotated[bool, option(FinetuneSettings, "lora", "--lora")] = FT.lora,
    lora_r: Annotated[int, option(FinetuneSettings, "lora_r", "--lora-r")] = FT.lora_r,
    lora_alpha: Annotated[int, option(FinetuneSettings, "lora_alpha", "--lora-alpha")] = FT.lora_alpha,
    lora_dropout: Annotated[float, option(FinetuneSettings, "lora_dropout", "--lora-dropout")] = FT.lora_dropout,
    lora_targets: Annotated[
        str | None, option(FinetuneSettings, "lora_targets", "--lora-targets", metavar="NAMES", show_default=False)
    ] = None,
    merge: Annotated[bool, option(FinetuneSettings, "merge", "--merge")] = FT.merge,
    lr: Annotated[float | None, option(FinetuneSettings, "lr", "--lr", show_default=False)] = FT.lr,
    batch_size: TrainBatchOpt = FT.batch_size,
    grad_accum: GradAccumOpt = FT.grad_accum,
    warmup_ratio: WarmupOpt = FT.warmup_ratio,
    weight_decay: WeightDecayOpt = FT.weight_decay,
    seed: TrainSeedOpt = FT.seed,
    bf16: Bf16Opt = False,
    fp16: Fp16Opt = False,
    fp32: Fp32Opt = False,
    gradient_checkpointing: GradCkptOpt = FT.gradient_checkpointing,
    save_steps: SaveStepsOpt = FT.save_steps,
    patience: PatienceOpt = FT.patience,
    logging_steps: LoggingStepsOpt = FT.logging_steps,
    eval_on_start: EvalOnStartOpt = FT.eval_on_start,
    best_metric: Annotated[
        str | None, option(FinetuneSettings, "best_metric", "--best-metric", show_default=False)
    ] = FT.best_metric,
    report_to: ReportToOpt = None,
    overwrite: OverwriteOpt = FT.overwrite,
    resume: ResumeOpt = FT.resume,
    keep_checkpoints: KeepCheckpointsOpt = FT.keep_checkpoints,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the data and print what would happen; train nothing.")
    ] = False,
    json_flag: Annotated[
        bool, typer.Option("--json", help="Print the final metrics (or the --dry-run report) as JSON.")
    ] = False,
    device: TrainDeviceOpt = FT.device,
    revision: RevisionOpt = MODEL.revision,
    offline: OfflineOpt = MODEL.offline,
    allow_pickle: PickleOpt = MODEL.allow_pickle,
    trust_remote_code: RemoteCodeOpt = MODEL.trust_remote_code,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
) -> None:
    """Fine-tune a model on a CSV: classify (text [+ pair] -> label), clm/mlm (continued pre-training), or
    seq2seq (an encoder-decoder on source -> target pairs: translation, summarization).

    The data is checked before the model loads. The best checkpoint (validation accuracy for classify, loss for
    clm/mlm) is written to --output in safetensors, with metrics.json and llmtool_settings.json beside it.

    Runs unchanged under torchrun and accelerate launch. Ctrl-C saves a checkpoint; --resume continues from it.

    Example: llmtool finetune reviews.csv --model distilbert-base-uncased --output reviews-model --epochs 2
    """
    from llmtool.io.streams import json_line
    from llmtool.training.finetune import default_model, finetune, format_report
    from llmtool.training.finetune import dry_run as plan
    from llmtool.training.results import print_result

    if output is None and not dry_run:
        raise UsageError("--output DIR is required (or --dry-run)")
    targets = [t.strip() for t in lora_targets.split(",")] if lora_targets is not None else None
    settings = settings_from(
        FinetuneSettings, locals(), precision=precision_flag(bf16, fp16, fp32), lora_targets=targets
    )
    settings.check()
    mopts = model_options(**{**locals(), "model": model or default_model(task)})
    if dry_run:
        report = plan(train, settings, mopts)
        typer.echo(json_line(report) if json_flag else format_report(report))
        return
    assert output is not None
    print_result(finetune(train, output, settings, mopts, Console(quiet, verbose)), json_flag)


@handle_errors
def merge_command(
    adapter: Annotated[
        str, typer.Argument(help="A LoRA adapter folder (finetune --lora).", metavar="ADAPTER", show_default=False)
    ],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Folder for the merged full model (new or empty).", show_default=False)
    ],
    offline: OfflineOpt = MODEL.offline,
    json_flag: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    verbose: VerboseOpt = MODEL.verbose,
) -> None:
    """Merge a LoRA adapter into its base model and write a full model (safetensors), which every engine runs.

    The base model is the one named in ADAPTER/adapter_config.json, located like any --model (offline rules too).

    Example: llmtool merge facts-lora --output facts-merged
    """
    from llmtool.io.streams import json_line
    from llmtool.lora import merge

    result = merge(adapter, output, model_options(model=adapter, offline=offline, verbose=verbose))
    typer.echo(json_line(result) if json_flag else result["model"])


@handle_errors
def pretrain_command(
    corpus: Annotated[
        list[str],
        typer.Argument(
            help="Text: .txt (a sentence or line per line, blank lines between documents), or .csv/.tsv/.jsonl "
            "(a text column; a document per row); seq2seq: pairs (a headerless .txt of source<TAB>target, or "
            ".csv/.tsv/.jsonl with source and target columns). Several files are read as one corpus.",
            metavar="CORPUS...",
            show_default=False,
        ),
    ],
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="mlm: a BERT (masked LM); clm: a GPT-2 (next-token prediction); seq2seq: a Marian "
            "encoder-decoder on parallel text (translation).",
        ),
    ] = PT.objective,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Folder for the new model (required).", show_default=False)
    ] = None,
    nsp: Annotated[
        bool, typer.Option("--nsp", help="mlm: also train BERT's next-sentence head on sentence pairs.")
    ] = PT.nsp,
    size: Annotated[
        str, typer.Option("--size", help="Model size preset: tiny, mini, small, base (see docs/commands/pretrain.md).")
    ] = PT.size,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            help="config.json: a whole model config, or just the keys that change the --size preset.",
            metavar="FILE",
            show_default=False,
        ),
    ] = PT.config,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            "--tokenizer", help="Reuse this tokenizer (folder or Hub id) instead of training one.", show_default=False
        ),
    ] = PT.tokenizer,
    vocab_size: Annotated[
        int | None, option(PretrainSettings, "vocab_size", "--vocab-size", show_default=False)
    ] = PT.vocab_size,
    min_frequency: Annotated[
        int | None, option(PretrainSettings, "min_frequency", "--min-frequency", show_default=False)
    ] = PT.min_frequency,
    block_size: Annotated[
        int | None, option(PretrainSettings, "block_size", "--block-size", show_default=False)
    ] = PT.block_size,
    line_by_line: Annotated[
        bool | None, option(PretrainSettings, "line_by_line", "--line-by-line/--pack", show_default=False)
    ] = PT.line_by_line,
    mlm_probability: Annotated[
        float | None, option(PretrainSettings, "mlm_probability", "--mlm-probability", show_default=False)
    ] = PT.mlm_probability,
    whole_word_mask: WholeWordMaskOpt = PT.whole_word_mask,
    text_column: Annotated[
        str | None,
        typer.Option(
            "--text-column",
            help="Text column of .csv/.tsv/.jsonl corpora (default: text, then sentence, then the only one).",
            show_default=False,
        ),
    ] = PT.text_column,
    source_column: Annotated[
        str | None, option(PretrainSettings, "source_column", "--source-column", show_default=False)
    ] = PT.source_column,
    target_column: Annotated[
        str | None, option(PretrainSettings, "target_column", "--target-column", show_default=False)
    ] = PT.target_column,
    valid: Annotated[
        str | None,
        typer.Option("--valid", help="Validation corpus (default: --valid-split of the corpus).", show_default=False),
    ] = PT.valid,
    valid_split: Annotated[
        float, typer.Option("--valid-split", help="Share of the documents held out for validation (seeded); 0: none.")
    ] = PT.valid_split,
    encoding: DataEncodingOpt = PT.encoding,
    epochs: EpochsOpt = PT.epochs,
    max_steps: MaxStepsOpt = PT.max_steps,
    lr: LrOpt = PT.lr,
    batch_size: TrainBatchOpt = PT.batch_size,
    grad_accum: GradAccumOpt = PT.grad_accum,
    warmup_ratio: WarmupOpt = PT.warmup_ratio,
    weight_decay: WeightDecayOpt = PT.weight_decay,
    seed: TrainSeedOpt = PT.seed,
    bf16: Bf16Opt = False,
    fp16: Fp16Opt = False,
    fp32: Fp32Opt = False,
    gradient_checkpointing: GradCkptOpt = PT.gradient_checkpointing,
    save_steps: SaveStepsOpt = PT.save_steps,
    patience: PatienceOpt = PT.patience,
    logging_steps: LoggingStepsOpt = PT.logging_steps,
    eval_on_start: EvalOnStartOpt = PT.eval_on_start,
    report_to: ReportToOpt = None,
    overwrite: OverwriteOpt = PT.overwrite,
    resume: ResumeOpt = PT.resume,
    keep_checkpoints: KeepCheckpointsOpt = PT.keep_checkpoints,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Check the corpus, build the examples and print the plan; train nothing."),
    ] = False,
    json_flag: Annotated[
        bool, typer.Option("--json", help="Print the final metrics (or the --dry-run report) as JSON.")
    ] = False,
    device: TrainDeviceOpt = PT.device,
    offline: OfflineOpt = MODEL.offline,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = MODEL.verbose,
) -> None:
    """Pre-train a new BERT (mlm, optionally with --nsp) or GPT-2 (clm) from scratch on a text corpus, or a
    Marian encoder-decoder (seq2seq) on parallel text.

    A tokenizer is trained on the corpus first (WordPiece for mlm, byte-level BPE for clm, one BPE vocabulary
    for both sides for seq2seq) unless --tokenizer is given. The model goes to --output in safetensors, ready
    for fill-mask, generate, next-sentence, translate, finetune and AutoModel*.from_pretrained, with
    metrics.json and llmtool_settings.json.

    Runs unchanged under torchrun and accelerate launch. Ctrl-C saves a checkpoint; --resume continues from it.

    With no training flags, the layout (lines or packed blocks), the steps, the batch and the learning
    rate are chosen from the corpus and the size preset; one "plan:" line on stderr (and --dry-run) says which.

    Example: llmtool corpus facts -o facts.txt && llmtool pretrain facts.txt --objective mlm --output facts-bert
    """
    from llmtool.training.pretrain import pretrain
    from llmtool.training.results import print_result

    if output is None and not dry_run:
        raise UsageError("--output DIR is required (or --dry-run)")
    settings = settings_from(PretrainSettings, locals(), precision=precision_flag(bf16, fp16, fp32))
    settings.check()
    if dry_run:
        from llmtool.io.streams import json_line
        from llmtool.training.pretrain import dry_run as plan
        from llmtool.training.pretrain import format_dry_run

        report = plan(corpus, settings, offline=offline)
        typer.echo(json_line(report) if json_flag else format_dry_run(report))
        return
    assert output is not None
    print_result(pretrain(corpus, output, settings, Console(quiet, verbose), offline=offline), json_flag)


corpus_app = typer.Typer(
    help="Write a training corpus that llmtool can make by itself (offline, no downloads).",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@corpus_app.command("facts")
@handle_errors
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
    from llmtool.training.corpus import FactsOptions, summary, write_facts

    options = FactsOptions(seed=seed, documents_per_country=documents_per_country, countries=countries, holdout=holdout)
    counts = write_facts(options, output, probes, pairs)
    Console(quiet).info(summary(counts))
