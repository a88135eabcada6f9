"""``llmtool score``: how likely each line is under a language model.

Causal LMs (GPT-2, ...): the log-likelihood of the line's tokens, each predicted from the ones
before it. With a BOS token (GPT-2's ``<|endoftext|>``) in front, every token of the line is
scored, the first one included; without one (``--no-bos``), the first token is context only.

Masked LMs (BERT, RoBERTa, ...): the pseudo-log-likelihood of Salazar et al. (2020): each token
is masked in turn and scored given all the others. Perplexity is then pseudo-perplexity; the
numbers are comparable between texts under one model, not with a causal LM's.

Texts longer than the model's context are scored in overlapping windows (the standard Hugging
Face perplexity recipe). Windows start every ``stride`` tokens and hold up to ``max_length``
tokens; each token is scored exactly once, in the first window that reaches it, so every token
but those of the first window has at least ``max_length - stride`` tokens of left context. A
smaller stride gives more context per token and costs more forward passes.

Perplexity is ``exp(-log_likelihood / tokens)``; the ``--total`` record pools all lines by
token count (sum of log-likelihoods over sum of tokens), the corpus perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from llmtool.batching import by_length, pad
from llmtool.errors import InputError, ModelError, UsageError
from llmtool.models import (
    MissingHeadError,
    ModelOptions,
    architecture,
    load,
    load_config,
    max_input_length,
    supports_task,
)
from llmtool.streams import Formatter, Record, as_records, chunked

Objective = Literal["clm", "mlm"]
DEFAULT_MODEL = "gpt2"


@dataclass
class ScoreOptions:
    batch_size: int = 8  # sequences per forward pass (masked LMs: one per scored token)
    max_length: int | None = None  # window size in tokens (None: the model's context)
    stride: int | None = None  # tokens between window starts (None: half the window)
    bos: bool = True  # causal LMs: put BOS first so the first token is scored too
    total: bool = False  # end with a record that pools all lines
    skip_invalid: bool = False  # write an error record for a line with nothing to score
    window: int = 4  # batches read ahead and sorted by length together

    def check(self) -> None:
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.max_length is not None and self.max_length < 2:
            raise UsageError("--max-length must be at least 2")
        if self.stride is not None and self.stride < 1:
            raise UsageError("--stride must be at least 1")
        if self.stride is not None and self.max_length is not None and self.stride >= self.max_length:
            raise UsageError(f"--stride must be below the window (--max-length {self.max_length})")


# --------------------------------------------------------------------------- which kind of LM


def lm_objective(config: Any) -> Objective | None:
    """``clm`` or ``mlm`` from the class that saved the checkpoint, else from the model type.

    A recorded class that is neither (BertModel, ...ForSequenceClassification) means no LM head.
    """
    recorded = getattr(config, "architectures", None) or []
    for name in recorded:
        if name.endswith(("ForCausalLM", "LMHeadModel")):
            return "clm"
        if name.endswith(("ForMaskedLM", "ForPreTraining")):
            return "mlm"
    if recorded:
        return None
    masked = supports_task(config, "MODEL_FOR_MASKED_LM_MAPPING_NAMES")
    causal = supports_task(config, "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES")
    if causal and (getattr(config, "is_decoder", False) or not masked):
        return "clm"
    return "mlm" if masked else None


def check_language_model(opts: ModelOptions, where: str | None = None) -> tuple[Any, Objective]:
    """The config and objective, checked before any weights load."""
    config = load_config(opts, where)
    objective = lm_objective(config)
    if objective is None:
        raise ModelError(f"{opts.model} ({architecture(config)}) is not a causal or masked language model")
    return config, objective


def load_language_model(opts: ModelOptions, where: str | None = None) -> tuple[Any, Any, Objective]:
    """Tokenizer, model and objective; a checkpoint without its language-model head is refused."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    _, objective = check_language_model(opts, where)
    auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
    try:
        tokenizer, model = load(auto, opts, where, require_head="language-model head")
    except MissingHeadError as exc:
        raise ModelError(f"{exc}; score needs a causal or masked LM with its head (not a bare encoder)") from None
    return tokenizer, model, objective


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class Window:
    """One forward pass's worth of a text: token positions [start, end), scoring [first, end)."""

    slot: int  # which text of the chunk
    start: int
    end: int
    first: int


def windows(n: int, max_length: int, stride: int, first: int, slot: int = 0) -> list[Window]:
    """The HF recipe's windows over ``n`` tokens; token t >= ``first`` lies in exactly one scored range.

    Causal LMs pass ``first=1`` (token 0 has no context); masked LMs ``first=0``.
    """
    out: list[Window] = []
    prev_end = 0
    for start in range(0, n, stride):
        end = min(start + max_length, n)
        lo = max(prev_end, start + first)
        if lo < end:
            out.append(Window(slot, start, end, lo))
        prev_end = end
        if end == n:
            break
    return out


# --------------------------------------------------------------------------- scorer


class Scorer:
    """A loaded causal or masked LM that turns text records into likelihood records."""

    def __init__(self, tokenizer: Any, model: Any, objective: Objective, options: ScoreOptions) -> None:
        import torch

        options.check()
        self.torch = torch
        self.tokenizer = tokenizer
        self.model = model
        self.objective = objective
        self.options = options
        self.device = next(model.parameters()).device
        limit = max_input_length(tokenizer, model)
        self.max_length = min(options.max_length or limit, limit)
        self.pad_id: int = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        self.prefix: list[int] = []
        self.suffix: list[int] = []
        if objective == "mlm":
            if tokenizer.mask_token_id is None:
                raise ModelError(f"{model.name_or_path}: the tokenizer has no mask token; is it a masked LM?")
            self.prefix, self.suffix = _special_frame(tokenizer)
            from llmtool.fill_mask import _mlm_head

            self.head = _mlm_head(model)
        span = self.max_length - len(self.prefix) - len(self.suffix)  # tokens of text per window
        if span < 2:
            raise UsageError(f"--max-length {self.max_length} leaves no room for text in a window")
        self.span = span
        self.stride = options.stride if options.stride is not None else max(1, span // 2)
        if self.stride >= span and objective == "clm":
            # A window's first token has no context inside that window: with no overlap it would
            # go unscored. (Masked LMs see both sides, so any stride up to the window works.)
            raise UsageError(f"--stride must be below the window of {span} tokens (try {span // 2})")
        if self.stride > span:
            raise UsageError(f"--stride must be at most the window of {span} tokens")
        self.bos_id: int | None = None
        if objective == "clm" and options.bos:
            self.bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        # Running totals, for --total and for `evaluate`.
        self.lines = 0
        self.tokens = 0
        self.log_likelihood = 0.0

    def __call__(self, records: Iterable[Record]) -> Iterator[dict[str, Any]]:
        """One record per input line in input order; then the pooled record if ``total`` is set."""
        chunk_size = max(1, self.options.batch_size * self.options.window)
        for chunk in chunked(records, chunk_size):
            yield from self._chunk(chunk)
        if self.options.total:
            yield self.total()

    def total(self) -> dict[str, Any]:
        return {
            "total": True,
            "lines": self.lines,
            "tokens": self.tokens,
            "log_likelihood": self.log_likelihood,
            "perplexity": perplexity(self.log_likelihood, self.tokens),
        }

    # ------------------------------------------------------------------ internals

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [self.bos_id, *ids] if self.bos_id is not None else ids

    def _chunk(self, chunk: list[Record]) -> Iterator[dict[str, Any]]:
        token_ids = [self._ids(r.text) for r in chunk]
        first = 1 if self.objective == "clm" else 0
        pieces = [
            w for slot, ids in enumerate(token_ids) for w in windows(len(ids), self.span, self.stride, first, slot)
        ]
        sums = [0.0] * len(chunk)
        counts = [0] * len(chunk)
        score = self._causal if self.objective == "clm" else self._masked
        for slot, value, count in score(token_ids, pieces):
            sums[slot] += value
            counts[slot] += count
        for slot, record in enumerate(chunk):
            if counts[slot] == 0:
                reason = "nothing to score: one token, and --no-bos leaves the first token without context"
                if self.objective == "mlm":
                    reason = "nothing to score: the text has no tokens"
                if not self.options.skip_invalid:
                    raise InputError(reason, source=record.source, line=record.line)
                yield {"index": record.index, "line": record.line, "input": record.text, "error": reason}
                continue
            self.lines += 1
            self.tokens += counts[slot]
            self.log_likelihood += sums[slot]
            yield {
                "index": record.index,
                "input": record.text,
                "tokens": counts[slot],
                "log_likelihood": sums[slot],
                "perplexity": perplexity(sums[slot], counts[slot]),
            }

    def _pad(self, rows: list[list[int]]) -> tuple[Any, Any]:
        inputs = pad([{"input_ids": row} for row in rows], self.pad_id, self.device)
        return inputs["input_ids"], inputs["attention_mask"]

    def _causal(self, token_ids: list[list[int]], pieces: list[Window]) -> Iterator[tuple[int, float, int]]:
        """(slot, summed log-probability, tokens scored) per window."""
        torch = self.torch
        for batch in by_length(pieces, lambda w: w.end - w.start, self.options.batch_size):
            ids, attention = self._pad([token_ids[w.slot][w.start : w.end] for w in batch])
            # Only the positions whose next token is scored go through the softmax.
            predict = torch.zeros_like(ids, dtype=torch.bool)
            for row, w in enumerate(batch):
                predict[row, w.first - w.start - 1 : w.end - w.start - 1] = True
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=attention).logits
                rows, cols = predict.nonzero(as_tuple=True)
                logprobs = logits[rows, cols].float().log_softmax(dim=-1)
                picked = logprobs.gather(1, ids[rows, cols + 1].unsqueeze(1)).squeeze(1)
            per_row = torch.zeros(len(batch), dtype=torch.float64, device=picked.device)
            per_row.index_add_(0, rows, picked.double())
            for row, w in enumerate(batch):
                yield w.slot, float(per_row[row]), w.end - w.first

    def _masked(self, token_ids: list[list[int]], pieces: list[Window]) -> Iterator[tuple[int, float, int]]:
        """Pseudo-log-likelihood: one copy of the window per scored token, with that token masked."""
        torch = self.torch
        mask_id = self.tokenizer.mask_token_id
        copies = [(w, t) for w in pieces for t in range(w.first, w.end)]
        for batch in by_length(copies, lambda c: c[0].end - c[0].start, self.options.batch_size):
            rows_in: list[list[int]] = []
            positions: list[int] = []
            targets: list[int] = []
            for w, t in batch:
                text = token_ids[w.slot]
                row = [*self.prefix, *text[w.start : w.end], *self.suffix]
                pos = len(self.prefix) + t - w.start
                targets.append(row[pos])
                row[pos] = mask_id
                rows_in.append(row)
                positions.append(pos)
            ids, attention = self._pad(rows_in)
            index = torch.arange(len(batch), device=ids.device)
            where = torch.tensor(positions, device=ids.device)
            with torch.inference_mode():
                if self.head is not None:
                    base, head = self.head
                    hidden = base(input_ids=ids, attention_mask=attention).last_hidden_state
                    logits = head(hidden[index, where])
                else:
                    logits = self.model(input_ids=ids, attention_mask=attention).logits[index, where]
                logprobs = logits.float().log_softmax(dim=-1)
                picked = logprobs.gather(1, torch.tensor(targets, device=ids.device).unsqueeze(1)).squeeze(1)
            for (w, _), value in zip(batch, picked.double().tolist(), strict=True):
                yield w.slot, value, 1


def _special_frame(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens a masked LM's tokenizer puts before and after a text ([CLS] ... [SEP])."""
    probe = "a"
    plain: list[int] = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full: list[int] = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for at in range(len(full) - len(plain) + 1):
        if full[at : at + len(plain)] == plain:
            return full[:at], full[at + len(plain) :]
    return [], []


def perplexity(log_likelihood: float, tokens: int) -> float | None:
    if tokens == 0:
        return None
    try:
        return math.exp(-log_likelihood / tokens)
    except OverflowError:
        return math.inf


# --------------------------------------------------------------------------- formats


def _number(value: float | None, digits: int = 4) -> str:
    return "nan" if value is None else f"{value:.{digits}f}"


def _text(result: dict[str, Any]) -> str:
    """``perplexity<TAB>log_likelihood<TAB>tokens<TAB>text``; the --total line ends in ``total`` (as wc's)."""
    if "error" in result:
        return f"nan\tnan\t0\t{result['input']}"
    last = "total" if result.get("total") else result["input"]
    return f"{_number(result['perplexity'])}\t{_number(result['log_likelihood'])}\t{result['tokens']}\t{last}"


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    if "error" in result:
        yield [result["index"], 0, "", "", result["error"]]
        return
    index = "total" if result.get("total") else result["index"]
    ppl = result["perplexity"]
    yield [index, result["tokens"], f"{result['log_likelihood']:.6f}", "nan" if ppl is None else f"{ppl:.6g}", ""]


FORMATTER = Formatter(
    text=_text,
    tsv_header=("index", "tokens", "log_likelihood", "perplexity", "error"),
    tsv_rows=_tsv_rows,
)


# --------------------------------------------------------------------------- Python API


def score(
    inputs: str | Iterable[str] | Iterable[Record],
    *,
    model: str = DEFAULT_MODEL,
    options: ScoreOptions | None = None,
    model_options: ModelOptions | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Score each input; yields one dict per input in order (then a total with ``total=True``).

    ``kwargs`` are :class:`ScoreOptions` fields (``stride=256``, ``total=True``).

    >>> for r in score(["The cat sat on the mat."], model="gpt2"):
    ...     print(r["perplexity"])  # doctest: +SKIP
    """
    opts = options or ScoreOptions(**kwargs)
    opts.check()
    tokenizer, lm, objective = load_language_model(model_options or ModelOptions(model=model))
    return Scorer(tokenizer, lm, objective, opts)(as_records(inputs))
