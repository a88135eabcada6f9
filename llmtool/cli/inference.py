"""The inference commands: each reads its input, builds its settings, and calls its task module's one
entry (the same function the Python API is), then writes the records. No model is loaded here."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from llmtool.cli import app, handle_errors, write
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
    LabelColumnOpt,
    MaxLengthOpt,
    OfflineOpt,
    PickleOpt,
    QuantizeOpt,
    QuietOpt,
    RemoteCodeOpt,
    RevisionOpt,
    SeedOpt,
    SkipInvalidOpt,
    StrideOpt,
    TextPairColumnOpt,
    VerboseOpt,
    WindowOpt,
    encoding,
    mark_environment,
    model_envvars,
    model_options,
    option,
    output_format,
)
from llmtool.io.streams import Console
from llmtool.settings import (
    AttentionOptions,
    ClassifyOptions,
    EvaluateOptions,
    FillMaskOptions,
    GenerateOptions,
    NextSentenceOptions,
    ScoreOptions,
    defaults,
)

FILL = defaults(FillMaskOptions)
GEN = defaults(GenerateOptions)
CLASSIFY = defaults(ClassifyOptions)
SCORE = defaults(ScoreOptions)
NSP = defaults(NextSentenceOptions)
EVAL = defaults(EvaluateOptions)
ATTN = defaults(AttentionOptions)


@app.command("fill-mask")
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
    ] = "bert-base-uncased",
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
    records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    results = fill_mask(records, options=options, model_options=model_options(**locals()))
    write(results, output, FORMATTER, Console(quiet, verbose))


@app.command("generate")
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
    ] = "gpt2",
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
) -> None:
    """Continue each prompt with a causal language model (GPT-2, Llama, ...).

    text: each output followed by a newline (outputs may hold newlines: use --json to parse).
    jsonl: {"index", "input", "generations": [{"text", "finish_reason", "new_tokens"}]}.

    Example: llmtool generate "Once upon a time" --max-new-tokens 20 --seed 1
    """
    from llmtool.io.streams import read_records, stdout_isatty
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
    records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    streaming = should_stream(options, text not in (None, "-"), output == "text", stdout_isatty())
    results = generate(
        records, options=options, model_options=model_options(**locals()), stream_to=sys.stdout if streaming else None
    )
    write(results, output, FORMATTER, Console(quiet, verbose))


# ---------------------------------------------------------------------------- using trained models

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
ClassifierOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Sequence classifier: a folder from `llmtool finetune`, or a Hub id.",
        envvar=model_envvars("classify"),
    ),
]


@app.command("classify")
@handle_errors
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
    encoding_name: EncodingOpt = "utf-8",
    top_k: Annotated[int, option(ClassifyOptions, "top_k", "--top-k", "-k", min=1)] = CLASSIFY.top_k,
    max_length: MaxLengthOpt = CLASSIFY.max_length,
    skip_invalid: SkipInvalidOpt = CLASSIFY.skip_invalid,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            help="Output: text, jsonl, tsv, or csv (the input rows with prediction columns appended).",
            metavar="text|jsonl|tsv|csv",
            envvar="LLMTOOL_FORMAT",
            callback=mark_environment,
        ),
    ] = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = CLASSIFY.batch_size,
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
    """Label each text (or text pair) with a fine-tuned sequence classifier.

    Labels are the model's own names (id2label in its config).

    text: LABEL<TAB>PROBABILITY per input, one pair per --top-k.
    jsonl: {"index", "input", "label", "score", "predictions": [{"label", "id", "score"}]}.
    csv: each input row (or text) with predicted_label, predicted_score appended.

    Example: llmtool classify --model ./sst2-model --input reviews.csv --text-column review --format csv
    """
    from llmtool.tasks.classify import FORMATTER, classify, csv_formatter, read_examples

    output = output_format(fmt, json_flag, extra=("csv",))
    options = ClassifyOptions(top_k=top_k, batch_size=batch_size, max_length=max_length, skip_invalid=skip_invalid)
    options.check()
    examples = read_examples(
        text,
        text_pair,
        input_path,
        text_column=text_column,
        pair_column=text_pair_column,
        encoding=encoding(encoding_name),
    )
    formatter = FORMATTER
    if output == "csv":
        formatter = csv_formatter(examples.header, examples.has_pair, top_k, skip_invalid)
    results = classify(
        examples.items, options=options, model_options=model_options(**locals()), with_rows=output == "csv"
    )
    write(results, output, formatter, Console(quiet, verbose))


@app.command("score")
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
    ] = "gpt2",
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
    from llmtool.io.streams import read_records
    from llmtool.tasks.score import FORMATTER, score

    output = output_format(fmt, json_flag)
    options = ScoreOptions(
        batch_size=batch_size, max_length=max_length, stride=stride, bos=bos, total=total, skip_invalid=skip_invalid
    )
    options.check()
    records = read_records(text, input_path, column, encoding=encoding(encoding_name))
    results = score(records, options=options, model_options=model_options(**locals()))
    write(results, output, FORMATTER, Console(quiet, verbose))


@app.command("evaluate")
@handle_errors
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
        str,
        typer.Option(
            "--model",
            "-m",
            help="A sequence classifier, or a causal or masked LM (folder or Hub id).",
            envvar=model_envvars("evaluate"),
        ),
    ],
    text_column: TextColumnOpt = None,
    text_pair_column: TextPairColumnOpt = None,
    label_column: LabelColumnOpt = EVAL.label_column,
    encoding_name: EncodingOpt = "utf-8",
    max_length: Annotated[
        int | None, option(EvaluateOptions, "max_length", "--max-length", show_default=False, min=2)
    ] = EVAL.max_length,
    stride: StrideOpt = EVAL.stride,
    bos: BosOpt = EVAL.bos,
    plot: Annotated[
        str | None, option(EvaluateOptions, "plot", "--plot", metavar="FILE.png", show_default=False)
    ] = EVAL.plot,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = EVAL.batch_size,
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
    """Judge a model on held-out data: classifiers by accuracy and F1, language models by perplexity.

    Classifiers: accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix.
    Causal LMs: corpus perplexity; masked LMs: pseudo-perplexity (both pooled by token count).

    text: Rich tables on a terminal; a plain report otherwise (see the README).
    jsonl: one object: {"task", "model", "data", "examples", "accuracy", "macro_f1", "labels",
    "per_class", "confusion_matrix"} or {"task", "objective", ..., "tokens", "perplexity"}.
    tsv: metric<TAB>label<TAB>predicted<TAB>value, one number per row.

    Example: llmtool evaluate dev.csv --model ./sst2-model --text-column sentence --json
    """
    from llmtool.io.streams import stdout_isatty, write_records
    from llmtool.tasks.evaluate import FORMATTER, evaluate, render_rich

    output = output_format(fmt, json_flag)
    options = EvaluateOptions(
        text_column=text_column,
        pair_column=text_pair_column,
        label_column=label_column,
        batch_size=batch_size,
        max_length=max_length,
        stride=stride,
        bos=bos,
        encoding=encoding(encoding_name),
        plot=plot,
    )
    options.check()
    console = Console(quiet, verbose)
    result = evaluate(data, options=options, model_options=model_options(**locals()), console=console)
    if output == "text" and stdout_isatty():
        render_rich(result, sys.stdout)
    else:
        write_records([result], output, FORMATTER)


@app.command("next-sentence")
@handle_errors
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
    encoding_name: EncodingOpt = "utf-8",
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A BERT with its next-sentence head (BertForPreTraining or ...ForNSP).",
            envvar=model_envvars("next-sentence"),
        ),
    ] = "bert-base-uncased",
    max_length: Annotated[
        int | None, option(NextSentenceOptions, "max_length", "--max-length", show_default=False, min=4)
    ] = NSP.max_length,
    fmt: FormatOpt = "text",
    json_flag: JsonOpt = False,
    batch_size: BatchOpt = NSP.batch_size,
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
    """Probability that sentence B follows sentence A, from BERT's next-sentence-prediction head.

    text: PROBABILITY<TAB>A<TAB>B per pair (4 decimals).
    jsonl: {"index", "first", "second", "is_next"}.

    Example: llmtool next-sentence --model ./bert-nsp "I was hungry." "I ate a sandwich."
    """
    from llmtool.tasks.next_sentence import FORMATTER, next_sentence, read_pairs

    output = output_format(fmt, json_flag)
    options = NextSentenceOptions(batch_size=batch_size, max_length=max_length)
    options.check()
    pairs = read_pairs(
        first,
        second,
        input_path,
        first_column=first_column,
        second_column=second_column,
        encoding=encoding(encoding_name),
    )
    results = next_sentence(pairs, options=options, model_options=model_options(**locals()))
    write(results, output, FORMATTER, Console(quiet, verbose))


@app.command("attention")
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
    ] = "bert-base-uncased",
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
    from llmtool.io.streams import write_records
    from llmtool.tasks.attention import FORMATTER, attention

    out_format = output_format(fmt, json_flag)
    options = AttentionOptions(layer=layer, head=head, output=output)
    options.check()
    console = Console(quiet, verbose)
    record = attention(text, options=options, model_options=model_options(**locals()), console=console)
    write_records([record], out_format, FORMATTER)
    if output is not None:
        console.info(f"wrote {output}")
