"""``llmtool pretrain --objective seq2seq``: a new encoder-decoder trained from scratch on parallel text
(the original Transformer's job), with its own tokenizer.

The steps, each checked before the next costs anything:

1. read the pair files (:mod:`llmtool.training.seq2seq_data`: a headerless TAB-separated .txt such as
   Tatoeba's ``fra-eng.txt``, a .csv/.tsv with a header, or JSON Lines) into one Arrow dataset;
2. learn one vocabulary on both sides (:mod:`llmtool.training.tokenizer_train`: SentencePiece-style
   BPE), or reuse one (``--tokenizer``);
3. build a Marian model (``MarianMTModel``) of the ``--size`` preset's shape, encoder and decoder
   alike, with new random weights; ``--config`` changes the preset's keys;
4. one example per pair: the source as the encoder's input, the target as the labels (each side
   cut at ``--block-size`` tokens);
5. train with the shared machinery (:mod:`llmtool.training.trainer`) and save a standard folder
   that ``AutoModelForSeq2SeqLM`` loads, with a ``generation_config.json`` (decoder start, end,
   padding, a maximum length) that ``llmtool translate`` follows.

Why Marian: it is the original Transformer (post-norm layers, sinusoidal positions, shared
embeddings scaled by the square root of the width) with nothing added, the architecture of the
OPUS-MT translation models; its positions are computed, not learned, so a model trained on short
sentences has no untrained position rows, and CTranslate2 converts it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import Console
from llmtool.settings import MIN_FREQUENCY, SIZES, VOCAB_SIZE, PretrainSettings
from llmtool.training import seq2seq_data
from llmtool.training.arguments import world_size
from llmtool.training.defaults import (
    AUTO_MAX_STEPS,
    BATCH,
    PRETRAIN_WARMUP,
    SEQ2SEQ_BLOCK,
    SEQ2SEQ_EPOCHS,
    SEQ2SEQ_MIN_STEPS,
    SEQ2SEQ_POSITIONS,
)
from llmtool.training.lm_examples import fingerprint, num_proc
from llmtool.training.results import perplexity
from llmtool.training.seq2seq_data import PairLayout
from llmtool.training.tokenizer_train import TokenizerOptions, check_pretrained_tokenizer, train_tokenizer
from llmtool.training.trainer import TrainingRun

ARCHITECTURE = "marian"
TOKENIZER_DIR = "tokenizer"  # where the trained tokenizer is kept (in the run's cache) for the other processes


def block(settings: PretrainSettings) -> int:
    """Tokens per source and per target: --block-size, else SEQ2SEQ_BLOCK."""
    return settings.block_size or SEQ2SEQ_BLOCK


# --------------------------------------------------------------------------- the command


def pretrain_seq2seq(
    corpus: Sequence[str], output_dir: str, settings: PretrainSettings, console: Console, overrides: dict[str, Any]
) -> dict[str, Any]:
    """Pre-train a new Marian model on the pair files of ``corpus``; write it to ``output_dir``."""
    layouts = pair_layouts(corpus, settings)  # cheap checks of every file before anything is written
    check_positions(settings, overrides)
    with TrainingRun(output_dir, settings, console) as run:
        train, valid = run.main_first(lambda: load_pairs(layouts, settings, run.cache_dir))
        run.console.info(pairs_summary(layouts, settings, train, valid))
        resume_from = run.folder.latest_checkpoint() if settings.resume else None
        tokenizer = run.main_first(lambda: pairs_tokenizer(settings, train, run.cache_dir, resume_from))
        model = new_model(build_config(settings, tokenizer, overrides), settings)
        train_ds, valid_ds = run.main_first(lambda: build_examples(train, valid, tokenizer, settings))
        params = sum(p.numel() for p in model.parameters())
        run.console.info(
            f"{type(model).__name__}: {params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)} (shared by "
            f"source and target); {len(train_ds)} training pairs of up to {block(settings)} tokens a side"
        )
        settings, plan = training_plan(settings, len(train_ds), len(valid_ds) if valid_ds is not None else 0)
        run.settings = settings
        run.console.info(plan.line())
        for warning in plan.warnings:
            run.console.warn(warning)
        record = {
            "command": "pretrain",
            "objective": "seq2seq",
            "corpus": [os.path.abspath(p) for p in corpus],
            "columns": {x.path: {"source": x.source, "target": x.target} for x in layouts},
            "valid": settings.valid or (f"{settings.valid_split:g} of the pairs" if settings.valid_split else None),
            "size": settings.size,
            "config": os.path.abspath(settings.config) if settings.config else None,
            "architecture": type(model).__name__,
            "parameters": params,
            "tokenizer": settings.tokenizer or "trained on both sides of the corpus",
            "vocab_size": len(tokenizer),
            "examples": {"train": len(train_ds), "valid": len(valid_ds) if valid_ds is not None else 0},
            "block_size": block(settings),
            "layout": "pairs",
            "world_size": world_size(),
            "plan": plan.as_dict(),
        }
        return run.train(
            model,
            tokenizer,
            train_ds,
            valid_ds,
            seq2seq_data.collator(tokenizer),
            best_metric="loss",
            derived_metrics=perplexity,
            record=record,
            summary={"task": "seq2seq", "parameters": params},
        )


def dry_run_seq2seq(corpus: Sequence[str], settings: PretrainSettings, overrides: dict[str, Any]) -> dict[str, Any]:
    """Check the pairs, learn the tokenizer and build the examples (in a temporary folder); say what
    training would do. Trains no model; writes nothing that stays."""
    import tempfile

    import torch

    layouts = pair_layouts(corpus, settings)
    check_positions(settings, overrides)
    with tempfile.TemporaryDirectory(prefix="llmtool-dry-run-") as cache:
        train, valid = load_pairs(layouts, settings, cache)
        tokenizer = pairs_tokenizer(settings, train, cache, None)
        config = build_config(settings, tokenizer, overrides)
        train_ds, valid_ds = build_examples(train, valid, tokenizer, settings)
        settings, plan = training_plan(settings, len(train_ds), len(valid_ds) if valid_ds is not None else 0)
        with torch.device("meta"):
            params = sum(p.numel() for p in new_model(config, settings).parameters())
        return {
            "objective": "seq2seq",
            "corpus": list(corpus),
            "documents": {"train": len(train), "valid": len(valid) if valid is not None else 0},
            "lines": len(train),
            "size": settings.size,
            "parameters": params,
            "vocab_size": len(tokenizer),
            "block_size": block(settings),
            "plan": plan.as_dict(),
        }


# --------------------------------------------------------------------------- pairs


def pair_layouts(paths: Sequence[str], settings: PretrainSettings) -> list[PairLayout]:
    """Each pair file (and --valid) checked: exists, not empty, its columns."""
    if not paths:
        raise UsageError("give at least one CORPUS file")
    files = [*paths, settings.valid] if settings.valid else list(paths)
    return [
        seq2seq_data.resolve_layout(p, settings.source_column, settings.target_column, settings.encoding) for p in files
    ]


def load_pairs(layouts: list[PairLayout], settings: PretrainSettings, cache_dir: str) -> tuple[Any, Any | None]:
    """Training and validation pairs (Arrow, on disk): the --valid file, or a seeded share of the corpus."""
    from datasets import concatenate_datasets

    corpus = layouts[:-1] if settings.valid else layouts
    parts = [seq2seq_data.load_pairs(x, cache_dir) for x in corpus]
    train = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    valid = seq2seq_data.load_pairs(layouts[-1], cache_dir) if settings.valid else None
    if valid is None and settings.valid_split:
        n_valid = round(len(train) * settings.valid_split)
        if n_valid < 1 or len(train) - n_valid < 1:
            raise InputError(
                f"{len(train)} pairs are too few for --valid-split {settings.valid_split:g}; pass --valid FILE",
                source=corpus[0].path if len(corpus) == 1 else None,
            )
        split = train.train_test_split(test_size=n_valid, seed=settings.seed, shuffle=True)
        train, valid = split["train"], split["test"]
    return train, valid


def pairs_summary(layouts: list[PairLayout], settings: PretrainSettings, train: Any, valid: Any | None) -> str:
    files = "; ".join(f"{x.path} ({x.describe()})" for x in layouts)
    held = f", {len(valid)} for validation" if valid is not None else ""
    return f"{files}: {len(train)} training pairs{held}"


def _texts(pairs: Any) -> Iterator[str]:
    for batch in pairs.iter(batch_size=1000):
        yield from batch["source"]
        yield from batch["target"]


# --------------------------------------------------------------------------- tokenizer


def pairs_tokenizer(settings: PretrainSettings, pairs: Any, cache_dir: str, resume_from: str | None) -> Any:
    """The run's tokenizer: the resumed checkpoint's, the one asked for, or one learned on both sides.

    A new one is saved in the run's cache, so that the other processes of a distributed run load the
    very same vocabulary instead of learning their own.
    """
    from transformers import AutoTokenizer

    saved = Path(cache_dir) / TOKENIZER_DIR
    for folder in (Path(resume_from) if resume_from else None, saved):
        if folder is not None and (folder / "tokenizer_config.json").is_file():
            return _usable(AutoTokenizer.from_pretrained(str(folder)), str(folder))
    if settings.tokenizer is not None:
        return _usable(_load_tokenizer(settings.tokenizer), settings.tokenizer)
    options = TokenizerOptions(
        vocab_size=settings.vocab_size or VOCAB_SIZE,
        min_frequency=settings.min_frequency or MIN_FREQUENCY,
        model_max_length=SEQ2SEQ_POSITIONS,
    )
    tokenizer = train_tokenizer(_texts(pairs), "seq2seq", options)
    tokenizer.save_pretrained(str(saved))
    return _usable(tokenizer, "the new tokenizer")


def _load_tokenizer(name: str) -> Any:
    from llmtool.errors import ModelError
    from llmtool.models import ModelOptions, ModelRef, load_tokenizer, locate

    folder = Path(name).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ModelError(f"--tokenizer {name}: a file; pass the folder that holds tokenizer.json")
    options = ModelOptions(model=name)  # a tokenizer folder needs no config.json: loaded as it is
    return load_tokenizer(ModelRef(options, str(folder), True, folder) if folder.is_dir() else locate(options))


def _usable(tokenizer: Any, source: str) -> Any:
    check_pretrained_tokenizer(tokenizer, "seq2seq", source)
    if tokenizer.pad_token is None:
        raise UsageError(f"--tokenizer {source}: an encoder-decoder tokenizer needs a padding token")
    return tokenizer


# --------------------------------------------------------------------------- the model


def preset(settings: PretrainSettings) -> dict[str, Any]:
    """The --size preset as Marian config keys: as many decoder layers as encoder layers, a feed-forward
    layer 4 x the width, the preset's dropout (at least 0.1: a translation model overfits without it)."""
    size = SIZES[settings.size]
    return {
        "d_model": size.hidden,
        "encoder_layers": size.layers,
        "decoder_layers": size.layers,
        "encoder_attention_heads": size.heads,
        "decoder_attention_heads": size.heads,
        "encoder_ffn_dim": 4 * size.hidden,
        "decoder_ffn_dim": 4 * size.hidden,
        "max_position_embeddings": SEQ2SEQ_POSITIONS,
        "dropout": max(size.dropout, 0.1),
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "scale_embedding": True,
        "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": True,
    }


def check_positions(settings: PretrainSettings, overrides: dict[str, Any]) -> None:
    """--block-size must fit the position table (the preset's, or the --config's)."""
    positions = overrides.get("max_position_embeddings", SEQ2SEQ_POSITIONS)
    if not isinstance(positions, int) or positions < 1:
        raise UsageError(f"--config {settings.config}: max_position_embeddings must be a positive integer")
    if block(settings) > positions:
        raise UsageError(f"--block-size {block(settings)} is longer than the model's {positions} positions")


def build_config(settings: PretrainSettings, tokenizer: Any, overrides: dict[str, Any]) -> Any:
    """Preset, then --config keys, then what must agree with the tokenizer (vocabulary, special ids)."""
    from transformers import MarianConfig

    values = {**preset(settings), **{k: v for k, v in overrides.items() if k not in ("model_type", "architectures")}}
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    values.update(
        vocab_size=len(tokenizer),
        decoder_vocab_size=len(tokenizer),
        pad_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        decoder_start_token_id=pad,  # Marian starts decoding from the padding token
    )
    config = MarianConfig(**values)
    for side in ("encoder", "decoder"):
        hidden, heads = config.d_model, getattr(config, f"{side}_attention_heads")
        if hidden % heads:
            raise UsageError(f"the hidden size ({hidden}) must be a multiple of the attention heads ({heads})")
    tokenizer.model_max_length = config.max_position_embeddings
    return config


def new_model(config: Any, settings: PretrainSettings) -> Any:
    """New random weights (seeded by --seed), and the generation settings ``translate`` reads."""
    from transformers import GenerationConfig, MarianMTModel

    from llmtool.models import set_seed

    set_seed(settings.seed)
    model = MarianMTModel(config)
    seq2seq_data.keep_padding_row_zero(model)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        forced_eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=block(settings),  # targets were at most this long in training
        num_beams=1,
    )
    return model


# --------------------------------------------------------------------------- examples and the plan


def build_examples(train: Any, valid: Any | None, tokenizer: Any, settings: PretrainSettings) -> tuple[Any, Any]:
    return _examples(train, tokenizer, settings, "train"), (
        _examples(valid, tokenizer, settings, "valid") if valid is not None else None
    )


def _examples(pairs: Any, tokenizer: Any, s: PretrainSettings, split: str) -> Any:
    import hashlib

    vocabulary = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]
    key = [pairs._fingerprint, vocabulary, "seq2seq", block(s), split]
    return pairs.map(
        seq2seq_data.PairEncoder(tokenizer, block(s)),
        batched=True,
        remove_columns=pairs.column_names,
        num_proc=num_proc(s.num_proc, len(pairs)),
        new_fingerprint=fingerprint(key),
        desc=None,
    )


def training_plan(settings: PretrainSettings, examples: int, valid_examples: int) -> tuple[PretrainSettings, Any]:
    """The settings with the plan's choices filled in (see :mod:`llmtool.training.plan`), and the plan."""
    from llmtool.training.plan import Rules, make_plan

    rules = Rules(
        lr=SIZES[settings.size].lr,
        batch_size=BATCH,
        epochs=SEQ2SEQ_EPOCHS,
        min_steps=SEQ2SEQ_MIN_STEPS,
        max_steps=AUTO_MAX_STEPS[settings.size],
        warmup_ratio=PRETRAIN_WARMUP,
        from_scratch=True,
    )
    layout = f"one pair per example (up to {block(settings)} tokens a side)"
    return make_plan(
        settings, rules, examples=examples, valid_examples=valid_examples, layout=layout, processes=world_size()
    )
