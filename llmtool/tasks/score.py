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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from llmtool.engines import choice as engines
from llmtool.errors import ModelError, UsageError
from llmtool.io.formats import Formatter
from llmtool.io.inputs import Record, as_records
from llmtool.kinds import ENCODER_DECODER, model_kind
from llmtool.metrics import perplexity, total_record
from llmtool.models import (
    MissingHeadError,
    ModelRef,
    architecture,
    ensure_pad_token,
    load,
    max_input_length,
    supports_task,
)
from llmtool.settings import ModelOptions, ScoreOptions
from llmtool.tasks.base import BatchedTask, Invalid, locate
from llmtool.tasks.batching import by_length
from llmtool.tasks.registry import command

Objective = Literal["clm", "mlm"]
COMMAND = command("score")
DEFAULT_MODEL = COMMAND.default_model or ""


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


def check_language_model(ref: ModelRef) -> tuple[Any, Objective]:
    """The config and objective, checked before any weights load."""
    config = engines.model_config(ref)
    objective = lm_objective(config)
    if objective is None:
        raise ModelError(f"{ref.name} ({architecture(config)}) is not a causal or masked language model")
    return config, objective


def language_model_loader(objective: Objective) -> engines.TorchLoader:
    """Loads the tokenizer and LM for the torch engine; a checkpoint without its LM head is refused."""

    def load_language_model(ref: ModelRef) -> engines.LoadedModel:
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        auto = AutoModelForCausalLM if objective == "clm" else AutoModelForMaskedLM
        try:
            tokenizer, model = load(auto, ref, require_head="language-model head")
        except MissingHeadError as exc:
            raise ModelError(f"{exc}; score needs a causal or masked LM with its head (not a bare encoder)") from None
        ensure_pad_token(tokenizer, ref.name)
        return tokenizer, model

    return load_language_model


def open_scorer(model_options: ModelOptions, options: ScoreOptions) -> Scorer:
    """Locate the model, tell its objective, and load it (on the engine :mod:`llmtool.engines.choice` chooses)."""
    ref = locate(COMMAND.name, model_options)
    if ENCODER_DECODER in model_kind(ref.folder).kinds:
        from llmtool.tasks.score_seq2seq import open_seq2seq_scorer

        return open_seq2seq_scorer(ref, options)  # type: ignore[return-value]  # the same records
    _, objective = check_language_model(ref)
    return load_scorer(ref, objective, options)


def load_scorer(ref: ModelRef, objective: Objective, options: ScoreOptions) -> Scorer:
    """A Scorer over the located model, whose objective is known."""
    loader = language_model_loader(objective)
    lm: engines.EncoderEngine | engines.DecoderEngine
    if objective == "clm":
        tokenizer, lm = engines.open_decoder(ref, "score-clm", loader)
    else:
        tokenizer, lm = engines.open_encoder(ref, "score-mlm", loader)
    return Scorer(tokenizer, lm, objective, options, ref.name)


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


@dataclass(frozen=True, slots=True)
class Encoded:
    """A text's token ids and the windows that score them."""

    ids: list[int]
    windows: list[Window]


Sums = tuple[float, int]  # a text's log-likelihood, and how many tokens it sums


class Scorer(BatchedTask[Record, Encoded, Sums]):
    """A loaded causal or masked LM that turns text records into likelihood records."""

    def __init__(self, tokenizer: Any, lm: Any, objective: Objective, options: ScoreOptions, name: str = "") -> None:
        options.check()
        super().__init__(options.batch_size, options.window, options.skip_invalid)
        self.tokenizer = tokenizer
        self.lm = lm  # a decoder engine (clm) or an encoder engine (mlm): see llmtool.engines.torch_engine
        self.objective = objective
        self.options = options
        limit = max_input_length(tokenizer, lm)
        self.max_length = min(options.max_length or limit, limit)
        self.prefix: list[int] = []
        self.suffix: list[int] = []
        if objective == "mlm":
            if tokenizer.mask_token_id is None:
                raise ModelError(f"{name}: the tokenizer has no mask token; is it a masked LM?")
            self.prefix, self.suffix = _special_frame(tokenizer)
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
        yield from super().__call__(records)
        if self.options.total:
            yield self.total()

    def total(self) -> dict[str, Any]:
        return total_record(self.lines, self.tokens, self.log_likelihood)

    # ------------------------------------------------------------------ internals

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return [self.bos_id, *ids] if self.bos_id is not None else ids

    # ------------------------------------------------------------------ the loop's steps (tasks.base)

    def encode(self, chunk: list[Record]) -> list[Encoded | Invalid]:
        first = 1 if self.objective == "clm" else 0
        out: list[Encoded | Invalid] = []
        for slot, record in enumerate(chunk):
            ids = self._ids(record.text)
            pieces = windows(len(ids), self.span, self.stride, first, slot)
            if not pieces:
                reason = "nothing to score: one token, and --no-bos leaves the first token without context"
                if self.objective == "mlm":
                    reason = "nothing to score: the text has no tokens"
                out.append(Invalid(reason))
            else:
                out.append(Encoded(ids, pieces))
        return out

    def predict_all(self, encoded: dict[int, Encoded]) -> dict[int, Sums]:
        """Every window of the chunk's texts, in batches of similar length; summed per text."""
        token_ids = {slot: e.ids for slot, e in encoded.items()}
        pieces = [w for e in encoded.values() for w in e.windows]
        sums = dict.fromkeys(encoded, 0.0)
        counts = dict.fromkeys(encoded, 0)
        score = self._causal if self.objective == "clm" else self._masked
        for slot, value, count in score(token_ids, pieces):
            sums[slot] += value
            counts[slot] += count
        return {slot: (sums[slot], counts[slot]) for slot in encoded}

    def record(self, record: Record, result: Sums) -> dict[str, Any]:
        log_likelihood, tokens = result
        self.lines += 1
        self.tokens += tokens
        self.log_likelihood += log_likelihood
        return {
            "index": record.index,
            "input": record.text,
            "tokens": tokens,
            "log_likelihood": log_likelihood,
            "perplexity": perplexity(log_likelihood, tokens),
        }

    # ------------------------------------------------------------------ internals

    def _causal(self, token_ids: dict[int, list[int]], pieces: list[Window]) -> Iterator[tuple[int, float, int]]:
        """(slot, summed log-probability, tokens scored) per window."""
        for batch in by_length(pieces, lambda w: w.end - w.start, self.options.batch_size):
            rows = [token_ids[w.slot][w.start : w.end] for w in batch]
            logprobs = self.lm.token_logprobs(rows, [w.first - w.start for w in batch])
            for w, values in zip(batch, logprobs, strict=True):
                yield w.slot, float(values.astype("float64").sum()), w.end - w.first

    def _masked(self, token_ids: dict[int, list[int]], pieces: list[Window]) -> Iterator[tuple[int, float, int]]:
        """Pseudo-log-likelihood: one copy of the window per scored token, with that token masked."""
        import numpy as np

        mask_id = self.tokenizer.mask_token_id
        copies = [(w, t) for w in pieces for t in range(w.first, w.end)]
        for batch in by_length(copies, lambda c: c[0].end - c[0].start, self.options.batch_size):
            rows: list[list[int]] = []
            positions: list[tuple[int, int]] = []
            targets: list[int] = []
            for w, t in batch:
                text = token_ids[w.slot]
                row = [*self.prefix, *text[w.start : w.end], *self.suffix]
                pos = len(self.prefix) + t - w.start
                targets.append(row[pos])
                row[pos] = mask_id
                positions.append((len(rows), pos))
                rows.append(row)
            logits = self.lm.mlm_logits(rows, positions)
            peak = logits.max(axis=-1, keepdims=True)
            log_total = peak[:, 0] + np.log(np.exp(logits - peak).sum(axis=-1))
            picked = logits[np.arange(len(batch)), targets] - log_total
            for (w, _), value in zip(batch, picked.astype("float64").tolist(), strict=True):
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
    """Score each input; yields one dict per input in order (then a total with ``total=True``): the
    records ``llmtool score --json`` prints (the CLI calls this too).

    ``kwargs`` are :class:`ScoreOptions` fields (``stride=256``, ``total=True``).

    >>> for r in score(["The cat sat on the mat."], model="gpt2"):
    ...     print(r["perplexity"])  # doctest: +SKIP
    """
    opts = options or ScoreOptions(**kwargs)
    opts.check()
    return open_scorer(model_options or ModelOptions(model=model), opts)(as_records(inputs))
