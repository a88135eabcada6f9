"""``llmtool finetune``: a CSV (or text file) -> checked datasets -> ``transformers.Trainer`` -> a saved model.

Three tasks:

- ``classify``: sequence classification (one text, or a pair) with string or integer labels; the
  label names go into the model config (``id2label``), so predictions come back as the user's names.
- ``clm``: continued causal-LM training (GPT-2 style) on a text column or a text file.
- ``mlm``: continued masked-LM training (BERT style), likewise.

The data is checked in full before a model loads (:mod:`llmtool.training.data`); the run itself (output
folder, progress, signals, resume, atomic save) is :mod:`llmtool.training.trainer`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

from llmtool.errors import UsageError
from llmtool.io.streams import Console
from llmtool.models import prepare_environment
from llmtool.settings import LORA_LR_FACTOR, FinetuneSettings, ModelOptions
from llmtool.training.data import ColumnSpec, Task, TrainingData, prepare
from llmtool.training.lm_examples import (
    PACK_ROWS,
    BlockPacker,
    LineEncoder,
    MlmCollator,
    fingerprint,
    mask_once,
    num_proc,
    token_ids,
)
from llmtool.training.trainer import TrainingRun, perplexity, signals_deferred, world_size

DEFAULT_MODELS: dict[str, str] = {"classify": "bert-base-uncased", "clm": "gpt2", "mlm": "bert-base-uncased"}
MAX_BLOCK = 1024  # the default block size is the model's limit, up to this


def default_model(task: str) -> str:
    return DEFAULT_MODELS.get(task, DEFAULT_MODELS["classify"])


# --------------------------------------------------------------------------- the command


def finetune(
    train_path: str,
    output_dir: str,
    settings: FinetuneSettings,
    model_options: ModelOptions,
    console: Console | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model_options.model`` on ``train_path``; write the model to ``output_dir``.

    Returns the final metrics (also written to ``output_dir/metrics.json``). With ``settings.lora``,
    ``output_dir`` is a PEFT adapter folder (:mod:`llmtool.lora`), or with ``settings.merge`` the
    adapter merged into a full model.
    """
    settings.check()
    model_options.check()
    console = console or Console()
    prepare_environment(model_options.offline, model_options.verbose)
    with signals_deferred(), TrainingRun(output_dir, settings, console) as run:
        data = run.main_first(lambda: _prepare_data(train_path, settings, run.cache_dir))
        for warning in data.warnings:
            run.console.warn(warning)
        run.console.info(_data_summary(data))
        tokenizer, model = _load(settings, model_options, data)
        limit = _length_limit(settings, tokenizer, model)
        finish = None
        if settings.lora:
            model, finish = _with_lora(model, settings, model_options, run.console)
        train_ds, valid_ds, cut = run.main_first(lambda: _tokenize_all(data, tokenizer, settings, limit, model_options))
        for warning in cut:
            run.console.warn(warning)
        params = sum(p.numel() for p in model.parameters())
        settings, plan = training_plan(settings, params, len(train_ds), len(valid_ds) if valid_ds is not None else 0)
        run.settings = settings
        run.console.info(plan.line())
        for warning in plan.warnings:
            run.console.warn(warning)
        collator = _collator(
            settings.task,
            tokenizer,
            settings.mlm_probability,
            settings.seed,
            settings.whole_word_mask,
            chat=_is_chat(data),
        )
        record = _record(train_path, settings, model_options, data, limit, len(train_ds), valid_ds)
        result = run.train(
            model,
            tokenizer,
            train_ds,
            valid_ds,
            collator,
            trainer_metrics if settings.task == "classify" else None,
            best_metric="accuracy" if settings.task == "classify" else "loss",
            derived_metrics=None if settings.task == "classify" else perplexity,
            record=record,
            summary={"task": settings.task, "labels": data.labels} if data.labels else {"task": settings.task},
            finish=finish,
        )
    return result


# --------------------------------------------------------------------------- the plan

# What finetune chooses when --lr, --batch-size, --epochs/--max-steps, --warmup-ratio are not given
# (README "Defaults chosen for the data"): measured on SST-2 with all-MiniLM-L6-v2.
SMALL_MODEL = 60_000_000  # parameters: below, a higher learning rate (MiniLM, DistilBERT-sized heads)
LARGE_MODEL = 300_000_000  # parameters: from here on, a lower one (BERT-large and up)
LR = {"small": 1e-4, "base": 5e-5, "large": 2e-5}
SMALL_DATA = 2_000  # examples: below, batches of 8 (more updates per epoch), else 16
MIN_STEPS = 150  # small data gets more epochs, up to this many optimizer steps in all ...
EPOCHS = 3.0  # ... than the usual 3 passes
WARMUP = 0.1  # BERT's recipe: a tenth of the steps


def training_plan(settings: FinetuneSettings, parameters: int, examples: int, valid_examples: int) -> tuple[Any, Any]:
    """The settings with what the user left open chosen for the data and the model, and the plan."""
    from llmtool.training.plan import Rules, make_plan

    size = "small" if parameters < SMALL_MODEL else "large" if parameters >= LARGE_MODEL else "base"
    rules = Rules(
        lr=LR[size] * (LORA_LR_FACTOR if settings.lora else 1), batch_size=8 if examples < SMALL_DATA else 16,
        epochs=EPOCHS, min_steps=MIN_STEPS, max_steps=10**9, warmup_ratio=WARMUP,
    )  # fmt: skip
    layout = "one row per example" if settings.task == "classify" or settings.line_by_line else "packed blocks"
    return make_plan(
        settings, rules, examples=examples, valid_examples=valid_examples, layout=layout, processes=world_size()
    )


def _with_lora(model: Any, settings: FinetuneSettings, opts: ModelOptions, console: Console) -> tuple[Any, Any]:
    """The model wrapped with LoRA adapters, and what writes the output folder's extra files at the end."""
    from llmtool import lora
    from llmtool.models import locate

    ref = locate(dataclasses.replace(opts, device="cpu", dtype="float32", engine="torch"))
    missing = list(getattr(model, "llmtool_missing_keys", []))
    wrapped = lora.wrap(model, settings, lora.base_name(ref), opts.revision, missing)
    counts = lora.parameter_counts(wrapped)
    share = counts["trainable"] / max(1, counts["total"])
    console.info(f"LoRA: {counts['trainable']:,} of {counts['total']:,} parameters trainable ({share:.2%})")
    return wrapped, lambda trained, folder: lora.finish_output(trained, folder, ref, merge=settings.merge)


def _is_chat(data: TrainingData) -> bool:
    from llmtool.training.chat_data import ChatLayout

    return isinstance(data.layout, ChatLayout)


def _prepare_data(train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
    from llmtool.training import chat_data

    if settings.task == "clm" and (
        settings.prompt_column is not None
        or chat_data.has_messages(train_path, settings.text_column, settings.encoding)
    ):
        return chat_data.prepare(
            train_path,
            settings.prompt_column,
            settings.response_column,
            cache_dir=cache_dir,
            valid_path=settings.valid,
            valid_split=settings.valid_split,
            seed=settings.seed,
            encoding=settings.encoding,
        )
    return prepare(
        train_path,
        settings.task,  # type: ignore[arg-type]
        ColumnSpec(settings.text_column, settings.text_pair_column, settings.label_column),
        cache_dir=cache_dir,
        valid_path=settings.valid,
        valid_split=settings.valid_split,
        seed=settings.seed,
        encoding=settings.encoding,
    )


def _data_summary(data: TrainingData) -> str:
    rows = f"{len(data.train)} training rows, {len(data.valid) if data.valid is not None else 0} validation rows"
    labels = f", {len(data.labels)} classes" if data.labels else ""
    return f"{data.layout.path}: {data.layout.describe()}; {rows}{labels}"


# --------------------------------------------------------------------------- model


def _auto_class(task: str) -> Any:
    import transformers

    return {
        "classify": transformers.AutoModelForSequenceClassification,
        "clm": transformers.AutoModelForCausalLM,
        "mlm": transformers.AutoModelForMaskedLM,
    }[task]


def _load(settings: FinetuneSettings, opts: ModelOptions, data: TrainingData) -> tuple[Any, Any]:
    """Tokenizer and model on the CPU in float32: Trainer places them, and mixed precision autocasts."""
    from llmtool.models import load_model, load_tokenizer, locate, set_seed

    ref = locate(dataclasses.replace(opts, device="cpu", dtype="float32", engine="torch"))
    tokenizer = load_tokenizer(ref)
    set_seed(settings.seed)  # new weights (a classification head) are drawn now, before Trainer seeds
    kwargs: dict[str, Any] = {}
    if settings.task == "classify":
        assert data.labels is not None
        kwargs = {
            "num_labels": len(data.labels),
            "id2label": dict(enumerate(data.labels)),
            "label2id": data.label2id,
            "ignore_mismatched_sizes": True,  # a head trained for other classes is replaced
        }
    if settings.lora:  # LoRA must also train and save what the checkpoint lacks (see lora.new_modules)
        model, missing = load_model(_auto_class(settings.task), ref, missing_keys=True, **kwargs)
        model.llmtool_missing_keys = missing
    else:
        model = load_model(_auto_class(settings.task), ref, **kwargs)
    _check_tokenizer(settings.task, tokenizer, model, opts.model)
    return tokenizer, model


def _check_tokenizer(task: str, tokenizer: Any, model: Any, name: str) -> None:
    from llmtool.errors import ModelError
    from llmtool.models import ensure_pad_token

    ensure_pad_token(tokenizer, name)  # batches need padding
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if task == "mlm" and tokenizer.mask_token is None:
        raise ModelError(f"{name}: the tokenizer has no mask token; is it a masked language model?")


def _length_limit(settings: FinetuneSettings, tokenizer: Any, model: Any) -> int:
    """Tokens per example (classify) or per block (clm/mlm), within what the model can take."""
    from llmtool.models import max_input_length

    model_limit = max_input_length(tokenizer, model)
    asked = settings.max_length if settings.task == "classify" else settings.block_size
    if asked is None:
        return model_limit if settings.task == "classify" else min(model_limit, MAX_BLOCK)
    if asked > model_limit:
        flag = "--max-length" if settings.task == "classify" else "--block-size"
        raise UsageError(f"{flag} {asked} is longer than the model takes ({model_limit} tokens)")
    return asked


# --------------------------------------------------------------------------- tokenization


def _tokenize_all(
    data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions
) -> tuple[Any, Any | None, list[str]]:
    """Training and validation examples, and warnings about conversations that --block-size cuts."""
    warnings: list[str] = []
    if _is_chat(data):
        from llmtool.training.chat_data import cut_warning

        train, dropped, cut = _tokenize_conversations(data.train, tokenizer, settings, limit, opts, "train")
        warnings += cut_warning("training", len(data.train), dropped, cut, limit)
        valid = None
        if data.valid is not None:
            valid, dropped, cut = _tokenize_conversations(data.valid, tokenizer, settings, limit, opts, "valid")
            warnings += cut_warning("validation", len(data.valid), dropped, cut, limit)
        if len(train) == 0:
            raise UsageError(f"no training conversation has a response token within --block-size {limit}; "
                             "raise --block-size")  # fmt: skip
    else:
        train = tokenized(data.train, tokenizer, settings, limit, opts, "train")
        valid = tokenized(data.valid, tokenizer, settings, limit, opts, "valid") if data.valid is not None else None
    if valid is not None and len(valid) == 0:
        raise UsageError("the validation data is shorter than one --block-size block; pass --line-by-line or more data")
    if len(train) == 0:
        raise UsageError("the training data is shorter than one --block-size block; lower --block-size")
    return train, valid, warnings


def tokenized(dataset: Any, tokenizer: Any, s: FinetuneSettings, limit: int, opts: ModelOptions, split: str) -> Any:
    """Token ids for each example (classify, line-by-line) or packed blocks of ``limit`` tokens.

    Tokenizing runs in several processes for big data; packing runs afterwards in one, in fixed
    batches of rows, so that the blocks do not depend on how many processes tokenized.
    """
    task: Task = s.task  # type: ignore[assignment]
    if task == "classify":
        fn: Any = _ClassifyEncoder(tokenizer, limit, "text_pair" in dataset.column_names)
    else:
        fn = LineEncoder(tokenizer, limit if s.line_by_line else None, task)
    key = [dataset._fingerprint, opts.model, opts.revision, task, limit, s.line_by_line, split, 2]
    out = dataset.map(
        fn,
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc(s.num_proc, len(dataset)),
        new_fingerprint=fingerprint(key),
        desc=None,
    )
    if task != "classify" and not s.line_by_line:
        packer = BlockPacker(limit)
        out = out.map(packer, batched=True, batch_size=PACK_ROWS, remove_columns=out.column_names,
                      new_fingerprint=fingerprint([*key, "pack"]), desc=None)  # fmt: skip
    if task == "mlm" and split == "valid":
        out = mask_once(out, tokenizer, s.mlm_probability, s.seed, s.whole_word_mask)
    return out


def _tokenize_conversations(
    dataset: Any, tokenizer: Any, s: FinetuneSettings, limit: int, opts: ModelOptions, split: str
) -> tuple[Any, int, int]:
    """One example per conversation (never packed: the labels mark its response tokens).

    Returns the examples, how many conversations were left out (no response token within ``limit``)
    and how many of those kept were cut short.
    """
    from llmtool.training.chat_data import ChatEncoder, has_answer

    key = [dataset._fingerprint, opts.model, opts.revision, "chat", limit, split, 2]
    encoded = dataset.map(
        ChatEncoder(tokenizer, limit),
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=num_proc(s.num_proc, len(dataset)),
        new_fingerprint=fingerprint(key),
        desc=None,
    )
    out = encoded.filter(has_answer, input_columns=["labels"], new_fingerprint=fingerprint([*key, "answered"]),
                         desc=None)  # fmt: skip
    cut = sum(1 for n in out["length"] if n > limit)
    return out.remove_columns("length"), len(encoded) - len(out), cut


class _ClassifyEncoder:
    def __init__(self, tokenizer: Any, limit: int, pairs: bool) -> None:
        self.tokenizer, self.limit, self.pairs = tokenizer, limit, pairs

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        pair = batch["text_pair"] if self.pairs else None
        encoded = self.tokenizer(batch["text"], pair, truncation=True, max_length=self.limit)
        encoded["labels"] = batch["label"]
        return dict(encoded)


def _collator(
    task: str,
    tokenizer: Any,
    mlm_probability: float = 0.15,
    seed: int = 42,
    whole_word: bool = False,
    chat: bool = False,
) -> Any:
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if chat:
        from llmtool.training.chat_data import collator

        return collator(tokenizer)
    if task == "classify":
        return DataCollatorWithPadding(tokenizer)
    if task == "mlm":
        return MlmCollator(tokenizer, mlm_probability, seed, whole_word)
    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


# --------------------------------------------------------------------------- metrics


def trainer_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro-F1 of an evaluation (Trainer's ``compute_metrics``), as ``evaluate`` computes them."""
    import numpy as np

    from llmtool.metrics import classification_metrics, confusion

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    labels = np.asarray(eval_pred.label_ids).tolist()
    predicted = np.asarray(logits).argmax(-1).tolist()
    classes = int(np.asarray(logits).shape[-1])
    metrics = classification_metrics(confusion(labels, predicted, classes), [str(i) for i in range(classes)])
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


# --------------------------------------------------------------------------- records


def _record(
    train_path: str,
    settings: FinetuneSettings,
    opts: ModelOptions,
    data: TrainingData,
    limit: int,
    train_examples: int,
    valid: Any | None,
) -> dict[str, Any]:
    """What llmtool_settings.json says about the run, beside the training settings themselves."""
    return {
        "command": "finetune",
        "task": settings.task,
        "base_model": opts.model,
        "revision": opts.revision,
        "train_file": os.path.abspath(train_path),
        "valid": data.valid_source,
        "columns": {"text": data.layout.text, "text_pair": data.layout.text_pair, "label": data.layout.label},
        "labels": data.labels,
        "rows": {"train": len(data.train), "valid": len(data.valid) if data.valid is not None else 0},
        "examples": {"train": train_examples, "valid": len(valid) if valid is not None else 0},
        "label_counts": {"train": data.train_counts, "valid": data.valid_counts} if data.labels else None,
        "max_length" if settings.task == "classify" else "block_size": limit,
        "world_size": world_size(),
    }


# --------------------------------------------------------------------------- --dry-run


def dry_run(train_path: str, settings: FinetuneSettings, model_options: ModelOptions) -> dict[str, Any]:
    """Check the data and say what training would do (columns, rows, labels, token lengths, steps).

    Loads the tokenizer and the model's config, never its weights; writes nothing that stays.
    """
    settings.check()
    model_options.check()
    prepare_environment(model_options.offline, model_options.verbose)
    with tempfile.TemporaryDirectory(prefix="llmtool-dry-run-") as cache:
        data = _prepare_data(train_path, settings, cache)
        tokenizer, limit = _tokenizer_and_limit(settings, model_options)
        lengths = _token_lengths(data.train, tokenizer, settings.task)
        if _is_chat(data):  # one example per conversation, as with --line-by-line
            settings = dataclasses.replace(settings, line_by_line=True)
        report: dict[str, Any] = {
            "task": settings.task,
            "model": model_options.model,
            "train_file": train_path,
            "columns": {
                "text": data.layout.text or None,
                "text_pair": data.layout.text_pair,
                "label": data.layout.label,
            },
            "rows": {"train": len(data.train), "valid": len(data.valid) if data.valid is not None else 0},
            "valid": data.valid_source,
        }
        if _is_chat(data):
            layout: Any = data.layout
            report["columns"] = (
                {"prompt": layout.prompt, "response": layout.response} if layout.prompt else {"messages": "messages"}
            )
        if data.labels is not None:
            report["labels"] = {"train": data.train_counts, "valid": data.valid_counts}
        report["tokens"] = _length_report(lengths, limit, settings, _is_chat(data))
        examples = _examples_estimate(lengths, len(data.train), limit, settings, _is_chat(data))
        valid_rows = len(data.valid) if data.valid is not None else 0
        counts = _parameter_counts(settings, model_options, data)
        _, plan = training_plan(settings, counts["total"], examples, valid_rows)
        report["steps"] = {
            "examples": examples, "effective_batch": plan.effective_batch, "per_epoch": plan.steps_per_epoch,
            "total": plan.steps, "epochs": plan.epochs,
        }  # fmt: skip
        report["parameters"] = counts
        report["plan"] = plan.as_dict()
        report["warnings"] = [*data.warnings, *plan.warnings]
    return report


def _tokenizer_and_limit(settings: FinetuneSettings, opts: ModelOptions) -> tuple[Any, int]:
    from types import SimpleNamespace

    from llmtool.models import load_config, load_tokenizer, locate

    ref = locate(opts)
    tokenizer = load_tokenizer(ref)
    return tokenizer, _length_limit(settings, tokenizer, SimpleNamespace(config=load_config(ref)))


def _parameter_counts(settings: FinetuneSettings, opts: ModelOptions, data: TrainingData) -> dict[str, int]:
    """Trainable and total parameters of the model as training would build it (on the meta device: no weights)."""
    import torch

    from llmtool import lora
    from llmtool.models import load_config, locate

    ref = locate(opts)
    config = load_config(ref)
    if data.labels is not None:
        config.num_labels = len(data.labels)
    with torch.device("meta"):
        model = _auto_class(settings.task).from_config(config)
        if settings.lora:
            model = lora.wrap(model, settings, lora.base_name(ref), opts.revision, [])
    return lora.parameter_counts(model)


def _token_lengths(dataset: Any, tokenizer: Any, task: str, sample: int = 20_000) -> list[int]:
    """Tokens per row, untruncated, for the first ``sample`` rows (enough for percentiles)."""
    rows = dataset.select(range(min(sample, len(dataset))))
    lengths: list[int] = []
    if "messages" in dataset.column_names:
        from llmtool.training.chat_data import ChatEncoder

        encoder = ChatEncoder(tokenizer, None)
        for batch in rows.iter(batch_size=1000):
            lengths.extend(len(ids) for ids in encoder(batch)["input_ids"])
        return lengths
    for batch in rows.iter(batch_size=1000):
        if task == "classify":
            pair = batch.get("text_pair")
            encoded = tokenizer(batch["text"], pair, add_special_tokens=True)["input_ids"]
        else:
            encoded = token_ids(tokenizer, batch["text"], task)
        lengths.extend(len(ids) for ids in encoded)
    return lengths


def _length_report(lengths: list[int], limit: int, settings: FinetuneSettings, chat: bool) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(lengths)
    report: dict[str, Any] = {
        "per_row": {f"p{q}": int(np.percentile(a, q)) for q in (50, 90, 95, 99)} | {"max": int(a.max())},
        "total": int(a.sum()),
        "rows_measured": len(lengths),
    }
    key = "max_length" if settings.task == "classify" else "block_size"
    report[key] = limit
    if settings.task == "classify" or settings.line_by_line or chat:
        report["truncated_rows"] = int((a > limit).sum())
    return report


def _examples_estimate(lengths: list[int], rows: int, limit: int, settings: FinetuneSettings, chat: bool) -> int:
    """Training examples: one per row, or packed blocks (slightly fewer: each batch of rows drops its tail)."""
    if settings.task == "classify" or settings.line_by_line or chat:
        return rows
    return int(sum(lengths) * rows / max(1, len(lengths)) // limit)


# --------------------------------------------------------------------------- text output


def format_report(report: dict[str, Any]) -> str:
    """The --dry-run report for people."""
    cols = ", ".join(f"{k}={v!r}" for k, v in report["columns"].items() if v) or "every line is a text"
    rows = report["rows"]
    lines = [
        f"task     {report['task']}",
        f"model    {report['model']}",
        f"columns  {cols}",
        f"rows     {rows['train']} train, {rows['valid']} valid ({report['valid']})",
    ]
    if "labels" in report:
        counts = "; ".join(
            f"{split}: " + " ".join(f"{name}={n}" for name, n in report["labels"][split].items())
            for split in ("train", "valid")
            if report["labels"][split]
        )
        lines.append(f"labels   {counts}")
    tokens = report["tokens"]
    per_row = ", ".join(f"{k} {v}" for k, v in tokens["per_row"].items())
    limit = next((f"{k.replace('_', ' ')} {tokens[k]}" for k in ("max_length", "block_size") if k in tokens), "")
    truncated = f", {tokens['truncated_rows']} rows truncated" if "truncated_rows" in tokens else ""
    lines.append(f"tokens   per row: {per_row}; {limit}{truncated}")
    steps = report["steps"]
    lines.append(
        f"steps    {steps['total']} ({steps['per_epoch']} per epoch x {steps['epochs']} epochs; "
        f"{steps['examples']} examples, effective batch {steps['effective_batch']})"
    )
    if "plan" in report:
        plan = report["plan"]
        chosen = f" (chosen: {', '.join(plan['chosen'])})" if plan["chosen"] else ""
        lr, warmup, batch = plan["lr"], plan["warmup_ratio"], plan["batch_size"]
        lines.append(f"plan     lr {lr:g}, warm-up {warmup:g}, batch {batch}{chosen}")
    if "parameters" in report:
        p = report["parameters"]
        share = p["trainable"] / max(1, p["total"])
        lines.append(f"params   {p['trainable']:,} trainable of {p['total']:,} ({share:.2%})")
    lines += [f"warning  {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)
