"""``llmtool pretrain``: a BERT (masked LM, optionally with next-sentence prediction) or a GPT-2
(causal LM) trained from scratch on a text corpus, tokenizer included.

The steps, each checked before the next costs anything:

1. read the corpus files (checked like ``finetune``'s data: :mod:`llmtool.training.data`) into documents
   (a ``.txt`` file: one sentence or line per line, a blank line between documents; a CSV or
   JSONL text column: one document per row), stored as Arrow on disk;
2. train a tokenizer on them (:mod:`llmtool.training.tokenizer_train`), or reuse one (``--tokenizer``);
3. build a model config from a size preset (``--size``) and/or a ``config.json`` (``--config``),
   with new random weights;
4. turn documents into examples: packed blocks, one line each, or BERT's sentence pairs;
5. train with the shared machinery (:mod:`llmtool.training.trainer`: progress, Ctrl-C checkpoints,
   ``--resume``, atomic output, distributed runs) and save a standard Transformers folder that
   ``fill-mask``, ``generate``, ``next-sentence``, ``finetune`` and ``AutoModel*`` load.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmtool.errors import InputError, ModelError, UsageError
from llmtool.io.streams import Console
from llmtool.models import prepare_environment
from llmtool.settings import MIN_FREQUENCY, OBJECTIVES, SIZES, VOCAB_SIZE, PretrainSettings
from llmtool.training import data
from llmtool.training.data import ColumnSpec, Layout, quiet_datasets, resolve_layout
from llmtool.training.lm_examples import BlockPacker, LineEncoder, MlmCollator, fingerprint, mask_once, num_proc
from llmtool.training.tokenizer_train import TokenizerOptions, check_pretrained_tokenizer, train_tokenizer
from llmtool.training.trainer import TrainingRun, perplexity, signals_deferred, world_size

ARCHITECTURES = {"mlm": "bert", "clm": "gpt2"}
TOKENIZER_DIR = "tokenizer"  # where the trained tokenizer is kept (in the run's cache) for the other processes
MAX_DOCUMENT_LINES = 1000  # a longer document is cut into pieces of this many lines (memory stays bounded)
SHORT_SEQ_PROB = 0.1  # BERT: share of next-sentence examples made shorter than the block, like fine-tuning inputs
NSP_PAIRINGS = 5  # BERT's dupe_factor: each document is cut into pairs this many times, each time differently


POSITIONS = {"mlm": 512, "clm": 1024}  # the context of every preset: BERT's 512 tokens, GPT-2's 1024


# --------------------------------------------------------------------------- the command


def pretrain(
    corpus: Sequence[str],
    output_dir: str,
    settings: PretrainSettings,
    console: Console | None = None,
    *,
    offline: bool = False,
) -> dict[str, Any]:
    """Pre-train a new model on the ``corpus`` files; write it to ``output_dir``; return the final metrics."""
    settings.check()
    console = console or Console()
    prepare_environment(offline, console.verbose)
    with signals_deferred():
        layouts = corpus_layouts(corpus, settings)  # cheap checks of every file before anything is written
        overrides = read_config(settings.config, settings.objective) if settings.config else {}
        check_positions(settings, overrides)
        return _pretrain(corpus, layouts, overrides, output_dir, settings, console)


def _pretrain(
    corpus: Sequence[str],
    layouts: list[Layout],
    overrides: dict[str, Any],
    output_dir: str,
    settings: PretrainSettings,
    console: Console,
) -> dict[str, Any]:
    with TrainingRun(output_dir, settings, console) as run:
        train_docs, valid_docs = run.main_first(lambda: load_documents(layouts, settings, run.cache_dir))
        run.console.info(_corpus_summary(layouts, train_docs, valid_docs))
        settings = choose_layout(settings, train_docs)
        resume_from = run.folder.latest_checkpoint() if settings.resume else None
        tokenizer = run.main_first(lambda: _tokenizer(settings, train_docs, run.cache_dir, resume_from))
        config = build_config(settings, tokenizer, overrides)
        model = new_model(config, settings)
        examples = run.main_first(lambda: build_examples(train_docs, valid_docs, tokenizer, settings))
        train_ds, valid_ds = examples
        params = count_parameters(model)
        run.console.info(
            f"{architecture_name(model)}: {params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}; "
            f"{len(train_ds)} training examples of up to {block(settings)} tokens"
        )
        settings, plan = training_plan(settings, examples)
        run.settings = settings
        run.console.info(plan.line())
        for warning in plan.warnings:
            run.console.warn(warning)
        record = _record(corpus, layouts, settings, model, tokenizer, params, train_docs, valid_docs, examples)
        record["plan"] = plan.as_dict()
        return run.train(
            model,
            tokenizer,
            train_ds,
            valid_ds,
            _collator(settings, tokenizer),
            best_metric="loss",
            derived_metrics=perplexity,
            record=record,
            summary={"task": objective_name(settings), "parameters": params},
        )


def objective_name(settings: PretrainSettings) -> str:
    return "mlm+nsp" if settings.nsp else settings.objective


def dry_run(corpus: Sequence[str], settings: PretrainSettings, *, offline: bool = False) -> dict[str, Any]:
    """Check the corpus, train the tokenizer and build the examples (in a temporary folder), and say
    what training would do: the plan and its warnings. Trains no model; writes nothing that stays."""
    import tempfile

    settings.check()
    prepare_environment(offline, False)
    layouts = corpus_layouts(corpus, settings)
    overrides = read_config(settings.config, settings.objective) if settings.config else {}
    check_positions(settings, overrides)
    with tempfile.TemporaryDirectory(prefix="llmtool-dry-run-") as cache:
        train_docs, valid_docs = load_documents(layouts, settings, cache)
        settings = choose_layout(settings, train_docs)
        tokenizer = _tokenizer(settings, train_docs, cache, None)
        config = build_config(settings, tokenizer, overrides)
        examples = build_examples(train_docs, valid_docs, tokenizer, settings)
        settings, plan = training_plan(settings, examples)
        import torch

        with torch.device("meta"):
            params = count_parameters(new_model(config, settings))
        return {
            "objective": objective_name(settings),
            "corpus": list(corpus),
            "documents": {"train": len(train_docs), "valid": len(valid_docs) if valid_docs is not None else 0},
            "lines": sum(len(x) for x in train_docs["lines"]),
            "size": settings.size,
            "parameters": params,
            "vocab_size": len(tokenizer),
            "block_size": block(settings),
            "plan": plan.as_dict(),
        }


def format_dry_run(report: dict[str, Any]) -> str:
    """The --dry-run report for people: the corpus, the model, the plan line and its warnings."""
    plan = report["plan"]
    docs = report["documents"]
    lines = [
        f"corpus   {', '.join(report['corpus'])}: {docs['train']} training documents ({report['lines']} lines), "
        f"{docs['valid']} for validation",
        f"model    {report['objective']}, size {report['size']}, {report['parameters']:,} parameters, "
        f"vocabulary {report['vocab_size']}, block {report['block_size']} tokens",
        f"plan     {_plan_from_dict(plan).line().removeprefix('plan: ')}",
    ]
    return "\n".join([*lines, *(f"warning  {w}" for w in plan["warnings"])])


def _plan_from_dict(values: dict[str, Any]) -> Any:
    from llmtool.training.plan import Plan

    return Plan(**values)


# --------------------------------------------------------------------------- the plan

SENTENCE_ENDS = (".", "!", "?", '"', "'", ")", "]")  # a line that ends so ends a sentence
LINES_SAMPLE = 20_000  # lines looked at to choose the layout
SHORT_LINES_SHARE = 0.9  # a corpus of lines: at least this share of lines short enough for one example ...
SENTENCE_LINES_SHARE = 0.8  # ... and at least this share ending a sentence (verse and wrapped prose do not)
AUTO_EPOCHS = 40  # the step budget: this many passes over the examples (facts need many to be memorised) ...
AUTO_MIN_STEPS = {"mlm": 3000, "clm": 1500}  # ... at least this many steps from scratch ...
AUTO_MAX_STEPS = {"tiny": 10_000, "mini": 10_000, "small": 20_000, "base": 50_000}  # ... at most this many
BATCH = 32  # examples per step, fewer when the corpus has fewer (mlm lines: a multiple, see batch_size)
MAX_LINES_A_BLOCK = 8  # mlm lines: a step holds at most BATCH x this many lines
MASK_LINES, MASK_BLOCKS = 0.4, 0.15  # mlm: the share masked in a line of its own, and in longer examples
BLOCK, SMALL_BLOCK = 128, 32  # tokens per example: packing running text, and mlm packing short lines
FEW_BLOCKS = 32  # mlm packs short lines only when that makes at least this many blocks (else: lines) ...
SHORT_DOCUMENT_LINES = 20  # ... and only lines grouped into documents (blank lines) of at most this many on average
WARMUP = 0.05  # new weights need a warm-up


def block(settings: PretrainSettings) -> int:
    """Tokens per example: --block-size, else BLOCK (choose_layout may choose SMALL_BLOCK)."""
    return settings.block_size or BLOCK


def choose_layout(settings: PretrainSettings, documents: Any) -> PretrainSettings:
    """--line-by-line / --pack as given; else lines for a corpus of short sentences, one per line
    (SHORT_LINES_SHARE of the lines fit one example, SENTENCE_LINES_SHARE end a sentence); else packing.
    --nsp builds sentence pairs either way. Also the share masked, when not given: MASK_LINES for
    lines (15% of a 7-token line is one token, and learning takes several times the steps), else
    BERT's MASK_BLOCKS."""
    import dataclasses

    if settings.line_by_line is not None or settings.nsp:
        lines = bool(settings.line_by_line)
        return dataclasses.replace(settings, line_by_line=lines, mlm_probability=_masking(settings, lines))
    words_limit = block(settings) * 3 // 4  # about 1.3 tokens per word in a trained vocabulary
    seen = short = sentences = tokens = docs = 0
    for batch in documents.iter(batch_size=1000):
        for lines in batch["lines"]:
            docs += 1
            for line in lines:
                seen += 1
                words = len(line.split())
                tokens += words * 4 // 3 + 1  # about 1.3 tokens per word, and a separator
                short += words <= words_limit
                sentences += line.rstrip().endswith(SENTENCE_ENDS)
        if seen >= LINES_SAMPLE:
            break
    lines = seen > 0 and short >= SHORT_LINES_SHARE * seen and sentences >= SENTENCE_LINES_SHARE * seen
    related = docs > 1 and seen <= SHORT_DOCUMENT_LINES * docs  # short documents: neighbouring lines belong together
    if (
        lines
        and related
        and settings.objective == "mlm"
        and settings.block_size is None
        and tokens // SMALL_BLOCK >= FEW_BLOCKS
    ):
        # masked LM on short documents of short lines learns several times faster from small packed blocks
        # (a few lines of one document each, 15% masked) than from one line each; on one stream of
        # unrelated lines, fixed blocks are memorised instead: README "Measured"
        packed = _masking(settings, False)
        return dataclasses.replace(settings, line_by_line=False, block_size=SMALL_BLOCK, mlm_probability=packed)
    return dataclasses.replace(settings, line_by_line=lines, mlm_probability=_masking(settings, lines))


def _masking(settings: PretrainSettings, lines: bool) -> float:
    if settings.mlm_probability is not None:
        return settings.mlm_probability
    return MASK_LINES if lines else MASK_BLOCKS


def training_plan(settings: PretrainSettings, examples: tuple[Any, Any | None]) -> tuple[PretrainSettings, Any]:
    """The settings with the plan's choices filled in (see :mod:`llmtool.training.plan`), and the plan."""
    from llmtool.training.plan import Rules, make_plan

    train, valid = examples
    rules = Rules(
        lr=SIZES[settings.size].lr,
        batch_size=batch_size(settings, train),
        epochs=AUTO_EPOCHS,
        min_steps=AUTO_MIN_STEPS[settings.objective],
        max_steps=AUTO_MAX_STEPS[settings.size],
        warmup_ratio=WARMUP,
        from_scratch=True,
    )
    size = block(settings)
    layout = (
        f"sentence pairs of up to {block(settings)} tokens"
        if settings.nsp
        else f"one line per example (up to {block(settings)} tokens)"
        if settings.line_by_line
        else f"packed {size}-token blocks"
    )
    if settings.objective == "mlm":
        layout += f", {_masking(settings, bool(settings.line_by_line)):.0%} of each masked"
    return make_plan(
        settings, rules, examples=len(train), valid_examples=len(valid) if valid is not None else 0,
        layout=layout, processes=world_size(),
    )  # fmt: skip


def batch_size(settings: PretrainSettings, train: Any) -> int:
    """Examples a step when --batch-size is not given: BATCH; for mlm on one line per example, as many
    lines as fill about BATCH blocks of SMALL_BLOCK tokens (a line holds few masked tokens: with 32
    lines a step, the people corpus of bench/learns.py was learned half as well; README "Measured")."""
    if settings.objective != "mlm" or not settings.line_by_line:
        return BATCH
    lengths = [len(ids) for ids in train[: min(len(train), LINES_SAMPLE)]["input_ids"]]
    return BATCH * max(1, min(MAX_LINES_A_BLOCK, SMALL_BLOCK * len(lengths) // max(1, sum(lengths))))


# --------------------------------------------------------------------------- corpus -> documents


def corpus_layouts(paths: Sequence[str], settings: PretrainSettings) -> list[Layout]:
    """Each corpus file checked (exists, not empty, header and text column) before anything is read in full."""
    if not paths:
        raise UsageError("give at least one CORPUS file")
    files = [*paths, settings.valid] if settings.valid else list(paths)
    layouts = []
    for path in files:
        table = Path(path).suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson")
        spec = ColumnSpec(text=settings.text_column if table else None)
        layouts.append(resolve_layout(path, settings.objective, spec, settings.encoding))  # type: ignore[arg-type]
    return layouts


def iter_documents(layout: Layout) -> Iterator[dict[str, Any]]:
    """``{"lines": [...], "line": N}`` per document: a .txt file's blank-line-separated paragraphs
    (cut every MAX_DOCUMENT_LINES lines), or one table row (its text's lines)."""
    from llmtool.io.streams import decode_lines
    from llmtool.training.data import iter_rows

    if layout.kind != "lines":
        for row in iter_rows(layout):
            yield {"lines": [line for line in row["text"].splitlines() if line.strip()], "line": row["line"]}
        return
    lines: list[str] = []
    start = 0
    with open(layout.path, "rb") as binary:
        for lineno, line in decode_lines(binary, layout.path, layout.encoding):
            if line.strip():
                if not lines:
                    start = lineno
                lines.append(line)
            if lines and (not line.strip() or len(lines) == MAX_DOCUMENT_LINES):
                yield {"lines": lines, "line": start}
                lines = []
    if lines:
        yield {"lines": lines, "line": start}


def _generate_documents(layouts_json: str) -> Iterator[dict[str, Any]]:
    """The generator for ``Dataset.from_generator``; module level so that it pickles."""
    for layout in json.loads(layouts_json):
        yield from iter_documents(Layout(**layout))


def _documents_dataset(layouts: list[Layout], cache_dir: str) -> Any:
    from datasets import Dataset, Features, Sequence, Value

    for layout in layouts:  # datasets fails obscurely on an empty generator: say which file is empty
        if next(iter_documents(layout), None) is None:
            raise InputError("no text (only blank lines, or only a header)", source=layout.path)
    quiet_datasets()
    key = hashlib.sha256(json.dumps([data.fingerprint(x) for x in layouts] + [MAX_DOCUMENT_LINES]).encode()).hexdigest()
    try:
        return Dataset.from_generator(
            _generate_documents,
            features=Features({"lines": Sequence(Value("string")), "line": Value("int64")}),
            gen_kwargs={"layouts_json": json.dumps([asdict(x) for x in layouts])},
            cache_dir=cache_dir,
            fingerprint=key[:32],
        )
    except Exception as exc:  # datasets wraps what the generator raised
        cause = data.llmtool_cause(exc)
        if cause is not None:
            raise cause from None
        raise


def load_documents(layouts: list[Layout], settings: PretrainSettings, cache_dir: str) -> tuple[Any, Any | None]:
    """Training and validation documents (Arrow, on disk): the --valid file, or a seeded share of the corpus."""
    corpus = layouts[:-1] if settings.valid else layouts
    source = corpus[0].path if len(corpus) == 1 else None
    train = _documents_dataset(corpus, cache_dir)
    valid = None
    if settings.valid:
        valid = _documents_dataset(layouts[-1:], cache_dir)
    elif settings.valid_split:
        n_valid = round(len(train) * settings.valid_split)
        if n_valid < 1 or len(train) - n_valid < 1:
            raise InputError(
                f"{_count(len(train), 'document')} {'is' if len(train) == 1 else 'are'} too few for "
                f"--valid-split {settings.valid_split:g}; "
                "separate documents with blank lines, or pass --valid FILE",
                source=source,
            )
        split = train.train_test_split(test_size=n_valid, seed=settings.seed, shuffle=True)
        train, valid = split["train"], split["test"]
    if settings.nsp and len(train) < 2:  # said before a tokenizer is trained for nothing
        raise InputError(
            f"--nsp draws random second sentences from other documents, and there {'is' if len(train) == 1 else 'are'} "
            f"{_count(len(train), 'training document')}; separate documents with blank lines (or one per CSV row)",
            source=source,
        )
    return train, valid


def _corpus_summary(layouts: list[Layout], train: Any, valid: Any | None) -> str:
    files = ", ".join(x.path for x in layouts)
    lines = sum(len(x) for x in train["lines"]) if len(train) <= 100_000 else None
    counted = f" ({_count(lines, 'line')})" if lines is not None else ""
    held = f", {len(valid)} for validation" if valid is not None else ""
    return f"{files}: {_count(len(train), 'training document')}{counted}{held}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _texts(documents: Any) -> Iterator[str]:
    for batch in documents.iter(batch_size=1000):
        for lines in batch["lines"]:
            yield from lines


# --------------------------------------------------------------------------- tokenizer


def _tokenizer(settings: PretrainSettings, documents: Any, cache_dir: str, resume_from: str | None) -> Any:
    """The run's tokenizer: the one in the checkpoint being resumed, the one asked for, or a new one.

    A new one is saved in the run's cache, so that the other processes of a distributed run (which
    call this after the main process) load the very same vocabulary instead of learning their own.
    """
    from transformers import AutoTokenizer

    saved = Path(cache_dir) / TOKENIZER_DIR
    for folder in (Path(resume_from) if resume_from else None, saved):
        if folder is not None and (folder / "tokenizer_config.json").is_file():
            return _usable(AutoTokenizer.from_pretrained(str(folder)), settings, str(folder))
    if settings.tokenizer is not None:
        return _usable(_load_tokenizer(settings.tokenizer), settings, settings.tokenizer)
    options = TokenizerOptions(
        vocab_size=settings.vocab_size or VOCAB_SIZE,
        min_frequency=settings.min_frequency or MIN_FREQUENCY,
        model_max_length=POSITIONS[settings.objective],
    )
    tokenizer = train_tokenizer(_texts(documents), settings.objective, options)  # type: ignore[arg-type]
    tokenizer.save_pretrained(str(saved))
    return _usable(tokenizer, settings, "the new tokenizer")


def _load_tokenizer(name: str) -> Any:
    from llmtool.models import ModelOptions, ModelRef, load_tokenizer, locate

    folder = Path(name).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ModelError(f"--tokenizer {name}: a file; pass the folder that holds tokenizer.json")
    # A tokenizer folder needs no config.json, so a folder is loaded as is (no model checks).
    options = ModelOptions(model=name)
    ref = ModelRef(options, str(folder), True, folder) if folder.is_dir() else locate(options)
    return load_tokenizer(ref)


def _usable(tokenizer: Any, settings: PretrainSettings, source: str) -> Any:
    from llmtool.models import ensure_pad_token

    check_pretrained_tokenizer(tokenizer, settings.objective, source)  # type: ignore[arg-type]
    ensure_pad_token(tokenizer, source)  # batches of lines need one; padded positions are never learned
    return tokenizer


# --------------------------------------------------------------------------- model


def read_config(path: str, objective: str) -> dict[str, Any]:
    """A config.json: all of a model's config, or just the keys that change the --size preset."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--config {path}: a folder; pass its config.json") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", source=path, line=exc.lineno, column=exc.colno) from None
    if not isinstance(values, dict):
        raise InputError("expected a JSON object of config keys", source=path)
    model_type = values.get("model_type", ARCHITECTURES[objective])
    if model_type != ARCHITECTURES[objective]:
        raise UsageError(
            f"--config {path} is a {model_type!r} config; --objective {objective} trains "
            f"a {ARCHITECTURES[objective]!r} model"
        )
    return values


def preset(settings: PretrainSettings) -> dict[str, Any]:
    """The config keys of the --size preset, in the architecture's own names."""
    size = SIZES[settings.size]
    if settings.objective == "mlm":
        return {
            "num_hidden_layers": size.layers,
            "hidden_size": size.hidden,
            "num_attention_heads": size.heads,
            "intermediate_size": 4 * size.hidden,
            "max_position_embeddings": POSITIONS["mlm"],
            "hidden_dropout_prob": size.dropout,
            "attention_probs_dropout_prob": size.dropout,
        }
    dropout = {"resid_pdrop": size.dropout, "embd_pdrop": size.dropout, "attn_pdrop": size.dropout}
    shape = {"n_layer": size.layers, "n_embd": size.hidden, "n_head": size.heads, "n_positions": POSITIONS["clm"]}
    return {**shape, **dropout}


def check_positions(settings: PretrainSettings, overrides: dict[str, Any]) -> None:
    """--block-size must fit the model's position table (the preset's, or the --config's)."""
    key = "max_position_embeddings" if settings.objective == "mlm" else "n_positions"
    positions = overrides.get(key, POSITIONS[settings.objective])
    if not isinstance(positions, int) or positions < 1:
        raise UsageError(f"--config {settings.config}: {key} must be a positive integer")
    if block(settings) > positions:
        raise UsageError(f"--block-size {block(settings)} is longer than the model's {positions} positions")


def build_config(settings: PretrainSettings, tokenizer: Any, overrides: dict[str, Any]) -> Any:
    """Preset, then --config keys, then what must agree with the tokenizer (vocabulary, special ids)."""
    from transformers import BertConfig, GPT2Config

    values = {**preset(settings), **{k: v for k, v in overrides.items() if k not in ("model_type", "architectures")}}
    values["vocab_size"] = len(tokenizer)
    if settings.objective == "mlm":
        values["pad_token_id"] = tokenizer.pad_token_id
        config: Any = BertConfig(**values)
        positions, hidden, heads = config.max_position_embeddings, config.hidden_size, config.num_attention_heads
    else:
        values.update(bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
        config = GPT2Config(**values)
        positions, hidden, heads = config.n_positions, config.n_embd, config.n_head
    if hidden % heads:
        raise UsageError(f"the hidden size ({hidden}) must be a multiple of the attention heads ({heads})")
    tokenizer.model_max_length = positions
    return config


def new_model(config: Any, settings: PretrainSettings) -> Any:
    """New random weights (seeded by --seed): BertForPreTraining (with --nsp), BertForMaskedLM or GPT2LMHeadModel."""
    import transformers

    from llmtool.models import set_seed

    name = "GPT2LMHeadModel" if settings.objective == "clm" else "BertForMaskedLM"
    if settings.nsp:
        name = "BertForPreTraining"
    set_seed(settings.seed)
    return getattr(transformers, name)(config)


def count_parameters(model: Any) -> int:
    """Distinct parameters (tied input and output embeddings count once), as in the README's table."""
    return sum(p.numel() for p in model.parameters())


def architecture_name(model: Any) -> str:
    return type(model).__name__


# --------------------------------------------------------------------------- documents -> examples


def build_examples(train_docs: Any, valid_docs: Any | None, tokenizer: Any, s: PretrainSettings) -> tuple[Any, Any]:
    train = _examples(train_docs, tokenizer, s, "train")
    valid = _examples(valid_docs, tokenizer, s, "valid") if valid_docs is not None else None
    if len(train) == 0:
        raise UsageError(f"the corpus is shorter than one --block-size block ({block(s)} tokens); lower it")
    if valid is not None and len(valid) == 0:
        raise UsageError("the validation documents are shorter than one --block-size block; lower it")
    return train, valid


def _examples(docs: Any, tokenizer: Any, s: PretrainSettings, split: str) -> Any:
    """Token ids per example: packed blocks (default), lines (--line-by-line) or sentence pairs (--nsp)."""
    key = [docs._fingerprint, _tokenizer_hash(tokenizer), s.objective, s.nsp, block(s), s.line_by_line, split]
    procs = num_proc(s.num_proc, len(docs))
    if s.nsp:
        segments = docs.map(
            _SegmentEncoder(tokenizer), batched=True, remove_columns=docs.column_names, num_proc=procs,
            new_fingerprint=fingerprint([*key, "segments"]), desc=None,
        )  # fmt: skip
        builder = _NspBuilder(segments, tokenizer, block(s), s.seed)
        out = segments.map(
            builder, batched=True, with_indices=True, remove_columns=segments.column_names,
            new_fingerprint=fingerprint([*key, "pairs", s.seed, NSP_PAIRINGS]), desc=None,
        )  # fmt: skip
    else:
        texts = docs.map(
            _lines if s.line_by_line else _joined, batched=True, remove_columns=docs.column_names,
            new_fingerprint=fingerprint([*key, "texts"]), desc=None,
        )  # fmt: skip
        encoder = LineEncoder(tokenizer, block(s) if s.line_by_line else None, s.objective)
        out = texts.map(
            encoder, batched=True, remove_columns=texts.column_names, num_proc=procs,
            new_fingerprint=fingerprint([*key, "ids"]), desc=None,
        )  # fmt: skip
        if not s.line_by_line:
            out = out.map(
                BlockPacker(block(s)), batched=True, batch_size=1000, remove_columns=out.column_names,
                new_fingerprint=fingerprint([*key, "blocks"]), desc=None,
            )  # fmt: skip
    if s.objective == "clm":
        out = out.map(_with_labels, batched=True, new_fingerprint=fingerprint([*key, "labels"]), desc=None)
    elif split == "valid":
        out = mask_once(out, tokenizer, _masking(s, bool(s.line_by_line)), s.seed, s.whole_word_mask)
    return out


def _lines(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {"text": [line for lines in batch["lines"] for line in lines]}


def _joined(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
    """A document's lines as one text: a newline between lines, so a causal LM learns where lines end."""
    return {"text": ["\n".join(lines) for lines in batch["lines"]]}


def _with_labels(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """clm labels: the inputs themselves (the model shifts them). Given explicitly so that padding, and
    only padding, is ignored: GPT-2 pads with its end-of-text token, which must still be learned."""
    return {"labels": [list(ids) for ids in batch["input_ids"]]}


def _tokenizer_hash(tokenizer: Any) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


class _SegmentEncoder:
    """Each document as a list of segments (its lines; a single-line document split into sentences),
    as token ids without special tokens: the units BERT's next-sentence pairs are cut between."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        docs = [lines if len(lines) > 1 else split_sentences(" ".join(lines)) for lines in batch["lines"]]
        flat = [segment for doc in docs for segment in doc]
        ids = iter(self.tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter([])
        return {"segments": [[list(next(ids)) for _ in doc] for doc in docs]}


# Sentence ends: . ! ? before a space and a capital or digit (Western text); the ideographic full stop,
# the full-width ! ? ; and the ellipsis (with a closing quote after them) end one wherever they stand.
_WESTERN_END = r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])"
_CJK_SENTENCE = r"[^。！？；…!?]*[。！？；…!?]+[”’」』）)]*|[^。！？；…!?]+"  # noqa: RUF001


def split_sentences(text: str) -> list[str]:
    """A rough sentence split, enough to pair the sentences of a paragraph: after . ! ? before a
    capital or digit, and after Chinese sentence ends (a closing quote or bracket stays with its sentence)."""
    import re

    parts = re.split(_WESTERN_END, text.strip())
    out: list[str] = []
    for part in parts:
        out.extend(re.findall(_CJK_SENTENCE, part) if re.search("[。！？；…]", part) else [part])  # noqa: RUF001
    return [p.strip() for p in out if p.strip()]


Pair = tuple[list[int], list[int], bool]  # tokens of A, tokens of B, whether B is random


class _NspBuilder:
    """BERT's ``create_instances_from_document``: [CLS] A [SEP] B [SEP] pairs, where B is the actual
    continuation of A half the time (label 0) and text from a random other document otherwise (label 1).

    Segments are gathered up to the target length (the block, or with probability 0.1 a shorter one),
    split at a random segment boundary into A and B; a random B puts the unused segments back. This is
    done NSP_PAIRINGS times per document with different draws (BERT's dupe_factor), so that the model
    sees each sentence with several partners rather than memorising one pairing. Each document draws
    from its own seeded generator, so the pairs do not depend on batches or processes.
    """

    def __init__(self, documents: Any, tokenizer: Any, block_size: int, seed: int) -> None:
        self.documents = documents  # every document, for random second sentences
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.max_tokens = block_size - 3  # room for [CLS], [SEP], [SEP]
        self.seed = seed

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "token_type_ids": [], "next_sentence_label": []}
        for segments, index in zip(batch["segments"], indices, strict=True):
            for copy in range(NSP_PAIRINGS):
                rng = random.Random(f"{self.seed}-{copy}-{index}")
                for a, b, is_random in self.pairs(segments, index, rng):
                    out["input_ids"].append([self.cls, *a, self.sep, *b, self.sep])
                    out["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
                    out["next_sentence_label"].append(int(is_random))
        out["attention_mask"] = [[1] * len(ids) for ids in out["input_ids"]]
        return out

    def pairs(self, document: list[list[int]], index: int, rng: random.Random) -> Iterator[Pair]:
        target = self.max_tokens if rng.random() >= SHORT_SEQ_PROB else rng.randint(2, self.max_tokens)
        chunk: list[list[int]] = []
        length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for seg in chunk[:a_end] for t in seg]
                if len(chunk) == 1 or rng.random() < 0.5:
                    b = self._random_continuation(index, target - len(a), rng)
                    is_random = True
                    i -= len(chunk) - a_end  # the unused segments start the next chunk
                else:
                    b = [t for seg in chunk[a_end:] for t in seg]
                    is_random = False
                _truncate_pair(a, b, self.max_tokens, rng)
                if a and b:
                    yield a, b, is_random
                chunk, length = [], 0
            i += 1

    def _random_continuation(self, index: int, target: int, rng: random.Random) -> list[int]:
        n = len(self.documents)
        other = index
        for _ in range(10):
            other = rng.randrange(n)
            if other != index:
                break
        segments = self.documents[other]["segments"]
        b: list[int] = []
        if not segments:
            return b
        for segment in segments[rng.randrange(len(segments)) :]:
            b.extend(segment)
            if len(b) >= target:
                break
        return b


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """BERT's ``truncate_seq_pair``: trim the longer side, from the front or the back at random."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _collator(s: PretrainSettings, tokenizer: Any) -> Any:
    """mlm: random masking each time a batch is drawn (fixed masks for validation); clm: padding only."""
    from transformers import DataCollatorForTokenClassification

    if s.objective == "mlm":
        return MlmCollator(tokenizer, _masking(s, bool(s.line_by_line)), s.seed, s.whole_word_mask)
    return DataCollatorForTokenClassification(tokenizer)  # pads input_ids with the pad token, labels with -100


# --------------------------------------------------------------------------- records


def _record(
    corpus: Sequence[str],
    layouts: list[Layout],
    s: PretrainSettings,
    model: Any,
    tokenizer: Any,
    params: int,
    train_docs: Any,
    valid_docs: Any | None,
    examples: tuple[Any, Any | None],
) -> dict[str, Any]:
    """What llmtool_settings.json says about the run, beside the training settings themselves."""
    return {
        "command": "pretrain",
        "objective": objective_name(s),
        "corpus": [os.path.abspath(p) for p in corpus],
        "columns": {x.path: x.text for x in layouts if x.text},
        "valid": s.valid or (f"{s.valid_split:g} of the documents" if s.valid_split else None),
        "size": s.size,
        "config": os.path.abspath(s.config) if s.config else None,
        "architecture": architecture_name(model),
        "parameters": params,
        "tokenizer": s.tokenizer or "trained on the corpus",
        "vocab_size": len(tokenizer),
        "documents": {"train": len(train_docs), "valid": len(valid_docs) if valid_docs is not None else 0},
        "examples": {"train": len(examples[0]), "valid": len(examples[1]) if examples[1] is not None else 0},
        "block_size": block(s),
        "layout": "sentence pairs" if s.nsp else "lines" if s.line_by_line else "packed blocks",
        "world_size": world_size(),
    }


def parameter_table(vocab_size: int = 8192) -> list[dict[str, Any]]:
    """Parameters of every preset for both architectures, by instantiating them (for the README)."""
    rows = []
    for objective in OBJECTIVES:
        for size in SIZES:
            s = PretrainSettings(objective=objective, size=size)
            values = {**preset(s), "vocab_size": vocab_size}
            if objective == "clm":  # GPT-2's end-of-text id is that of the 50257-token vocabulary
                values.update(bos_token_id=vocab_size - 1, eos_token_id=vocab_size - 1)
            from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

            model: Any = (
                BertForMaskedLM(BertConfig(**values)) if objective == "mlm" else GPT2LMHeadModel(GPT2Config(**values))
            )
            embeddings = model.get_input_embeddings().weight.numel()
            rows.append(
                {
                    "objective": objective,
                    "size": size,
                    **asdict(SIZES[size]),
                    "parameters": count_parameters(model),
                    "without_token_embeddings": count_parameters(model) - embeddings,
                }
            )
    return rows
