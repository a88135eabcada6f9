"""``llmtool finetune``: a CSV (or text file) -> checked datasets -> ``transformers.Trainer`` -> a saved model.

What every objective shares lives here: check the data before a model loads, load the model, make
the examples, plan, train, record. What differs by objective (``--task classify|clm|mlm``: the
model class, the examples, the collator, the metrics, PEFT's task type) is the objective's recipe
(:mod:`llmtool.training.recipes`). The data checks are :mod:`llmtool.training.data`; the run itself
(output folder, progress, signals, resume, atomic save) is :mod:`llmtool.training.trainer`.
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
from llmtool.training.arguments import world_size
from llmtool.training.callbacks import signals_deferred
from llmtool.training.data import TrainingData
from llmtool.training.defaults import (
    EPOCHS,
    FINETUNE_BATCH,
    FINETUNE_LR,
    MIN_STEPS,
    PRETRAINED_BATCH,
    PRETRAINED_LR_SHARE,
    PRETRAINED_MIN_STEPS,
    SMALL_DATA,
    SMALL_DATA_BATCH,
    WARMUP,
)
from llmtool.training.recipes import RECIPES, Recipe, recipe_for
from llmtool.training.trainer import TrainingRun

DEFAULT_MODELS: dict[str, str] = {name: recipe.default_model for name, recipe in RECIPES.items()}


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
    recipe = recipe_for(settings.task)
    console = console or Console()
    prepare_environment(model_options.offline, model_options.verbose)
    with signals_deferred(), TrainingRun(output_dir, settings, console) as run:
        data = run.main_first(lambda: recipe.prepare_data(train_path, settings, run.cache_dir))
        for warning in data.warnings:
            run.console.warn(warning)
        run.console.info(_data_summary(data))
        tokenizer, model = _load(recipe, settings, model_options, data)
        limit = _length_limit(recipe, settings, tokenizer, model)
        finish = None
        if settings.lora:
            model, finish = _with_lora(model, recipe, settings, model_options, run.console)
        train_ds, valid_ds, cut = run.main_first(
            lambda: _examples(recipe, data, tokenizer, settings, limit, model_options)
        )
        for warning in cut:
            run.console.warn(warning)
        params = sum(p.numel() for p in model.parameters())
        valid_count = len(valid_ds) if valid_ds is not None else 0
        base = pretraining(model_options)
        settings, plan = training_plan(recipe.settings_for(settings, data), params, len(train_ds), valid_count, base)
        run.settings = settings
        run.console.info(plan.line())
        for warning in plan.warnings:
            run.console.warn(warning)
        record = _record(recipe, train_path, settings, model_options, data, limit, len(train_ds), valid_ds)
        result = run.train(
            model,
            tokenizer,
            train_ds,
            valid_ds,
            recipe.collator(tokenizer, settings, data),
            recipe.compute_metrics(),
            best_metric=recipe.best_metric_for(data),
            derived_metrics=recipe.derived_metrics(),
            record=record,
            summary={"task": settings.task, "labels": data.labels} if data.labels else {"task": settings.task},
            finish=finish,
            make_trainer=recipe.trainer_factory(settings, data, limit),
        )
    return result


# --------------------------------------------------------------------------- the plan


def training_plan(
    settings: FinetuneSettings,
    parameters: int,
    examples: int,
    valid_examples: int,
    base: PreTraining | None = None,
) -> tuple[Any, Any]:
    """The settings with what the user left open chosen for the data and the model, and the plan
    (README "Defaults chosen for the data"; the values are in :mod:`llmtool.training.defaults`).
    ``base``: how llmtool pre-trained the base model, when its folder says."""
    from llmtool.training.plan import Rules, make_plan

    lr, lr_from = finetune_rate(parameters, base.lr if base else None)
    if settings.lora:
        lr, lr_from = lr * LORA_LR_FACTOR, f"{lr_from}, x{LORA_LR_FACTOR:g} for LoRA"
    rules = Rules(
        lr=lr,
        lr_from=lr_from,
        batch_size=finetune_batch(examples, base.batch_size if base else None),
        epochs=EPOCHS, min_steps=PRETRAINED_MIN_STEPS if base else MIN_STEPS, max_steps=10**9, warmup_ratio=WARMUP,
    )  # fmt: skip
    recipe = recipe_for(settings.task)
    rules = recipe.plan_rules(rules, examples)
    per_row = recipe.one_example_per_row(settings)
    layout = "one row per example" if per_row else "packed blocks"
    return make_plan(
        settings, rules, examples=examples, valid_examples=valid_examples, layout=layout, processes=world_size()
    )


def finetune_rate(parameters: int, base_rate: float | None) -> tuple[float, str]:
    """The peak learning rate for fine-tuning when --lr is not given, and where it comes from (the plan says)."""
    if base_rate is not None:
        return base_rate * PRETRAINED_LR_SHARE, f"{PRETRAINED_LR_SHARE:g} x the base model's pre-training rate"
    for below, lr in FINETUNE_LR:
        if below is None or parameters < below:
            return lr, f"for {_millions(parameters)} parameters"
    raise AssertionError("FINETUNE_LR ends with a row for every size")


def finetune_batch(examples: int, base_batch: int | None) -> int:
    """Examples a step when --batch-size is not given: a model llmtool pre-trained keeps the batch it was
    pre-trained with (up to PRETRAINED_BATCH); another, the size rule for the data (SST-2, MiniLM)."""
    if base_batch is not None:
        return min(base_batch, PRETRAINED_BATCH)
    return SMALL_DATA_BATCH if examples < SMALL_DATA else FINETUNE_BATCH


def _millions(parameters: int) -> str:
    return f"{parameters / 1e6:.1f}M" if parameters < 10**8 else f"{parameters / 1e6:.0f}M"


@dataclasses.dataclass(frozen=True)
class PreTraining:
    """How ``llmtool pretrain`` trained a base model (its llmtool_settings.json): the peak rate, the batch."""

    lr: float
    batch_size: int | None


def pretraining(opts: ModelOptions) -> PreTraining | None:
    """How a model that ``llmtool pretrain`` made was trained (its llmtool_settings.json), or None: another
    kind of model, a Hub id not on disk, or a record that cannot be read."""
    import json

    from llmtool.models import locate
    from llmtool.training.folder import SETTINGS_FILE

    try:
        ref = locate(dataclasses.replace(opts, device="cpu", dtype="float32", engine="torch"))
    except Exception:  # the load that follows says what is wrong with the model, in its words
        return None
    if ref.folder is None:
        return None
    try:
        record = json.loads((ref.folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        training = record["training"] if record.get("command") == "pretrain" else {}
        rate, batch = training.get("lr"), training.get("batch_size")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not (isinstance(rate, int | float) and 0 < rate < 1):
        return None
    return PreTraining(float(rate), batch if isinstance(batch, int) and batch > 0 else None)


def _with_lora(
    model: Any, recipe: Recipe, settings: FinetuneSettings, opts: ModelOptions, console: Console
) -> tuple[Any, Any]:
    """The model wrapped with LoRA adapters, and what writes the output folder's extra files at the end."""
    from llmtool import lora
    from llmtool.models import locate

    ref = locate(dataclasses.replace(opts, device="cpu", dtype="float32", engine="torch"))
    missing = list(getattr(model, "llmtool_missing_keys", []))
    wrapped = lora.wrap(model, settings, recipe.peft_task_type, lora.base_name(ref), opts.revision, missing)
    counts = lora.parameter_counts(wrapped)
    share = counts["trainable"] / max(1, counts["total"])
    console.info(f"LoRA: {counts['trainable']:,} of {counts['total']:,} parameters trainable ({share:.2%})")
    return wrapped, lambda trained, folder: lora.finish_output(trained, folder, ref, merge=settings.merge)


def _data_summary(data: TrainingData) -> str:
    rows = f"{len(data.train)} training rows, {len(data.valid) if data.valid is not None else 0} validation rows"
    labels = f", {len(data.labels)} classes" if data.labels else ""
    return f"{data.layout.path}: {data.layout.describe()}; {rows}{labels}"


# --------------------------------------------------------------------------- model


def _load(recipe: Recipe, settings: FinetuneSettings, opts: ModelOptions, data: TrainingData) -> tuple[Any, Any]:
    """Tokenizer and model on the CPU in float32: Trainer places them, and mixed precision autocasts."""
    from llmtool.models import ensure_pad_token, load_model, load_tokenizer, locate, set_seed

    ref = locate(dataclasses.replace(opts, device="cpu", dtype="float32", engine="torch"))
    tokenizer = load_tokenizer(ref)
    set_seed(settings.seed)  # new weights (a classification head) are drawn now, before Trainer seeds
    kwargs = recipe.model_kwargs(data)
    if settings.lora:  # LoRA must also train and save what the checkpoint lacks (see lora.new_modules)
        model, missing = load_model(recipe.auto_class(), ref, missing_keys=True, **kwargs)
        model.llmtool_missing_keys = missing
    else:
        model = recipe.load_model(ref, **kwargs)
    ensure_pad_token(tokenizer, opts.model)  # batches need padding
    if getattr(model, "config", None) is not None and model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    recipe.check_tokenizer(tokenizer, opts.model)
    return tokenizer, model


def _length_limit(recipe: Recipe, settings: FinetuneSettings, tokenizer: Any, model: Any) -> int:
    """Tokens per example (classify) or per block (clm/mlm), within what the model can take."""
    model_limit = recipe.model_limit(tokenizer, model)
    asked = recipe.asked_limit(settings)
    if asked is None:
        return recipe.default_limit(model_limit)
    if asked > model_limit:
        raise UsageError(f"{recipe.limit_flag} {asked} is longer than the model takes ({model_limit} tokens)")
    return asked


# --------------------------------------------------------------------------- examples


def _examples(
    recipe: Recipe, data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions
) -> tuple[Any, Any | None, list[str]]:
    """Training and validation examples, and warnings about what making them did (conversations cut short)."""
    train, valid, warnings = recipe.examples(data, tokenizer, settings, limit, opts)
    if valid is not None and len(valid) == 0:
        raise UsageError("the validation data is shorter than one --block-size block; pass --line-by-line or more data")
    if len(train) == 0:
        raise UsageError("the training data is shorter than one --block-size block; lower --block-size")
    return train, valid, warnings


def tokenized(dataset: Any, tokenizer: Any, s: FinetuneSettings, limit: int, opts: ModelOptions, split: str) -> Any:
    """The examples of one split (tests compare them across process counts): see ``Recipe.tokenize``."""
    return recipe_for(s.task).tokenize(dataset, tokenizer, s, limit, opts, split)


# --------------------------------------------------------------------------- records


def _record(
    recipe: Recipe,
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
        recipe.limit_key: limit,
        "world_size": world_size(),
    }


# --------------------------------------------------------------------------- --dry-run


def dry_run(train_path: str, settings: FinetuneSettings, model_options: ModelOptions) -> dict[str, Any]:
    """Check the data and say what training would do (columns, rows, labels, token lengths, steps).

    Loads the tokenizer and the model's config, never its weights; writes nothing that stays.
    """
    settings.check()
    model_options.check()
    recipe = recipe_for(settings.task)
    prepare_environment(model_options.offline, model_options.verbose)
    with tempfile.TemporaryDirectory(prefix="llmtool-dry-run-") as cache:
        data = recipe.prepare_data(train_path, settings, cache)
        tokenizer, limit = _tokenizer_and_limit(recipe, settings, model_options)
        lengths = _token_lengths(recipe, data.train, tokenizer)
        settings = recipe.settings_for(settings, data)
        report: dict[str, Any] = {
            "task": settings.task,
            "model": model_options.model,
            "train_file": train_path,
            "columns": recipe.report_columns(data),
            "rows": {"train": len(data.train), "valid": len(data.valid) if data.valid is not None else 0},
            "valid": data.valid_source,
        }
        if data.labels is not None:
            report["labels"] = {"train": data.train_counts, "valid": data.valid_counts}
        per_row = recipe.one_example_per_row(settings)
        report["tokens"] = _length_report(lengths, limit, recipe.limit_key, per_row)
        examples = recipe.count_examples(data.train, tokenizer, limit, settings)
        if examples is None:
            examples = len(data.train) if per_row else _packed_estimate(lengths, len(data.train), limit)
        valid_rows = len(data.valid) if data.valid is not None else 0
        counts = _parameter_counts(recipe, settings, model_options, data)
        _, plan = training_plan(settings, counts["total"], examples, valid_rows, pretraining(model_options))
        report["steps"] = {
            "examples": examples, "effective_batch": plan.effective_batch, "per_epoch": plan.steps_per_epoch,
            "total": plan.steps, "epochs": plan.epochs,
        }  # fmt: skip
        report["parameters"] = counts
        report["plan"] = plan.as_dict()
        report["warnings"] = [*data.warnings, *plan.warnings]
    return report


def _tokenizer_and_limit(recipe: Recipe, settings: FinetuneSettings, opts: ModelOptions) -> tuple[Any, int]:
    from types import SimpleNamespace

    from llmtool.models import load_config, load_tokenizer, locate

    ref = locate(opts)
    tokenizer = load_tokenizer(ref)
    return tokenizer, _length_limit(recipe, settings, tokenizer, SimpleNamespace(config=load_config(ref)))


def _parameter_counts(
    recipe: Recipe, settings: FinetuneSettings, opts: ModelOptions, data: TrainingData
) -> dict[str, int]:
    """Trainable and total parameters of the model as training would build it (on the meta device: no weights)."""
    import torch

    from llmtool import lora
    from llmtool.models import load_config, locate

    ref = locate(opts)
    config = load_config(ref)
    with torch.device("meta"):
        model = recipe.model_from_config(config, data)
        if settings.lora:
            model = lora.wrap(model, settings, recipe.peft_task_type, lora.base_name(ref), opts.revision, [])
    return lora.parameter_counts(model)


def _token_lengths(recipe: Recipe, dataset: Any, tokenizer: Any, sample: int = 20_000) -> list[int]:
    """Tokens per row, untruncated, for the first ``sample`` rows (enough for percentiles)."""
    rows = dataset.select(range(min(sample, len(dataset))))
    lengths: list[int] = []
    for batch in rows.iter(batch_size=1000):
        lengths.extend(len(ids) for ids in recipe.untruncated_ids(tokenizer, batch))
    return lengths


def _length_report(lengths: list[int], limit: int, limit_key: str, per_row: bool) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(lengths)
    report: dict[str, Any] = {
        "per_row": {f"p{q}": int(np.percentile(a, q)) for q in (50, 90, 95, 99)} | {"max": int(a.max())},
        "total": int(a.sum()),
        "rows_measured": len(lengths),
    }
    report[limit_key] = limit
    if per_row:
        report["truncated_rows"] = int((a > limit).sum())
    return report


def _packed_estimate(lengths: list[int], rows: int, limit: int) -> int:
    """Packed blocks from ``rows`` rows (slightly fewer in training: each batch of rows drops its tail)."""
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
        why = f" ({plan['lr_from']})" if plan.get("lr_from") else ""
        lines.append(f"plan     lr {lr:g}{why}, warm-up {warmup:g}, batch {batch}{chosen}")
    if "parameters" in report:
        p = report["parameters"]
        share = p["trainable"] / max(1, p["total"])
        lines.append(f"params   {p['trainable']:,} trainable of {p['total']:,} ({share:.2%})")
    lines += [f"warning  {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)
