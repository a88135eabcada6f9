"""``llmtool fill-mask``: masked-language-model predictions for each ``[MASK]`` in each line.

Faster than ``pipeline("fill-mask")`` on piped input for three reasons, each measured in bench/:
records are batched by similar token length (little padding), the vocabulary projection runs
only at mask positions rather than at every token, and results stream back in input order.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from typing import Any

from llmtool.engines import choice as engines
from llmtool.errors import UsageError
from llmtool.io.formats import Formatter
from llmtool.io.inputs import Record, as_records
from llmtool.models import ModelRef, load, max_input_length, set_seed
from llmtool.settings import FillMaskOptions, ModelOptions
from llmtool.tasks.base import BatchedTask, Invalid, locate
from llmtool.tasks.batching import top_k
from llmtool.tasks.registry import command

COMMAND = command("fill-mask")
DEFAULT_MODEL = COMMAND.default_model or ""
USER_MASK = "[MASK]"  # always accepted, whatever the model's own mask token is

MaskPredictions = list[list[tuple[int, float]]]  # for each mask of a line: the top-k (token id, probability)


class MaskFiller(BatchedTask[Record, list[int], MaskPredictions]):
    """A loaded masked LM that turns records into prediction records."""

    def __init__(self, tokenizer: Any, encoder: Any, options: FillMaskOptions, name: str = "") -> None:
        if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
            raise UsageError(f"{name or tokenizer.name_or_path}: this tokenizer has no mask token; is it a masked LM?")
        options.check()
        super().__init__(options.batch_size, options.window, options.skip_invalid)
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.options = options
        self.max_length = max_input_length(tokenizer, encoder)
        self.mask_id: int = tokenizer.mask_token_id
        self.mask_pattern = re.compile("|".join(re.escape(m) for m in {USER_MASK, tokenizer.mask_token}))
        self.target_ids = self._target_ids(options.targets) if options.targets else None
        # Special tokens ([CLS], [SEP], [PAD], <s>, ...) are never predictions unless asked for (or
        # named in --targets).
        self.excluded: list[int] = [] if options.allow_special or self.target_ids else sorted(tokenizer.all_special_ids)
        # A WordPiece continuation ("##京") joins the text before the mask without its marker.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.continuation: str | None = getattr(getattr(backend, "model", None), "continuing_subword_prefix", None)
        self.fill_pattern = re.compile(rf"(\s*)({self.mask_pattern.pattern})")
        # Predictions repeat the same few thousand tokens: decode each id once.
        self._token_text = functools.lru_cache(maxsize=65536)(lambda tid: tokenizer.decode([tid]))

    # ------------------------------------------------------------------ the loop's steps (tasks.base)

    def encode(self, chunk: list[Record]) -> list[list[int] | Invalid]:
        """Token ids for each record, or why it is invalid.

        One tokenizer call for the whole window: the fast tokenizer's per-call overhead is
        larger than its per-line work on short lines.
        """
        texts = [self.mask_pattern.sub(self.tokenizer.mask_token, r.text) for r in chunk]
        all_ids: list[list[int]] = self.tokenizer(texts, add_special_tokens=True)["input_ids"]
        return [self._check(text, ids) for text, ids in zip(texts, all_ids, strict=True)]

    def length(self, encoded: list[int]) -> int:
        return len(encoded)

    def predict(self, batch: list[list[int]]) -> list[MaskPredictions]:
        """For each sequence, for each mask: the top-k (token id, probability)."""
        positions = [(row, col) for row, ids in enumerate(batch) for col, t in enumerate(ids) if t == self.mask_id]
        logits = self.encoder.mlm_logits(batch, positions)
        ids, probs = top_k(logits, self.options.top_k, self.target_ids, self.excluded)
        out: list[MaskPredictions] = [[] for _ in batch]
        for (row, _), idx, vals in zip(positions, ids.tolist(), probs.tolist(), strict=True):
            out[row].append(list(zip(idx, vals, strict=True)))
        return out

    def record(self, record: Record, masks: MaskPredictions) -> dict[str, Any]:
        decode = self._token_text
        mask_records = [
            {"predictions": [{"token": decode(tid), "token_id": tid, "score": score} for tid, score in preds]}
            for preds in masks
        ]
        tops = iter([self._filled(m["predictions"][0]["token"]) for m in mask_records])

        def fill(match: re.Match[str]) -> str:
            word, joined = next(tops, (match.group(2), False))
            return word if joined else match.group(1) + word

        output = self.fill_pattern.sub(fill, record.text)
        return {"index": record.index, "input": record.text, "output": output, "masks": mask_records}

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

    def _check(self, text: str, ids: list[int]) -> list[int] | Invalid:
        n_masks = ids.count(self.mask_id)
        if n_masks == 0:
            return Invalid(f"no {USER_MASK} in this line")
        if len(ids) > self.max_length:
            ids = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
            if ids.count(self.mask_id) < n_masks:
                return Invalid(f"a {USER_MASK} falls beyond the model's maximum length of {self.max_length} tokens")
        return ids

    def _filled(self, token: str) -> tuple[str, bool]:
        """The prediction as it goes into the sentence, and whether it joins the word before it
        (a WordPiece continuation: "##京" -> "京", written without the space before the mask)."""
        prefix = self.continuation
        if prefix and token.startswith(prefix) and len(token) > len(prefix):
            return token[len(prefix) :].strip(), True
        return token.strip(), False


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
    """Predict each mask of each input; yields one plain dict per input, in input order (the records
    ``llmtool fill-mask --json`` prints: the CLI calls this too).

    ``kwargs`` are :class:`FillMaskOptions` fields (``top_k=3``, ``targets=[...]``). The model is
    located and loaded before this returns; predictions stream as the iterator is read.

    >>> for r in fill_mask(["Paris is the capital of [MASK]."], model="bert-base-uncased"):
    ...     print(r["output"])  # doctest: +SKIP
    """
    opts = options or FillMaskOptions(**kwargs)
    opts.check()
    ref = locate(COMMAND.name, model_options or ModelOptions(model=model))
    tokenizer, encoder = engines.open_encoder(ref, "fill-mask", _load_torch(opts.seed))
    return MaskFiller(tokenizer, encoder, opts, ref.name)(as_records(inputs))


def _load_torch(seed: int | None) -> engines.TorchLoader:
    def load_masked_lm(ref: ModelRef) -> engines.LoadedModel:
        from transformers import AutoModelForMaskedLM

        set_seed(seed)
        return load(AutoModelForMaskedLM, ref)

    return load_masked_lm
