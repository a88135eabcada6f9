"""``finetune --task embed``: a sentence encoder trained with sentence-transformers' losses and trainer.

The data is a table (.csv, .tsv or .jsonl) of one of two kinds, told apart by its columns:

- pairs: ``anchor, positive[, negative]`` -> ``MultipleNegativesRankingLoss`` (each anchor against
  its positive, the other positives in its batch and the negatives); validation: retrieval of each
  anchor's positive among all validation positives (``accuracy`` = top-1, ``mrr``; mrr picks the
  best checkpoint);
- scored pairs: ``sentence1, sentence2, score`` (a number) -> ``CoSENTLoss`` (the cosines ordered as
  the scores, any scale); validation: ``spearman`` (and ``pearson``) of cosine against score.

``--text-column``/``--text-pair-column`` rename the two texts and ``--label-column`` the score (a
score column makes the data scored pairs). The base model is a sentence-transformers folder (its
pooling kept) or a plain encoder (mean pooling, normalised, as ``llmtool embed`` treats one). The
output folder is a sentence-transformers model (``modules.json``, ``1_Pooling``, ...) that both
``SentenceTransformer(path)`` and ``llmtool embed -m path`` load. Training runs in
sentence-transformers' ``SentenceTransformerTrainer`` (a ``transformers.Trainer``), so llmtool's
callbacks, checkpoints and ``--resume`` work as for the other objectives.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import check_readable
from llmtool.io.tables import csv_rows, find_column
from llmtool.settings import FinetuneSettings
from llmtool.training.data import Layout, TrainingData, arrow_rows, file_kind, hold_out, json_records, quiet_datasets
from llmtool.training.defaults import EMBED_BATCH, EMBED_EPOCHS, EMBED_MIN_STEPS
from llmtool.training.recipes.base import Recipe

PAIRS = ("anchor", "positive")  # the default text columns of pairs ...
SCORED = ("sentence1", "sentence2")  # ... and of scored pairs
NEGATIVE = "negative"  # an optional third text of pairs: a hard negative
SCORE = "score"  # the default score column; with one, the data is scored pairs


@dataclass(frozen=True)
class EmbedLayout(Layout):
    """The two text columns (``text``, ``text_pair``), the score (``label``) or a negative column."""

    negative: str | None = None

    def describe(self) -> str:
        parts = [f"text={self.text!r}", f"text_pair={self.text_pair!r}"]
        if self.negative:
            parts.append(f"negative={self.negative!r}")
        if self.label:
            parts.append(f"score={self.label!r}")
        return ", ".join(parts)

    @property
    def names(self) -> tuple[str, ...]:
        """The dataset's columns, in the order sentence-transformers' losses read them."""
        if self.label:
            return (*SCORED, SCORE)
        return (*PAIRS, NEGATIVE) if self.negative else PAIRS


class Embed(Recipe):
    name = "embed"
    default_model = "sentence-transformers/all-MiniLM-L6-v2"
    peft_task_type = None
    best_metric = "loss"  # without data; best_metric_for picks by the data: mrr for pairs, spearman for scored pairs
    limit_flag = "--max-length"
    limit_key = "max_length"

    # ------------------------------------------------------------------ the model

    def auto_class(self) -> Any:
        import transformers

        return transformers.AutoModel

    def load_model(self, ref: Any, **kwargs: Any) -> Any:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        from llmtool.models import model_error
        from llmtool.tasks.embed import sentence_reader

        hub = {"revision": ref.options.revision, "local_files_only": ref.local_files_only}
        try:
            if sentence_reader(ref)("modules.json") is not None:  # keeps the model's pooling and normalisation
                return SentenceTransformer(
                    ref.source, device="cpu", trust_remote_code=ref.options.trust_remote_code, **hub
                )
            encoder = Transformer(ref.source, model_kwargs=hub, processor_kwargs=hub, config_kwargs=hub)
            pooling = Pooling(encoder.get_embedding_dimension(), "mean")
            return SentenceTransformer(modules=[encoder, pooling, Normalize()], device="cpu")
        except Exception as exc:
            raise model_error(exc, ref.source, "model") from exc

    def model_limit(self, tokenizer: Any, model: Any) -> int:
        from llmtool.models import max_input_length

        encoder = model[0].auto_model if hasattr(model, "max_seq_length") else model
        own = getattr(model, "max_seq_length", None)  # a sentence-transformers model's own limit ...
        if own is None:  # ... or, for --dry-run (a config, no model), what its folder says
            own = _folder_max_seq_length(getattr(tokenizer, "name_or_path", ""))
        limit = max_input_length(tokenizer, encoder)
        return min(limit, own) if isinstance(own, int) and own > 0 else limit

    def asked_limit(self, settings: FinetuneSettings) -> int | None:
        return settings.max_length

    # ------------------------------------------------------------------ data

    def prepare_data(self, train_path: str, settings: FinetuneSettings, cache_dir: str) -> TrainingData:
        if settings.lora:
            raise UsageError(
                "--lora does not go with --task embed: llmtool's adapter folders hold a transformers model, "
                "not a sentence-transformers one; fine-tune in full (all-MiniLM-L6-v2 has 23M weights)"
            )
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:
            raise UsageError(
                "--task embed trains with sentence-transformers: "
                "pip install 'llmtool[embed]' (or sentence-transformers)"
            ) from None
        layout = embed_layout(train_path, settings)
        valid_layout = embed_layout(settings.valid, settings, pinned=layout) if settings.valid else None
        quiet_datasets()
        rows = _load(layout, cache_dir)
        data = TrainingData("embed", rows, None, layout, valid_source="none")  # type: ignore[arg-type]
        valid = _load(valid_layout, cache_dir) if valid_layout is not None else None
        hold_out(data, valid, valid_layout.path if valid_layout else "", settings.valid_split, settings.seed)
        return data

    def examples(self, data: TrainingData, tokenizer: Any, settings: FinetuneSettings, limit: int, opts: Any) -> Any:
        """The rows themselves: sentence-transformers' collator tokenizes each batch (truncating to ``limit``)."""
        valid = data.valid.remove_columns("line") if data.valid is not None else None
        return data.train.remove_columns("line"), valid, []

    def encoder(self, tokenizer: Any, limit: int, settings: FinetuneSettings, columns: list[str]) -> Any:
        raise NotImplementedError("embed examples are the rows themselves (see examples)")

    def collator(self, tokenizer: Any, settings: FinetuneSettings, data: TrainingData) -> Any:
        return None  # sentence-transformers' own

    def untruncated_ids(self, tokenizer: Any, batch: dict[str, list[Any]]) -> list[list[int]]:
        """Per row, the token ids of its longest text."""
        texts = [batch[c] for c in (*PAIRS, NEGATIVE, *SCORED) if c in batch]
        encoded = [tokenizer(column, add_special_tokens=True)["input_ids"] for column in texts]
        return [max(ids, key=len) for ids in zip(*encoded, strict=True)]

    def report_columns(self, data: TrainingData) -> dict[str, Any]:
        layout = data.layout
        assert isinstance(layout, EmbedLayout)
        return {"text": layout.text, "text_pair": layout.text_pair, "negative": layout.negative, "score": layout.label}

    # ------------------------------------------------------------------ the plan, metrics and trainer

    def plan_rules(self, rules: Any, examples: int) -> Any:
        return dataclasses.replace(rules, batch_size=EMBED_BATCH, epochs=EMBED_EPOCHS, min_steps=EMBED_MIN_STEPS)

    def best_metric_for(self, data: TrainingData) -> str:
        return "spearman" if data.layout.label else "mrr"

    def trainer_factory(self, settings: FinetuneSettings, data: TrainingData, limit: int) -> Callable[..., Any]:
        scored = data.layout.label is not None
        valid = data.valid

        def make_trainer(*, model: Any, args: Any, data_collator: Any, compute_metrics: Any, **kwargs: Any) -> Any:
            from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
            from sentence_transformers.base.training_args import BatchSamplers
            from sentence_transformers.sentence_transformer.losses import CoSENTLoss, MultipleNegativesRankingLoss

            model.max_seq_length = limit
            st_args = SentenceTransformerTrainingArguments(
                **{f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init}
            )
            # an anchor must not meet its own positive's duplicate as a negative
            st_args.batch_sampler = BatchSamplers.BATCH_SAMPLER if scored else BatchSamplers.NO_DUPLICATES
            loss = CoSENTLoss(model) if scored else MultipleNegativesRankingLoss(model)
            evaluator = pair_evaluator(valid, scored) if valid is not None else None
            train = kwargs["train_dataset"]
            if len(train) and not model.model_card_data.widget:  # else the card draws its own (a tqdm bar)
                first = train[0]
                texts = [first[name] for name in train.column_names if isinstance(first[name], str)]
                model.model_card_data.widget = [{"source_sentence": texts[0], "sentences": texts[1:]}]
            return SentenceTransformerTrainer(model=model, args=st_args, loss=loss, evaluator=evaluator, **kwargs)

        return make_trainer


def _folder_max_seq_length(folder: str) -> int | None:
    from pathlib import Path

    path = Path(folder) / "sentence_bert_config.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


# --------------------------------------------------------------------------- validation


def pair_evaluator(valid: Any, scored: bool) -> Any:
    """A sentence-transformers evaluator of the validation rows: spearman/pearson for scored pairs,
    retrieval accuracy (top-1) and MRR of each anchor's positive among every validation candidate."""
    import numpy as np
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    columns = {name: list(valid[name]) for name in valid.column_names if name != "line"}

    class PairEvaluator(SentenceEvaluator):
        def __init__(self) -> None:
            super().__init__()
            self.primary_metric = "spearman" if scored else "mrr"

        def __call__(self, model: Any, output_path: str | None = None, epoch: int = -1, steps: int = -1) -> Any:
            def encode(texts: list[str]) -> Any:
                vectors = model.encode(texts, normalize_embeddings=True, show_progress_bar=False, batch_size=64)
                return np.asarray(vectors, dtype=np.float64)

            if scored:
                from llmtool.tasks.evaluate_similarity import pearson, spearman

                cosines = (encode(columns[SCORED[0]]) * encode(columns[SCORED[1]])).sum(-1)
                return {"spearman": spearman(cosines, columns[SCORE]), "pearson": pearson(cosines, columns[SCORE])}
            anchors = encode(columns[PAIRS[0]])
            candidates = encode(columns[PAIRS[1]] + columns.get(NEGATIVE, []))
            sims = anchors @ candidates.T
            right = sims[np.arange(len(anchors)), np.arange(len(anchors))]
            rank = (sims > right[:, None]).sum(-1) + 1
            return {"accuracy": float((rank == 1).mean()), "mrr": float((1.0 / rank).mean())}

    return PairEvaluator()


# --------------------------------------------------------------------------- reading the table


def embed_layout(path: str, settings: FinetuneSettings, pinned: EmbedLayout | None = None) -> EmbedLayout:
    """Check the file and its header (or first JSON record); pick the columns. ``pinned``: the training
    file's layout, whose columns a validation file must have."""
    check_readable(path)
    kind = file_kind(path)
    if kind == "lines":
        raise UsageError(
            f"{path}: --task embed reads a .csv, .tsv or .jsonl table with columns anchor, positive[, negative] "
            "or sentence1, sentence2, score"
        )
    header = _header(path, kind, settings.encoding)
    if pinned is not None:
        for name in (pinned.text, pinned.text_pair, pinned.negative, pinned.label):
            if name:
                find_column(header, name, path, "--text-column")
        return dataclasses.replace(pinned, path=path, kind=kind)
    score = settings.label_column or (SCORE if SCORE in header else None)
    if score is not None:
        score = header[find_column(header, score, path, "--label-column")]
    first, second = SCORED if score is not None else PAIRS
    text = header[find_column(header, settings.text_column or first, path, "--text-column")]
    pair = header[find_column(header, settings.text_pair_column or second, path, "--text-pair-column")]
    negative = NEGATIVE if score is None and NEGATIVE in header and NEGATIVE not in (text, pair) else None
    if len({text, pair, score} - {None}) < (3 if score else 2):
        raise UsageError(f"{path}: the texts and the score must be different columns ({text!r}, {pair!r}, {score!r})")
    return EmbedLayout(path, kind, text, pair, score, settings.encoding, negative)


def _header(path: str, kind: str, encoding: str) -> list[str]:
    if kind in ("csv", "tsv"):
        return csv_rows(path, encoding)[0]
    first = next(json_records(path, encoding), None)
    if first is None:
        raise InputError("no data rows", source=path)
    return list(first[1])


def iter_rows(layout: EmbedLayout) -> Iterator[dict[str, Any]]:
    """One dict per row with the dataset's column names, checked: empty texts and non-numeric scores are errors."""
    sources = [layout.text, layout.text_pair, layout.negative, layout.label]
    wanted = [(src, dst) for src, dst in zip(sources, _targets(layout), strict=True) if src and dst]
    if layout.kind in ("csv", "tsv"):
        header, rows = csv_rows(layout.path, layout.encoding)
        index = {name: header.index(name) for name, _ in wanted}
        records: Iterator[tuple[int, dict[str, Any]]] = (
            (line, {name: row[i] for name, i in index.items()}) for line, row in rows
        )
    else:
        records = json_records(layout.path, layout.encoding)
    count = 0
    for line, record in records:
        row: dict[str, Any] = {}
        for src, dst in wanted:
            if src not in record:
                raise InputError(f"no field {src!r}", source=layout.path, line=line)
            value = record[src]
            row[dst] = _score(value, src, layout.path, line) if dst == SCORE else _text(value, src, layout.path, line)
        row["line"] = line
        count += 1
        yield row
    if count == 0:
        raise InputError("no data rows (only a header, or blank lines)", source=layout.path)


def _targets(layout: EmbedLayout) -> tuple[str | None, ...]:
    if layout.label:
        return (SCORED[0], SCORED[1], None, SCORE)
    return (PAIRS[0], PAIRS[1], NEGATIVE, None)


def _text(value: Any, column: str, path: str, line: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"empty text in column {column!r}", source=path, line=line)
    return value


def _score(value: Any, column: str, path: str, line: int) -> float:
    try:
        score = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        score = math.nan
    if not math.isfinite(score) or isinstance(value, bool):
        raise InputError(f"score {value!r} in column {column!r} is not a number", source=path, line=line)
    return score


def _generate(layout_json: str) -> Iterator[dict[str, Any]]:
    """The generator handed to ``Dataset.from_generator``; a module-level function so it pickles."""
    yield from iter_rows(EmbedLayout(**json.loads(layout_json)))


def _load(layout: EmbedLayout, cache_dir: str) -> Any:
    from datasets import Features, Value

    for _ in iter_rows(layout):  # every row checked before the dataset is built: errors name their line
        pass
    kinds: dict[str, Literal["string", "float64"]] = {name: "string" for name in layout.names}
    if layout.label:
        kinds[SCORE] = "float64"
    features = Features({**{name: Value(kind) for name, kind in kinds.items()}, "line": Value("int64")})
    return arrow_rows(_generate, features, layout, cache_dir)
