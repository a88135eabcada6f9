"""``llmtool attention``: the attention weights of one layer for one text (which token looks at which),
as numbers and as a heatmap.

:func:`attention` is the command's one entry (the CLI and the Python API): it locates and loads
the model with llmtool's rules (device, dtype, offline), runs :func:`weights_of` and draws the
picture. :func:`weights_of` takes an already loaded (tokenizer, model) pair; :func:`load` is a
plain loader for a local folder or a hub id. torch and transformers are imported inside the
functions. Attention weights come from the torch engine only (CTranslate2 never exposes them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llmtool.errors import ModelError, UsageError
from llmtool.io.formats import Formatter
from llmtool.settings import AttentionOptions, ModelOptions

if TYPE_CHECKING:
    from llmtool.io.console import Console

EAGER = "eager"  # the only attention implementation that materialises the weights (sdpa and flash fuse them)


def load(folder: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Tokenizer and base model (no task head) from ``folder``, with eager attention, in eval mode."""
    from transformers import AutoModel, AutoTokenizer

    source = os.fspath(folder)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModel.from_pretrained(source, attn_implementation=EAGER)
    except Exception as exc:  # OSError, ValueError, EnvironmentError...: all mean "cannot load this"
        raise ModelError(f"{source}: cannot load the model: {exc}") from exc
    model.eval()
    return tokenizer, model


def weights_of(
    text: str,
    tokenizer: Any,
    model: Any,
    *,
    layer: int | None = None,
    head: int | None = None,
) -> dict[str, Any]:
    """The attention weights of ``layer`` (default: the last) for ``text``.

    Returns ``{"tokens", "layer", "layers", "heads", "head", "attentions"}``: ``attentions`` is
    nested lists shaped (heads, seq, seq), or (seq, seq) when ``head`` is given; row ``i`` holds how
    much token ``i`` attends to each token and sums to 1. Negative ``layer`` and ``head`` count
    from the end, as Python indices do; ``layer`` and ``head`` in the result are the resolved,
    non-negative ones. A model not loaded with eager attention is switched to it, since the
    fused implementations never compute the weights.
    """
    import torch

    if not text.strip():
        raise UsageError("TEXT is empty")
    config = model.config
    layers = _count(config, "num_hidden_layers", "n_layer", "num_layers")
    heads = _count(config, "num_attention_heads", "n_head", "num_heads")
    # Checked before the forward pass where the config gives the counts, and against the weights after it.
    layer_index = -1 if layer is None else layer
    if layers is not None:
        layer_index = _resolve(layer_index, layers, "layer", "--layer")
    if head is not None and heads is not None:
        _resolve(head, heads, "head", "--head")
    _use_eager(model)

    limit = _max_length(tokenizer, config)
    encoded = tokenizer(text, return_tensors="pt", truncation=limit is not None, max_length=limit)
    device = _device(model)
    inputs = {k: v.to(device) for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    # An encoder-decoder (T5, BART) has no attention over the text alone but in its encoder.
    module = model.get_encoder() if getattr(config, "is_encoder_decoder", False) else model
    with torch.inference_mode():
        outputs = module(**inputs, output_attentions=True, return_dict=True)
    found = getattr(outputs, "attentions", None) or getattr(outputs, "encoder_attentions", None)
    if not found or any(item is None for item in found):
        raise ModelError(f"{type(model).__name__} returned no attention weights; it may not support eager attention")
    layer_index = _resolve(layer_index, len(found), "layer", "--layer")
    weights = found[layer_index][0].float().cpu()  # (heads, seq, seq) of the one text
    head_count = int(weights.shape[0])
    head_index = None if head is None else _resolve(head, head_count, "head", "--head")
    if head_index is not None:
        weights = weights[head_index]
    ids = inputs["input_ids"][0].tolist()
    return {
        "tokens": [str(t) for t in tokenizer.convert_ids_to_tokens(ids)],
        "layer": layer_index,
        "layers": len(found),
        "heads": head_count,
        "head": head_index,
        "attentions": weights.tolist(),
    }


def _count(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def _resolve(index: int, count: int, what: str, flag: str) -> int:
    """A Python-style index (negative from the end) checked against ``count``; the non-negative one."""
    if not -count <= index < count:
        raise UsageError(
            f"{flag} {index} is out of range: the model has {count} {what}s, 0 to {count - 1} (or -{count} to -1)"
        )
    return index % count


def _use_eager(model: Any) -> None:
    current = getattr(model.config, "_attn_implementation", None)
    if current in (None, EAGER):
        return
    try:
        model.set_attn_implementation(EAGER)
    except (AttributeError, ValueError) as exc:
        raise ModelError(f"{type(model).__name__} cannot switch to eager attention: {exc}") from exc


def _max_length(tokenizer: Any, config: Any) -> int | None:
    """The longest input the model takes: the position table's size (the tokenizer's own limit may be a sentinel)."""
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(usable) if usable else None


def _device(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"


# ---------------------------------------------------------------------- the command


def attention(
    text: str,
    *,
    model: str = "bert-base-uncased",  # as tasks.registry's default_model
    options: AttentionOptions | None = None,
    model_options: ModelOptions | None = None,
    console: Console | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The attention weights of one layer (one head, or all) for ``text``; with ``options.output``,
    also the heatmap as a PNG there. Returns the record ``llmtool attention --json`` prints:
    ``{"text", "model", "tokens", "layer", "layers", "heads", "head", "attentions", "output"}``.

    ``kwargs`` are :class:`AttentionOptions` fields (``layer=0``, ``head=1``, ``output="a.png"``).
    """
    from llmtool import plots
    from llmtool.models import load as load_located
    from llmtool.tasks.base import locate

    opts = options or AttentionOptions(**kwargs)
    opts.check()
    model_opts = model_options or ModelOptions(model=model)
    if model_opts.engine == "ctranslate2" or model_opts.quantize != "none":
        raise UsageError("attention weights come from the torch engine only; drop --engine ctranslate2 / --quantize")
    if not text.strip():
        raise UsageError("TEXT is empty")
    if opts.output is not None:
        plots.require("drawing attention")  # before the model loads: say at once that the extra is missing
    ref = locate("attention", model_opts)
    from transformers import AutoModel

    tokenizer, loaded = load_located(AutoModel, ref, attn_implementation=EAGER)
    result = weights_of(text, tokenizer, loaded, layer=opts.layer, head=opts.head)
    record: dict[str, Any] = {"text": text, "model": ref.name, **result, "output": opts.output}
    if opts.output is not None:
        plots.attention_map(
            result["tokens"],
            result["attentions"],
            opts.output,
            layer=result["layer"],
            head=result["head"],
            console=console,
        )
    return record


def strongest(record: dict[str, Any]) -> list[tuple[str, str, float]]:
    """For each token: the token it attends to most and that weight (the heads' mean without a head)."""
    import numpy as np

    weights = np.asarray(record["attentions"], dtype=np.float32)
    if weights.ndim == 3:
        weights = weights.mean(axis=0)
    tokens = record["tokens"]
    return [(tokens[i], tokens[int(row.argmax())], float(row.max())) for i, row in enumerate(weights)]


def _text(record: dict[str, Any]) -> str:
    return "\n".join(f"{query}\t{key}\t{weight:.4f}" for query, key, weight in strongest(record))


def _tsv_rows(record: dict[str, Any]) -> Iterator[list[object]]:
    import numpy as np

    weights = np.asarray(record["attentions"], dtype=np.float32)
    heads = [(record["head"], weights)] if weights.ndim == 2 else list(enumerate(weights))
    tokens = record["tokens"]
    for head, matrix in heads:
        for i, row in enumerate(matrix):
            for j, weight in enumerate(row):
                yield [record["layer"], head, i, tokens[i], j, tokens[j], f"{float(weight):.6g}"]


FORMATTER = Formatter(
    text=_text,
    tsv_header=("layer", "head", "query", "query_token", "key", "key_token", "weight"),
    tsv_rows=_tsv_rows,
)
