"""``llmtool finetune``: a CSV (or text file) -> checked datasets -> ``transformers.Trainer`` -> a saved model.

Three tasks:

- ``classify``: sequence classification (one text, or a pair) with string or integer labels; the
  label names go into the model config (``id2label``), so predictions come back as the user's names.
- ``clm``: continued causal-LM training (GPT-2 style) on a text column or a text file.
- ``mlm``: continued masked-LM training (BERT style), likewise.

The data is checked in full before a model loads (:mod:`llmtool.data`); the run itself (output
folder, progress, signals, resume, atomic save) is :mod:`llmtool.training`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from llmtool.data import TASKS, ColumnSpec, Task, TrainingData, prepare
from llmtool.errors import UsageError
from llmtool.models import ModelOptions
from llmtool.streams import Console
from llmtool.training import TrainingRun, TrainSettings, perplexity, world_size

DEFAULT_MODELS: dict[str, str] = {"classify": "bert-base-uncased", "clm": "gpt2", "mlm": "bert-base-uncased"}
BIG_DATA_ROWS = 50_000  # from this many rows, tokenization runs in several processes
PACK_ROWS = 1000  # rows concatenated and cut into blocks together (the remainder of each group is dropped)
MAX_BLOCK = 1024  # the default block size is the model's limit, up to this


@dataclass
class FinetuneSettings(TrainSettings):
    """``TrainSettings`` plus what fine-tuning reads and how it turns text into examples."""

    task: str = "classify"  # classify | clm | mlm
    text_column: str | None = None  # CSV text column; None: 'text', then 'sentence', then the only text column
    text_pair_column: str | None = None  # second text of a sentence pair (classify)
    label_column: str | None = None  # CSV label column (classify); None: 'label'
    valid: str | None = None  # validation file (same columns); None: split off --valid-split of TRAIN
    valid_split: float = 0.1  # share of TRAIN held out for validation (seeded; stratified for classify); 0: none
    encoding: str = "utf-8"  # text encoding of the data files
    max_length: int | None = None  # classify: tokens per example, longer ones truncated; None: the model's limit
    block_size: int | None = None  # clm/mlm: tokens per training block; None: the model's limit, up to 1024
    line_by_line: bool = False  # clm/mlm: one example per line (truncated to block_size) instead of packing
    mlm_probability: float = 0.15  # mlm: share of tokens masked
    num_proc: int | None = None  # tokenization processes; None: every core for big data, else 1

    def check(self) -> None:
        super().check()
        if self.task not in TASKS:
            raise UsageError(f"unknown --task {self.task!r}; use {', '.join(TASKS)}")
        if self.valid is None and not 0 <= self.valid_split < 1:
            raise UsageError(f"--valid-split must be in [0, 1) (got {self.valid_split})")
        if self.task == "classify" and (self.block_size is not None or self.line_by_line):
            raise UsageError("--block-size and --line-by-line apply to --task clm and mlm")
        if self.task != "classify" and self.max_length is not None:
            raise UsageError("--max-length applies to --task classify; for clm and mlm use --block-size")
        for name in ("max_length", "block_size", "num_proc"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.mlm_probability < 1:
            raise UsageError("--mlm-probability must be between 0 and 1")

    @property
    def columns(self) -> ColumnSpec:
        return ColumnSpec(self.text_column, self.text_pair_column, self.label_column)


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

    Returns the final metrics (also written to ``output_dir/metrics.json``).
    """
    settings.check()
    console = console or Console()
    with TrainingRun(output_dir, settings, console) as run:
        data = run.main_first(lambda: _prepare_data(train_path, settings, run.cache_dir))
        for warning in data.warnings:
            run.console.warn(warning)
        run.console.info(_data_summary(data))
        tokenizer, model = _load(settings, model_options, data)
        limit = _length_limit(settings, tokenizer, model)
        train_ds, valid_ds = run.main_first(lambda: _tokenize_all(data, tokenizer, settings, limit, model_options))
        collator = _collator(settings.task, tokenizer, settings.mlm_probability, settings.seed)
        record = _record(train_path, settings, model_options, data, limit, len(train_ds), valid_ds)
        result = run.train(
            model,
            tokenizer,
            train_ds,
            valid_ds,
            collator,
            classification_metrics if settings.task == "classify" else None,
            best_metric="accuracy" if settings.task == "classify" else "loss",
            derived_metrics=None if settings.task == "classify" else perplexity,
            record=record,
            summary={"task": settings.task, "labels": data.labels} if data.labels else {"task": settings.task},
        )
    return result


def _prepare_data(train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
    return prepare(
        train_path,
        settings.task,  # type: ignore[arg-type]
        settings.columns,
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

    opts = ModelOptions(**{**asdict(opts), "device": "cpu", "dtype": "float32"})
    where = locate(opts)
    tokenizer = load_tokenizer(opts, where)
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
    model = load_model(_auto_class(settings.task), opts, where, **kwargs)
    _check_tokenizer(settings.task, tokenizer, model, opts.model)
    return tokenizer, model


def _check_tokenizer(task: str, tokenizer: Any, model: Any, name: str) -> None:
    from llmtool.errors import ModelError

    if tokenizer.pad_token is None:
        # Batches need padding; a causal LM's end-of-text token is the usual stand-in.
        if tokenizer.eos_token is None:
            raise ModelError(f"{name}: the tokenizer has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
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


def _num_proc(settings: FinetuneSettings, rows: int) -> int | None:
    if settings.num_proc is not None:
        return settings.num_proc if settings.num_proc > 1 else None
    cores = os.cpu_count() or 1
    return min(cores, 8) if rows >= BIG_DATA_ROWS and cores > 1 else None


def _tokenize_all(
    data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: ModelOptions
) -> tuple[Any, Any | None]:
    train = _tokenize(data.train, tokenizer, settings, limit, opts, "train")
    valid = _tokenize(data.valid, tokenizer, settings, limit, opts, "valid") if data.valid is not None else None
    if valid is not None and len(valid) == 0:
        raise UsageError("the validation data is shorter than one --block-size block; pass --line-by-line or more data")
    if len(train) == 0:
        raise UsageError("the training data is shorter than one --block-size block; lower --block-size")
    return train, valid


def _tokenize(dataset: Any, tokenizer: Any, s: FinetuneSettings, limit: int, opts: ModelOptions, split: str) -> Any:
    """Token ids for each example (classify, line-by-line) or packed blocks of ``limit`` tokens.

    Tokenizing runs in several processes for big data; packing runs afterwards in one, in fixed
    batches of rows, so that the blocks do not depend on how many processes tokenized.
    """
    task: Task = s.task  # type: ignore[assignment]
    if task == "classify":
        fn: Any = _ClassifyEncoder(tokenizer, limit, "text_pair" in dataset.column_names)
    else:
        fn = _LineEncoder(tokenizer, limit if s.line_by_line else None, task)
    key = [dataset._fingerprint, opts.model, opts.revision, task, limit, s.line_by_line, split, 2]
    out = dataset.map(
        fn,
        batched=True,
        remove_columns=dataset.column_names,
        num_proc=_num_proc(s, len(dataset)),
        new_fingerprint=_fingerprint(key),
        desc=None,
    )
    if task != "classify" and not s.line_by_line:
        packer = _BlockPacker(limit)
        fingerprint = _fingerprint([*key, "pack"])
        out = out.map(packer, batched=True, batch_size=PACK_ROWS, remove_columns=out.column_names,
                      new_fingerprint=fingerprint, desc=None)  # fmt: skip
    if task == "mlm" and split == "valid":
        out = _mask_once(out, tokenizer, s.mlm_probability, s.seed)
    return out


def _fingerprint(key: list[Any]) -> str:
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]


class _ClassifyEncoder:
    def __init__(self, tokenizer: Any, limit: int, pairs: bool) -> None:
        self.tokenizer, self.limit, self.pairs = tokenizer, limit, pairs

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        pair = batch["text_pair"] if self.pairs else None
        encoded = self.tokenizer(batch["text"], pair, truncation=True, max_length=self.limit)
        encoded["labels"] = batch["label"]
        return dict(encoded)


def _ids(tokenizer: Any, texts: list[str], task: str) -> list[list[int]]:
    """Token ids per text: with the model's special tokens for mlm ([CLS] .. [SEP]); for clm, text
    followed by the end-of-text token, so that packed documents stay apart."""
    if task == "mlm":
        return list(tokenizer(texts, add_special_tokens=True)["input_ids"])
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [[*list(x), eos] if eos is not None else list(x) for x in ids]


class _BlockPacker:
    """run_clm/run_mlm's ``group_texts``: concatenate a batch of texts' ids and cut them into equal blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        stream = [token for ids in batch["input_ids"] for token in ids]
        usable = len(stream) // self.limit * self.limit  # the remainder of the batch is dropped
        blocks = [stream[i : i + self.limit] for i in range(0, usable, self.limit)]
        return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]}


class _LineEncoder:
    """Token ids per text; truncated to ``limit`` (keeping mlm's closing [SEP]) when one is given."""

    def __init__(self, tokenizer: Any, limit: int | None, task: str) -> None:
        self.tokenizer, self.limit, self.task = tokenizer, limit, task

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        ids = _ids(self.tokenizer, batch["text"], self.task)
        if self.limit is not None:
            ids = [x[: self.limit] for x in ids]
            if self.task == "mlm":
                sep = self.tokenizer.sep_token_id
                ids = [[*x[:-1], sep] if sep is not None and x and x[-1] != sep else x for x in ids]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}


def _mask_once(dataset: Any, tokenizer: Any, probability: float, seed: int) -> Any:
    """Mask the validation set once, with a fixed seed: every evaluation then scores the same task,
    so validation losses are comparable across epochs and across a resume."""
    import numpy as np

    masker = _Masker(tokenizer, probability)

    def mask(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
        inputs, labels = [], []
        for ids, index in zip(batch["input_ids"], indices, strict=True):
            masked, label = masker(ids, np.random.default_rng([seed, index]))
            inputs.append(masked)
            labels.append(label)
        return {"input_ids": inputs, "labels": labels}

    return dataset.map(mask, batched=True, with_indices=True, desc=None)


class _Masker:
    """BERT's masking of one example: ``probability`` of the non-special tokens are chosen; of those,
    80% become [MASK], 10% a random token, 10% stay. Returns the inputs and the labels (-100: not chosen)."""

    def __init__(self, tokenizer: Any, probability: float) -> None:
        self.special = sorted(set(tokenizer.all_special_ids))
        self.mask_id, self.vocab, self.probability = tokenizer.mask_token_id, len(tokenizer), probability

    def __call__(self, ids: Any, rng: Any) -> tuple[list[int], list[int]]:
        import numpy as np

        ids = np.asarray(ids)
        chosen = (rng.random(len(ids)) < self.probability) & ~np.isin(ids, self.special)
        label = np.where(chosen, ids, -100)
        roll = rng.random(len(ids))
        ids = np.where(chosen & (roll < 0.8), self.mask_id, ids)  # 80% [MASK]
        swap = chosen & (roll >= 0.8) & (roll < 0.9)  # 10% a random token, 10% unchanged
        ids = np.where(swap, rng.integers(0, self.vocab, len(ids)), ids)
        return ids.tolist(), label.tolist()


class _MlmCollator:
    """Masking for training batches, drawn afresh for each example in each epoch; validation batches
    arrive masked and are only padded.

    The draws come from a generator seeded by (seed, epoch, the example's tokens), not from the global
    random state: so the masks do not depend on batch order or on which batches a resumed run skips,
    and a run resumed from a checkpoint masks exactly as the uninterrupted run did. The training
    machinery tells the collator the epoch (``set_epoch``, like a distributed sampler).
    """

    def __init__(self, tokenizer: Any, probability: float, seed: int = 42) -> None:
        from transformers import DataCollatorForTokenClassification

        self.masker = _Masker(tokenizer, probability)
        self.padding = DataCollatorForTokenClassification(tokenizer)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        if "labels" in features[0]:
            return self.padding(features)
        import zlib

        import numpy as np

        masked = []
        for feature in features:
            key = zlib.crc32(np.asarray(feature["input_ids"], dtype=np.int64).tobytes())
            ids, labels = self.masker(feature["input_ids"], np.random.default_rng([self.seed, self.epoch, key]))
            masked.append({**feature, "input_ids": ids, "labels": labels})
        return self.padding(masked)


def _collator(task: str, tokenizer: Any, mlm_probability: float = 0.15, seed: int = 42) -> Any:
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if task == "classify":
        return DataCollatorWithPadding(tokenizer)
    if task == "mlm":
        return _MlmCollator(tokenizer, mlm_probability, seed)
    return DataCollatorForLanguageModeling(tokenizer, mlm=False)


# --------------------------------------------------------------------------- metrics


def classification_metrics(eval_pred: Any) -> dict[str, float]:
    """Accuracy and macro-F1 (the unweighted mean of per-class F1 over the classes that occur)."""
    import numpy as np

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    labels = np.asarray(eval_pred.label_ids)
    predicted = np.asarray(logits).argmax(-1)
    return {"accuracy": float((predicted == labels).mean()), "macro_f1": macro_f1(labels, predicted)}


def macro_f1(labels: Any, predicted: Any) -> float:
    import numpy as np

    labels, predicted = np.asarray(labels), np.asarray(predicted)
    scores = []
    for cls in np.union1d(labels, predicted):
        tp = float(np.sum((predicted == cls) & (labels == cls)))
        fp = float(np.sum((predicted == cls) & (labels != cls)))
        fn = float(np.sum((predicted != cls) & (labels == cls)))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores)) if scores else 0.0


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
    with tempfile.TemporaryDirectory(prefix="llmtool-dry-run-") as cache:
        data = _prepare_data(train_path, settings, cache)
        tokenizer, limit = _tokenizer_and_limit(settings, model_options)
        lengths = _token_lengths(data.train, tokenizer, settings.task)
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
        if data.labels is not None:
            report["labels"] = {"train": data.train_counts, "valid": data.valid_counts}
        report["tokens"] = _length_report(lengths, limit, settings)
        examples = _examples_estimate(lengths, len(data.train), limit, settings)
        report["steps"] = _steps_estimate(examples, settings)
        report["warnings"] = data.warnings
    return report


def _tokenizer_and_limit(settings: FinetuneSettings, opts: ModelOptions) -> tuple[Any, int]:
    from types import SimpleNamespace

    from transformers import AutoConfig

    from llmtool.models import _load_kwargs, _model_error, load_tokenizer, locate

    where = locate(opts)
    tokenizer = load_tokenizer(opts, where)
    try:
        config = AutoConfig.from_pretrained(where, **_load_kwargs(opts))
    except Exception as exc:
        raise _model_error(exc, where, "model config") from exc
    return tokenizer, _length_limit(settings, tokenizer, SimpleNamespace(config=config))


def _token_lengths(dataset: Any, tokenizer: Any, task: str, sample: int = 20_000) -> list[int]:
    """Tokens per row, untruncated, for the first ``sample`` rows (enough for percentiles)."""
    rows = dataset.select(range(min(sample, len(dataset))))
    lengths: list[int] = []
    for batch in rows.iter(batch_size=1000):
        if task == "classify":
            pair = batch.get("text_pair")
            encoded = tokenizer(batch["text"], pair, add_special_tokens=True)["input_ids"]
        else:
            encoded = _ids(tokenizer, batch["text"], task)
        lengths.extend(len(ids) for ids in encoded)
    return lengths


def _length_report(lengths: list[int], limit: int, settings: FinetuneSettings) -> dict[str, Any]:
    import numpy as np

    a = np.asarray(lengths)
    report: dict[str, Any] = {
        "per_row": {f"p{q}": int(np.percentile(a, q)) for q in (50, 90, 95, 99)} | {"max": int(a.max())},
        "total": int(a.sum()),
        "rows_measured": len(lengths),
    }
    key = "max_length" if settings.task == "classify" else "block_size"
    report[key] = limit
    if settings.task == "classify" or settings.line_by_line:
        report["truncated_rows"] = int((a > limit).sum())
    return report


def _examples_estimate(lengths: list[int], rows: int, limit: int, settings: FinetuneSettings) -> int:
    """Training examples: one per row, or packed blocks (slightly fewer: each batch of rows drops its tail)."""
    if settings.task == "classify" or settings.line_by_line:
        return rows
    return int(sum(lengths) * rows / max(1, len(lengths)) // limit)


def _steps_estimate(train_examples: int, s: FinetuneSettings) -> dict[str, Any]:
    batches = math.ceil(train_examples / (s.batch_size * world_size()))
    per_epoch = max(1, math.ceil(batches / s.grad_accum))
    total = s.max_steps if s.max_steps is not None else math.ceil(per_epoch * s.epochs)
    return {
        "examples": train_examples,
        "effective_batch": s.batch_size * s.grad_accum * world_size(),
        "per_epoch": per_epoch,
        "total": total,
        "epochs": round(total / per_epoch, 3),
    }


# --------------------------------------------------------------------------- text output


def format_result(result: dict[str, Any]) -> str:
    """The final metrics for people: a few aligned lines (``--json`` gives everything)."""
    valid = result.get("valid") or {}
    train = result.get("train") or {}
    lines = [f"model   {result.get('model')}"]
    task = result.get("task", "")
    if result.get("labels"):
        task += f" (labels: {', '.join(str(x) for x in result['labels'])})"
    lines.append(f"task    {task}")
    if valid:
        scores = "  ".join(f"{k} {_num(v)}" for k, v in valid.items())
        lines.append(f"valid   {scores}  (best at step {result.get('best_step')})")
    lines.append(
        f"train   loss {_num(train.get('loss'))}, {train.get('steps')} steps, {train.get('epochs')} epochs, "
        f"{train.get('seconds')} s"
    )
    return "\n".join(lines)


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
    lines += [f"warning  {w}" for w in report.get("warnings", [])]
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
