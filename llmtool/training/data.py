"""Training data: read and check a CSV (or .txt/.jsonl text for language modelling), map labels, split.

Every check runs before a model loads, and every failure is one :class:`InputError` naming
``file:line:column``. Rows stream into an Arrow-backed ``datasets.Dataset`` on disk
(``Dataset.from_generator``), so memory stays flat whatever the file size.

Nothing here imports torch or transformers; ``datasets`` is imported only where a dataset is built.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import check_readable, read_file, suggest
from llmtool.io.tables import LABEL_COLUMN, csv_rows, find_column, text_column
from llmtool.settings import TASKS

if TYPE_CHECKING:
    from datasets import Dataset

Task = Literal["classify", "clm", "mlm"]
_DATA_FORMAT_VERSION = 1  # bump when the cached Arrow layout changes, so old caches are not reused


@dataclass(frozen=True)
class ColumnSpec:
    """The columns the user asked for (the ``--*-column`` flags); None means "pick the default"."""

    text: str | None = None  # --text-column: default 'text', then 'sentence', then the only text column
    text_pair: str | None = None  # --text-pair-column: second text of a sentence pair (classify)
    label: str | None = None  # --label-column: default 'label' (classify)


@dataclass(frozen=True)
class Layout:
    """What one file holds and which of its columns are read, after checking its header."""

    path: str
    kind: Literal["csv", "tsv", "jsonl", "lines"]
    text: str  # column or JSON field of the text ('' for a plain text file: every line)
    text_pair: str | None = None
    label: str | None = None
    encoding: str = "utf-8"

    @property
    def delimiter(self) -> str:
        return "\t" if self.kind == "tsv" else ","

    def describe(self) -> str:
        """``text='sentence', label='label'``, for --dry-run and info lines."""
        if self.kind == "lines":
            return "every line is a text"
        parts = [f"text={self.text!r}"]
        if self.text_pair:
            parts.append(f"text_pair={self.text_pair!r}")
        if self.label:
            parts.append(f"label={self.label!r}")
        return ", ".join(parts)


@dataclass
class TrainingData:
    """Checked, split training data, ready for tokenization."""

    task: Task
    train: Dataset  # columns: text[, text_pair][, label] (label as a class id), line
    valid: Dataset | None  # None when there is no validation (--valid-split 0)
    layout: Layout
    valid_source: str  # the --valid file, or "10% of TRAIN (seeded, stratified)"
    labels: list[str] | None = None  # class names in id order (classify)
    train_counts: dict[str, int] = field(default_factory=dict)  # rows per class name
    valid_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels or [])}


# --------------------------------------------------------------------------- layout: file kind and columns


def file_kind(path: str) -> Literal["csv", "tsv", "jsonl", "lines"]:
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "lines"


def resolve_layout(path: str, task: Task, spec: ColumnSpec, encoding: str = "utf-8") -> Layout:
    """Check the file and its header; pick the columns. Reads only the first rows."""
    if task not in TASKS:
        raise UsageError(f"unknown --task {task!r}; use {', '.join(TASKS)}")
    check_readable(path)
    if os.path.getsize(path) == 0:
        raise InputError("empty file", source=path)
    kind = file_kind(path)
    if kind in ("csv", "tsv"):
        return _csv_layout(path, kind, task, spec, encoding)
    if task == "classify":
        raise UsageError(f"{path}: --task classify reads a .csv or .tsv file with a header and a label column")
    if spec.text_pair or spec.label:
        raise UsageError("--text-pair-column and --label-column apply to --task classify")
    if kind == "jsonl":
        return Layout(path, kind, spec.text or "text", encoding=encoding)
    if spec.text:
        raise UsageError(f"--text-column applies to .csv, .tsv and .jsonl files, not {path}")
    return Layout(path, kind, "", encoding=encoding)


def _csv_layout(path: str, kind: Literal["csv", "tsv"], task: Task, spec: ColumnSpec, encoding: str) -> Layout:
    header, _ = csv_rows(path, encoding)
    label: str | None = None
    if task == "classify":
        label = header[find_column(header, spec.label or LABEL_COLUMN, path, "--label-column")]
    elif spec.label or spec.text_pair:
        raise UsageError("--text-pair-column and --label-column apply to --task classify")
    pair = header[find_column(header, spec.text_pair, path, "--text-pair-column")] if spec.text_pair else None
    taken = [c for c in (label, pair) if c]
    text = header[text_column(header, path, requested=spec.text, taken=taken, encoding=encoding)]
    if text in (label, pair):
        raise UsageError(f"column {text!r} cannot be both the text and the {'label' if text == label else 'pair'}")
    return Layout(path, kind, text, pair, label, encoding)


# --------------------------------------------------------------------------- rows


def iter_rows(layout: Layout) -> Iterator[dict[str, Any]]:
    """``{"text", ["text_pair"], ["label"], "line"}`` for each row, checked as it is read.

    Empty text cells and empty labels are errors naming the line and column: a silent skip would
    make the row count and the label counts lie.
    """
    if layout.kind in ("csv", "tsv"):
        yield from _csv_examples(layout)
        return
    field_name = layout.text if layout.kind == "jsonl" else None
    for record in read_file(layout.path, field_name, encoding=layout.encoding):
        yield {"text": record.text, "line": record.line}


def _csv_examples(layout: Layout) -> Iterator[dict[str, Any]]:
    header, rows = csv_rows(layout.path, layout.encoding)
    text_i = header.index(layout.text)
    pair_i = header.index(layout.text_pair) if layout.text_pair else None
    label_i = header.index(layout.label) if layout.label else None
    for line, row in rows:
        example: dict[str, Any] = {"text": _cell(row, text_i, header, layout.path, line, "text"), "line": line}
        if pair_i is not None:
            example["text_pair"] = _cell(row, pair_i, header, layout.path, line, "text")
        if label_i is not None:
            example["label"] = _cell(row, label_i, header, layout.path, line, "label").strip()
        yield example


def _cell(row: list[str], index: int, header: Sequence[str], path: str, line: int, what: str) -> str:
    value = row[index]
    if not value.strip():
        raise InputError(f"empty {what} in column {header[index]!r}", source=path, line=line, column=index + 1)
    return value


def _features(layout: Layout) -> Any:
    from datasets import Features, Value

    columns = {"text": Value("string")}
    if layout.text_pair:
        columns["text_pair"] = Value("string")
    if layout.label:
        columns["label"] = Value("string")
    columns["line"] = Value("int64")
    return Features(columns)


def _generate(layout_json: str) -> Iterator[dict[str, Any]]:
    """The generator handed to ``Dataset.from_generator``; a module-level function so it pickles."""
    yield from iter_rows(Layout(**json.loads(layout_json)))


def fingerprint(layout: Layout) -> str:
    """Names the Arrow cache of a file: changes when the file, its columns or the format change."""
    stat = os.stat(layout.path)
    key = {
        "version": _DATA_FORMAT_VERSION,
        "path": os.path.abspath(layout.path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "layout": asdict(layout),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def load_rows(layout: Layout, cache_dir: str) -> Dataset:
    """All rows of a checked file as an on-disk Arrow dataset (memory stays flat).

    A bad row raises its :class:`InputError`, unwrapped from the ``datasets`` builder's own error.
    """
    if next(iter_rows(layout), None) is None:  # checked here: datasets fails obscurely on an empty generator
        raise InputError("no data rows (only a header, or blank lines)", source=layout.path)
    quiet_datasets()
    return arrow_rows(_generate, _features(layout), layout, cache_dir)


def arrow_rows(generate: Any, features: Any, layout: Any, cache_dir: str) -> Dataset:
    """``generate(layout_json)``'s rows as an on-disk Arrow dataset, cached under the layout's fingerprint;
    a bad row raises its :class:`InputError`, unwrapped from the ``datasets`` builder's own error."""
    from datasets import Dataset

    try:
        return Dataset.from_generator(
            generate,
            features=features,
            gen_kwargs={"layout_json": json.dumps(asdict(layout))},
            cache_dir=cache_dir,
            fingerprint=fingerprint(layout),
        )
    except Exception as exc:  # datasets wraps what the generator raised
        cause = llmtool_cause(exc)
        if cause is not None:
            raise cause from None
        raise


def llmtool_cause(exc: BaseException) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError | UsageError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def quiet_datasets() -> None:
    """No "Generating train split" bars or cache chatter on stderr."""
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    import datasets

    datasets.utils.logging.set_verbosity_error()
    datasets.utils.logging.disable_progress_bar()


# --------------------------------------------------------------------------- labels


def sort_labels(labels: Iterable[str]) -> list[str]:
    """Class names in a fixed order: numerically when every label is an integer, else as strings."""
    unique = set(labels)
    if unique and all(re.fullmatch(r"[+-]?\d+", name) for name in unique):
        return sorted(unique, key=lambda name: (int(name), name))
    return sorted(unique)


def count_labels(dataset: Dataset, column: str = "label") -> Counter[str]:
    """Rows per label, read in batches so that memory stays flat."""
    counts: Counter[str] = Counter()
    for batch in dataset.select_columns([column]).iter(batch_size=10_000):
        counts.update(batch[column])
    return counts


def check_labels(counts: Counter[str], layout: Layout) -> list[str]:
    """Class names (sorted); a classifier needs at least two classes."""
    names = sort_labels(counts)
    if len(names) < 2:
        only = f" ({names[0]!r} in all {counts[names[0]]} rows)" if names else ""
        raise InputError(
            f"label column {layout.label!r} has only one class{only}; a classifier needs at least two",
            source=layout.path,
        )
    return names


def check_valid_labels(valid: Dataset, known: Sequence[str], layout: Layout) -> None:
    """Every validation label must be one the model is trained on."""
    allowed = set(known)
    for batch in valid.select_columns(["label", "line"]).iter(batch_size=10_000):
        for label, line in zip(batch["label"], batch["line"], strict=True):
            if label not in allowed:
                raise InputError(
                    f"label {label!r} does not occur in the training data{suggest(label, list(known))}",
                    source=layout.path,
                    line=line,
                )


# --------------------------------------------------------------------------- splitting


def split_quotas(sizes: dict[int, int], fraction: float, *, source: str = "") -> dict[int, int]:
    """Validation rows per class (one class, 0, when not stratifying).

    Each class gives about ``fraction`` of its rows (largest-remainder rounding, so that the total
    is ``round(rows * fraction)``), at least one when it has two or more rows, and always keeps at
    least one row for training; a class with a single row stays in training.
    """
    if not 0 < fraction < 1:
        raise UsageError(f"--valid-split must be between 0 and 1 (got {fraction})")
    n_rows = sum(sizes.values())
    target = round(n_rows * fraction)
    if target < 1 or n_rows - target < 1:
        need = math.ceil(1 / min(fraction, 1 - fraction) - 1e-9)
        raise InputError(
            f"{n_rows} row{'s' if n_rows != 1 else ''} {'are' if n_rows != 1 else 'is'} too few for "
            f"--valid-split {fraction:g}: it needs at least {need} (or pass --valid FILE)",
            source=source or None,
        )
    return _stratified_quotas(sizes, target)


class SplitSelector:
    """Decides, row by row in file order, whether a row goes to validation; O(1) memory per class.

    Knuth's selection sampling (Algorithm S) within each class: a row is taken with probability
    (rows still wanted) / (rows still to come), which picks exactly the quota, uniformly at
    random, in one streaming pass. Seeded, so the same file gives the same split.
    """

    def __init__(self, sizes: dict[int, int], quotas: dict[int, int], seed: int) -> None:
        self.rows_left = dict(sizes)
        self.wanted = dict(quotas)
        self.rng = random.Random(seed)

    def __call__(self, cls: int) -> bool:
        take = self.rng.random() * self.rows_left[cls] < self.wanted[cls]
        self.rows_left[cls] -= 1
        self.wanted[cls] -= take
        return take


def json_records(path: str, encoding: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON Lines file; anything else is an InputError
    naming the file and line."""
    with open(path, encoding=encoding, errors="strict") as f:
        for line, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"not valid JSON ({exc.msg})", source=path, line=line) from None
            if not isinstance(record, dict):
                raise InputError("each line must be a JSON object", source=path, line=line)
            yield line, record


def hold_out(data: TrainingData, valid: Any | None, valid_source: str, fraction: float, seed: int) -> None:
    """Set ``data``'s validation rows: ``valid`` (a --valid file's rows, named ``valid_source``) when given,
    else ``fraction`` of the training rows split off (seeded, the split :func:`split_indices` makes), else none.
    For tasks whose rows have no label to stratify by (classify's split is :func:`_split`)."""
    if valid is not None:
        data.valid, data.valid_source = valid, valid_source
    elif fraction > 0:
        source = data.layout.path
        train, held = split_indices(len(data.train), fraction, seed, source=source)
        data.train, data.valid = data.train.select(train), data.train.select(held)
        data.valid_source = f"{fraction:.0%} of {source} (seeded)"


def split_indices(
    n_rows: int, fraction: float, seed: int, labels: Sequence[int] | None = None, *, source: str = ""
) -> tuple[list[int], list[int]]:
    """Row indices for training and validation: the split :func:`prepare` makes, as index lists."""
    keys = list(labels) if labels is not None else [0] * n_rows
    sizes = dict(Counter(keys))
    select = SplitSelector(sizes, split_quotas(sizes, fraction, source=source), seed)
    flags = [select(k) for k in keys]
    return [i for i, f in enumerate(flags) if not f], [i for i, f in enumerate(flags) if f]


def _stratified_quotas(sizes: dict[int, int], target: int) -> dict[int, int]:
    total = sum(sizes.values())
    exact = {c: n * target / total for c, n in sizes.items()}
    quotas = {c: math.floor(v) for c, v in exact.items()}
    leftover = target - sum(quotas.values())
    for c in sorted(exact, key=lambda c: (-(exact[c] - quotas[c]), c))[:leftover]:
        quotas[c] += 1
    for c, n in sizes.items():  # every class is validated, and every class keeps a training row
        quotas[c] = min(max(quotas[c], 1 if n >= 2 else 0), n - 1)
    return quotas


# --------------------------------------------------------------------------- everything together


def prepare(
    train_path: str,
    task: Task,
    spec: ColumnSpec = ColumnSpec(),
    *,
    cache_dir: str,
    valid_path: str | None = None,
    valid_split: float = 0.1,
    seed: int = 42,
    encoding: str = "utf-8",
) -> TrainingData:
    """Check and load the training (and validation) data; map labels; split off validation rows.

    The cheap checks (files, headers, columns) run first for both files, so that a typo in the
    validation file's header is reported before the training file is read in full.
    """
    layout = resolve_layout(train_path, task, spec, encoding)
    valid_layout = _valid_layout(valid_path, layout, task, spec, encoding) if valid_path else None
    rows = load_rows(layout, cache_dir)
    data = TrainingData(task, rows, None, layout, valid_source="none")
    if task == "classify":
        counts = count_labels(rows)
        data.labels = check_labels(counts, layout)
        data.train_counts = {name: counts[name] for name in data.labels}
    if valid_layout is not None:
        data.valid = load_rows(valid_layout, cache_dir)
        data.valid_source = valid_layout.path
        if data.labels is not None:
            check_valid_labels(data.valid, data.labels, valid_layout)
            vcounts = count_labels(data.valid)
            data.valid_counts = {name: vcounts[name] for name in data.labels if vcounts[name]}
    elif valid_split > 0:
        _split(data, valid_split, seed)
    if data.labels is not None:
        data.train = _encode_labels(data.train, data.label2id)
        if data.valid is not None:
            data.valid = _encode_labels(data.valid, data.label2id)
    return data


def _valid_layout(valid_path: str, train: Layout, task: Task, spec: ColumnSpec, encoding: str) -> Layout:
    """The validation file is read with the training file's columns (their defaults resolved the same way)."""
    if file_kind(valid_path) in ("csv", "tsv") and train.kind in ("csv", "tsv"):
        pinned = ColumnSpec(text=train.text, text_pair=train.text_pair, label=train.label)
        return resolve_layout(valid_path, task, pinned, encoding)
    return resolve_layout(valid_path, task, spec, encoding)


def _split(data: TrainingData, fraction: float, seed: int) -> None:
    """Split validation rows off the training rows in one streaming pass (flat memory for any size)."""
    rows = data.train
    label2id = data.label2id
    sizes = {label2id[name]: n for name, n in data.train_counts.items()} if label2id else {0: len(rows)}
    quotas = split_quotas(sizes, fraction, source=data.layout.path)
    select = SplitSelector(sizes, quotas, seed)

    def flag(batch: dict[str, list[Any]]) -> dict[str, list[bool]]:
        keys = [label2id[x] for x in batch["label"]] if label2id else [0] * len(batch["line"])
        return {"_valid": [select(k) for k in keys]}

    key = json.dumps([rows._fingerprint, fraction, seed, sorted(quotas.items()), "split", 1])
    flagged = rows.map(  # in order, in this process: the selector's state runs through the file once
        flag,
        batched=True,
        batch_size=10_000,
        new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        desc=None,
    )
    data.valid = flagged.filter(_is_valid, input_columns=["_valid"], batched=True, desc=None).remove_columns("_valid")
    data.train = flagged.filter(_is_train, input_columns=["_valid"], batched=True, desc=None).remove_columns("_valid")
    if data.labels is not None:
        names = data.labels
        data.warnings += [
            f"class {name!r} has a single row: it is used for training, not validated"
            for name in names
            if data.train_counts[name] == 1
        ]
        data.valid_counts = {name: quotas[label2id[name]] for name in names if quotas[label2id[name]]}
        data.train_counts = {name: data.train_counts[name] - quotas[label2id[name]] for name in names}
    how = "seeded, stratified" if data.labels is not None else "seeded"
    data.valid_source = f"{fraction:.0%} of {data.layout.path} ({how})"


def _is_valid(flags: list[bool]) -> list[bool]:
    return flags


def _is_train(flags: list[bool]) -> list[bool]:
    return [not f for f in flags]


def _encode_labels(dataset: Dataset, label2id: dict[str, int]) -> Dataset:
    """Label names become class ids (the model's ``labels``); the names live in id2label."""
    from datasets import ClassLabel

    names = sorted(label2id, key=label2id.__getitem__)
    return dataset.cast_column("label", ClassLabel(names=names))
