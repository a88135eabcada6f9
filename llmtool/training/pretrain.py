"""``llmtool pretrain``: a BERT (masked LM, optionally with next-sentence prediction) or a GPT-2
(causal LM) trained from scratch on a text corpus, tokenizer included; or (``--objective seq2seq``)
a Marian encoder-decoder on parallel text, which :mod:`~llmtool.training.pretrain_seq2seq` trains.

The steps, each checked before the next costs anything:

1. read the corpus files (checked like ``finetune``'s data: :mod:`llmtool.training.data`) into documents
   (a ``.txt`` file: one sentence or line per line, a blank line between documents; a CSV or
   JSONL text column: one document per row), stored as Arrow on disk (:mod:`~llmtool.training.pretrain_data`);
2. train a tokenizer on them (:mod:`llmtool.training.tokenizer_train`), or reuse one (``--tokenizer``);
3. build a model config from a size preset (``--size``) and/or a ``config.json`` (``--config``),
   with new random weights (:mod:`~llmtool.training.pretrain_model`);
4. turn documents into examples: packed blocks, one line each, or BERT's sentence pairs
   (:mod:`~llmtool.training.pretrain_examples`; what the objective adds, and its collator, is its
   recipe: :mod:`llmtool.training.recipes`);
5. train with the shared machinery (:mod:`llmtool.training.trainer`: progress, Ctrl-C checkpoints,
   ``--resume``, atomic output, distributed runs) and save a standard Transformers folder that
   ``fill-mask``, ``generate``, ``next-sentence``, ``finetune`` and ``AutoModel*`` load.

This module runs the steps, plans the run (:func:`training_plan`; the defaults are
:mod:`llmtool.training.defaults`) and records it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from llmtool.io.streams import Console
from llmtool.models import prepare_environment
from llmtool.settings import SIZES, PretrainSettings
from llmtool.training.arguments import world_size
from llmtool.training.callbacks import signals_deferred
from llmtool.training.data import Layout
from llmtool.training.defaults import (
    AUTO_EPOCHS,
    AUTO_MAX_STEPS,
    AUTO_MIN_STEPS,
    BATCH,
    LINES_SAMPLE,
    MAX_LINES_A_BLOCK,
    PRETRAIN_WARMUP,
    SMALL_BLOCK,
)
from llmtool.training.pretrain_data import (
    block,
    choose_layout,
    corpus_layouts,
    corpus_summary,
    corpus_tokenizer,
    load_documents,
    masking,
)
from llmtool.training.pretrain_examples import build_examples, collator
from llmtool.training.pretrain_model import (
    architecture_name,
    build_config,
    check_positions,
    count_parameters,
    new_model,
    read_config,
)
from llmtool.training.pretrain_seq2seq import dry_run_seq2seq, pretrain_seq2seq
from llmtool.training.recipes import language_model
from llmtool.training.trainer import TrainingRun

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
        if settings.objective == "seq2seq":
            overrides = read_config(settings.config, settings.objective) if settings.config else {}
            return pretrain_seq2seq(corpus, output_dir, settings, console, overrides)
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
        run.console.info(corpus_summary(layouts, train_docs, valid_docs))
        settings = choose_layout(settings, train_docs)
        resume_from = run.folder.latest_checkpoint() if settings.resume else None
        tokenizer = run.main_first(lambda: corpus_tokenizer(settings, train_docs, run.cache_dir, resume_from))
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
            collator(settings, tokenizer),
            best_metric="loss",
            derived_metrics=language_model(settings.objective).derived_metrics(),
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
    if settings.objective == "seq2seq":
        overrides = read_config(settings.config, settings.objective) if settings.config else {}
        return dry_run_seq2seq(corpus, settings, overrides)
    layouts = corpus_layouts(corpus, settings)
    overrides = read_config(settings.config, settings.objective) if settings.config else {}
    check_positions(settings, overrides)
    with tempfile.TemporaryDirectory(prefix="llmtool-dry-run-") as cache:
        train_docs, valid_docs = load_documents(layouts, settings, cache)
        settings = choose_layout(settings, train_docs)
        tokenizer = corpus_tokenizer(settings, train_docs, cache, None)
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
    held = f"{docs['train']} training documents ({report['lines']} lines), {docs['valid']} for validation"
    if report["objective"] == "seq2seq":
        held = f"{docs['train']} training pairs, {docs['valid']} for validation"
    lines = [
        f"corpus   {', '.join(report['corpus'])}: {held}",
        f"model    {report['objective']}, size {report['size']}, {report['parameters']:,} parameters, "
        f"vocabulary {report['vocab_size']}, block {report['block_size']} tokens",
        f"plan     {_plan_from_dict(plan).line().removeprefix('plan: ')}",
    ]
    return "\n".join([*lines, *(f"warning  {w}" for w in plan["warnings"])])


def _plan_from_dict(values: dict[str, Any]) -> Any:
    from llmtool.training.plan import Plan

    return Plan(**values)


# --------------------------------------------------------------------------- the plan


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
        warmup_ratio=PRETRAIN_WARMUP,
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
        layout += f", {masking(settings, bool(settings.line_by_line)):.0%} of each masked"
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
