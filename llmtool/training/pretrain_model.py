"""``pretrain``'s new model: a BERT (masked LM, optionally with next-sentence prediction) or a GPT-2
(causal LM), its config from a size preset (``--size``) and/or a ``config.json`` (``--config``),
with new random weights.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmtool.errors import InputError, UsageError
from llmtool.settings import SIZES, PretrainSettings
from llmtool.training.defaults import POSITIONS
from llmtool.training.pretrain_data import block

ARCHITECTURES = {"mlm": "bert", "clm": "gpt2", "seq2seq": "marian"}


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


def parameter_table(vocab_size: int = 8192) -> list[dict[str, Any]]:
    """Parameters of every preset for both architectures, by instantiating them (for the README)."""
    rows = []
    for objective in ("mlm", "clm"):
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
