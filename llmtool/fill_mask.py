"""``llmtool fill-mask``: masked-language-model predictions for each ``[MASK]`` in each line.

Faster than ``pipeline("fill-mask")`` on piped input for three reasons, each measured in bench/:
records are batched by similar token length (little padding), the vocabulary projection runs
only at mask positions rather than at every token, and results stream back in input order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmtool.batching import by_length, pad
from llmtool.errors import InputError, UsageError
from llmtool.models import ModelOptions, load, max_input_length
from llmtool.streams import Formatter, Record, as_records, chunked

DEFAULT_MODEL = "bert-base-uncased"
USER_MASK = "[MASK]"  # always accepted, whatever the model's own mask token is


@dataclass
class FillMaskOptions:
    top_k: int = 5  # predictions per mask
    targets: list[str] | None = None  # restrict candidates to these words (each one token)
    batch_size: int = 32  # sequences per forward pass
    skip_invalid: bool = False  # write an error record for a bad line instead of stopping
    window: int = field(default=8)  # batches read ahead and sorted by length together


class MaskFiller:
    """A loaded masked LM that turns records into prediction records."""

    def __init__(self, tokenizer: Any, model: Any, options: FillMaskOptions) -> None:
        import torch

        if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
            raise UsageError(f"{model.name_or_path}: this tokenizer has no mask token; is it a masked LM?")
        if options.top_k < 1:
            raise UsageError("--top-k must be at least 1")
        self.torch = torch
        self.tokenizer = tokenizer
        self.model = model
        self.options = options
        self.device = next(model.parameters()).device
        self.max_length = max_input_length(tokenizer, model)
        self.mask_id: int = tokenizer.mask_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.mask_pattern = re.compile("|".join(re.escape(m) for m in {USER_MASK, tokenizer.mask_token}))
        self.target_ids = self._target_ids(options.targets) if options.targets else None
        self.head = _mlm_head(model)
        # Predictions repeat the same few thousand tokens: decode each id once.
        self._token_text = functools.lru_cache(maxsize=65536)(lambda tid: tokenizer.decode([tid]))

    # ------------------------------------------------------------------ public

    def __call__(self, records: Iterable[Record]) -> Iterator[dict[str, Any]]:
        """Prediction records in input order, streamed a window at a time."""
        window = max(1, self.options.batch_size * self.options.window)
        for chunk in chunked(records, window):
            yield from self._chunk(chunk)

    # ------------------------------------------------------------------ internals

    def _target_ids(self, targets: list[str]) -> list[int]:
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            if target in vocab:
                ids.append(vocab[target])
                continue
            pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
            if len(pieces) != 1:
                split = " ".join(self.tokenizer.convert_ids_to_tokens(pieces)) or "nothing"
                raise UsageError(
                    f"--targets: {target!r} is not one token in this model's vocabulary (it becomes "
                    f"{split}); fill-mask predicts one token per mask"
                )
            ids.append(pieces[0])
        return list(dict.fromkeys(ids))  # unique, in the order given

    def _encode_all(self, chunk: list[Record]) -> list[list[int] | str]:
        """Token ids for each record, or the reason it is invalid.

        One tokenizer call for the whole window: the fast tokenizer's per-call overhead is
        larger than its per-line work on short lines.
        """
        texts = [self.mask_pattern.sub(self.tokenizer.mask_token, r.text) for r in chunk]
        all_ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        return [self._check(text, ids) for text, ids in zip(texts, all_ids, strict=True)]

    def _check(self, text: str, ids: list[int]) -> list[int] | str:
        n_masks = ids.count(self.mask_id)
        if n_masks == 0:
            return f"no {USER_MASK} in this line"
        if len(ids) > self.max_length:
            ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
            if ids.count(self.mask_id) < n_masks:
                return f"a {USER_MASK} falls beyond the model's maximum length of {self.max_length} tokens"
        return ids

    def _chunk(self, chunk: list[Record]) -> Iterator[dict[str, Any]]:
        encoded = self._encode_all(chunk)
        valid = [i for i, e in enumerate(encoded) if isinstance(e, list)]
        results: dict[int, list[list[tuple[int, float]]]] = {}
        size = self.options.batch_size
        for batch in by_length(valid, lambda i: len(encoded[i]), size):
            for i, preds in zip(batch, self._predict([encoded[i] for i in batch]), strict=True):  # type: ignore[misc]
                results[i] = preds
        for i, record in enumerate(chunk):
            reason = encoded[i]
            if isinstance(reason, str):
                if not self.options.skip_invalid:
                    raise InputError(reason, source=record.source, line=record.line)
                yield {"index": record.index, "line": record.line, "input": record.text, "error": reason}
                continue
            yield self._record(record, results[i])

    def _predict(self, batch: list[list[int]]) -> list[list[list[tuple[int, float]]]]:
        """For each sequence, for each mask: the top-k (token id, probability)."""
        torch = self.torch
        inputs = pad([{"input_ids": ids} for ids in batch], self.pad_id, self.device)
        input_ids, attention = inputs["input_ids"], inputs["attention_mask"]
        with torch.inference_mode():
            rows, cols = (input_ids == self.mask_id).nonzero(as_tuple=True)
            if self.head is not None:
                base, head = self.head
                hidden = base(input_ids=input_ids, attention_mask=attention).last_hidden_state
                logits = head(hidden[rows, cols])
            else:
                logits = self.model(input_ids=input_ids, attention_mask=attention).logits[rows, cols]
            logits = logits.float()
            # Probabilities of the top k only: exp(logit - logsumexp), without a vocabulary-sized softmax.
            log_total = logits.logsumexp(dim=-1, keepdim=True)
            if self.target_ids is not None:
                candidates = torch.tensor(self.target_ids, device=logits.device)
                logits = logits[:, candidates]
            k = min(self.options.top_k, logits.shape[-1])
            top, indices = logits.topk(k, dim=-1)
            values = (top - log_total).exp()
            if self.target_ids is not None:
                indices = candidates[indices]
        out: list[list[list[tuple[int, float]]]] = [[] for _ in batch]
        for row, vals, idx in zip(rows.tolist(), values.tolist(), indices.tolist(), strict=True):
            out[row].append(list(zip(idx, vals, strict=True)))
        return out

    def _record(self, record: Record, masks: list[list[tuple[int, float]]]) -> dict[str, Any]:
        decode = self._token_text
        mask_records = [
            {"predictions": [{"token": decode(tid), "token_id": tid, "score": score} for tid, score in preds]}
            for preds in masks
        ]
        tops = iter([m["predictions"][0]["token"].strip() for m in mask_records])
        output = self.mask_pattern.sub(lambda m: next(tops, m.group(0)), record.text)
        return {"index": record.index, "input": record.text, "output": output, "masks": mask_records}


def _mlm_head(model: Any) -> tuple[Any, Any] | None:
    """(encoder, head) for the architectures whose head can run on mask positions alone.

    BERT-family models keep it in ``cls``, RoBERTa-family in ``lm_head``; both take hidden states
    and return vocabulary logits. Others fall back to the full forward pass (slower, same result).
    """
    import torch

    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return base, head
    return None


# ---------------------------------------------------------------------- formats


def _text(result: dict[str, Any]) -> str:
    """The line with each mask replaced by its top prediction; a skipped line passes unchanged."""
    return str(result["input"] if "error" in result else result["output"])


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    if "error" in result:
        yield [result["index"], "", "", "", "", "", result["error"]]
        return
    for m, mask in enumerate(result["masks"]):
        for rank, pred in enumerate(mask["predictions"], start=1):
            yield [result["index"], m, rank, pred["token"], pred["token_id"], f"{pred['score']:.6g}", ""]


FORMATTER = Formatter(
    text=_text,
    tsv_header=("index", "mask", "rank", "token", "token_id", "score", "error"),
    tsv_rows=_tsv_rows,
)


# ---------------------------------------------------------------------- Python API


def fill_mask(
    inputs: str | Iterable[str] | Iterable[Record],
    *,
    model: str = DEFAULT_MODEL,
    options: FillMaskOptions | None = None,
    model_options: ModelOptions | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Predict each mask of each input; yields one plain dict per input, in input order.

    ``kwargs`` are :class:`FillMaskOptions` fields (``top_k=3``, ``targets=[...]``).

    >>> for r in fill_mask(["Paris is the capital of [MASK]."], model="bert-base-uncased"):
    ...     print(r["output"])  # doctest: +SKIP
    """
    from transformers import AutoModelForMaskedLM

    opts = options or FillMaskOptions(**kwargs)
    mopts = model_options or ModelOptions(model=model)
    tokenizer, mlm = load(AutoModelForMaskedLM, mopts)
    return MaskFiller(tokenizer, mlm, opts)(as_records(inputs))
