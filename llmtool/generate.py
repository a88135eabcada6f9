"""``llmtool generate``: text generation with a causal LM, batched over piped prompts.

Sampling draws from a random generator of each output sequence's own, seeded from ``--seed``,
the prompt and the sequence number. So the same seed gives the same text for a prompt whether
it runs alone or inside any batch, which plain ``model.generate`` (one shared generator) cannot.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from llmtool.errors import InputError, UsageError
from llmtool.models import ModelOptions, load, max_input_length
from llmtool.streams import Formatter, Record, as_records, chunked

DEFAULT_MODEL = "gpt2"


@dataclass
class GenerateOptions:
    max_new_tokens: int = 50  # tokens to add after the prompt
    greedy: bool = False  # always take the most likely token (deterministic without a seed)
    temperature: float = 1.0  # <1 sharper, >1 flatter; sampling only
    top_k: int = 50  # sample among the k most likely tokens (0: no limit)
    top_p: float = 1.0  # nucleus sampling: the smallest set with this much probability
    repetition_penalty: float = 1.0  # >1 discourages repeating tokens already present
    num_return_sequences: int = 1  # outputs per prompt
    stop: list[str] = field(default_factory=list)  # cut each output before the first of these
    include_prompt: bool = True  # output prompt + continuation (False: the continuation only)
    seed: int | None = None  # None: a fresh random seed each run
    batch_size: int = 32  # prompts per forward pass (decoding reads all weights per step, whatever the batch)
    chat: bool = False  # wrap each prompt as a user message with the tokenizer's chat template

    def check(self) -> None:
        if self.max_new_tokens < 1:
            raise UsageError("--max-new-tokens must be at least 1")
        if self.num_return_sequences < 1:
            raise UsageError("--num-return-sequences must be at least 1")
        if self.temperature <= 0:
            raise UsageError("--temperature must be above 0 (use --greedy for deterministic output)")
        if not 0 < self.top_p <= 1:
            raise UsageError("--top-p must be in (0, 1]")
        if self.top_k < 0:
            raise UsageError("--top-k must be 0 (no limit) or more")
        if self.repetition_penalty <= 0:
            raise UsageError("--repetition-penalty must be above 0")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if any(not s for s in self.stop):
            raise UsageError("--stop must not be empty")


def row_seed(seed: int, prompt: str, sequence: int) -> int:
    """The seed of one output sequence: a function of the run's seed, its prompt and its number."""
    digest = hashlib.blake2b(f"{seed}\x00{sequence}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class Generator:
    """A loaded causal LM that turns prompt records into generation records."""

    def __init__(self, tokenizer: Any, model: Any, options: GenerateOptions) -> None:
        import torch

        options.check()
        self.torch = torch
        self.tokenizer = tokenizer
        self.model = model
        self.options = options
        self.device = next(model.parameters()).device
        self.seed = options.seed if options.seed is not None else secrets.randbits(63)
        self.max_length = max_input_length(tokenizer, model)
        tokenizer.padding_side = "left"  # new tokens must follow each prompt directly
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise UsageError(f"{model.name_or_path}: the tokenizer has neither a pad nor an EOS token")
            tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has no pad token; masked out anyway
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if options.chat and not getattr(tokenizer, "chat_template", None):
            raise UsageError(f"{model.name_or_path}: the tokenizer has no chat template; drop --chat")

    def __call__(self, records: Iterable[Record], stream_to: IO[str] | None = None) -> Iterator[dict[str, Any]]:
        """Generation records in input order. With ``stream_to``, each prompt runs alone and its
        text is written there token by token as it is produced."""
        if stream_to is not None:
            for record in records:
                yield from self._batch([record], stream_to)
            return
        size = self.options.batch_size
        for chunk in chunked(records, size * 4):
            # Prompts of similar length share a batch (less padding); output keeps input order.
            order = sorted(range(len(chunk)), key=lambda i: len(chunk[i].text))
            done: dict[int, dict[str, Any]] = {}
            for start in range(0, len(order), size):
                batch = [chunk[i] for i in order[start : start + size]]
                for i, result in zip(order[start : start + size], self._batch(batch), strict=True):
                    done[i] = result
            for i in range(len(chunk)):
                yield done[i]

    # ------------------------------------------------------------------ internals

    def _prompt(self, text: str) -> str:
        if not self.options.chat:
            return text
        rendered: str = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return rendered

    def _batch(self, batch: list[Record], stream_to: IO[str] | None = None) -> list[dict[str, Any]]:
        torch = self.torch
        opts = self.options
        n = opts.num_return_sequences
        prompts = [self._prompt(r.text) for r in batch]
        encoded = self.tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=not opts.chat)
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        for record, length in zip(batch, lengths, strict=True):
            if length + opts.max_new_tokens > self.max_length:
                raise InputError(
                    f"the prompt is {length} tokens; with --max-new-tokens {opts.max_new_tokens} that is more "
                    f"than the model's context of {self.max_length} tokens",
                    source=record.source,
                    line=record.line,
                )
        input_ids = encoded["input_ids"].repeat_interleave(n, dim=0).to(self.device)
        attention = encoded["attention_mask"].repeat_interleave(n, dim=0).to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": opts.max_new_tokens,
            "do_sample": False,  # sampling, when asked, happens in _RowSampler with per-row generators
            "num_beams": 1,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if opts.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = opts.repetition_penalty
        if opts.stop:
            from transformers import StoppingCriteriaList

            stopper = _stop_on_strings(self.tokenizer, opts.stop, input_ids.shape[1])
            kwargs["stopping_criteria"] = StoppingCriteriaList([stopper])
        if not opts.greedy:
            from transformers import LogitsProcessorList

            seeds = [row_seed(self.seed, r.text, j) for r in batch for j in range(n)]
            kwargs["logits_processor"] = LogitsProcessorList([_row_sampler(seeds, opts, self.device)])
        if stream_to is not None:
            kwargs["streamer"] = _StopAwareStreamer(self.tokenizer, stream_to, opts.stop)
        with torch.inference_mode():
            output = self.model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new_tokens = output[:, input_ids.shape[1] :].tolist()
        results = []
        for b, record in enumerate(batch):
            generations = [self._finish(new_tokens[b * n + j]) for j in range(n)]
            if opts.include_prompt and not opts.chat:
                for g in generations:
                    g["text"] = record.text + g["text"]
            results.append({"index": record.index, "input": record.text, "generations": generations})
            if stream_to is not None:
                results[-1]["streamed"] = True
        return results

    def _finish(self, tokens: list[int]) -> dict[str, Any]:
        """Decoded continuation, cut at EOS or the first stop string, and why it ended."""
        reason = "length"
        for pos, token in enumerate(tokens):
            if token in self.eos_ids:
                tokens, reason = tokens[:pos], "eos"
                break
        text: str = self.tokenizer.decode(tokens, skip_special_tokens=True)
        cut = _first_stop(text, self.options.stop)
        if cut is not None:
            text, reason = text[:cut], "stop"
        return {"text": text, "finish_reason": reason, "new_tokens": len(tokens)}


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _row_sampler(seeds: list[int], opts: GenerateOptions, device: Any) -> Any:
    """A logits processor that samples each row with its own generator.

    It applies the standard Transformers warpers (temperature, top-k, top-p), draws one token per
    row, and returns scores where that token alone is finite, so greedy selection takes it.
    """
    import torch
    from transformers import (
        LogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    warpers: list[Callable[[Any, Any], Any]] = []
    if opts.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(opts.temperature))
    if opts.top_k:
        warpers.append(TopKLogitsWarper(top_k=opts.top_k))
    if opts.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=opts.top_p))
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            for warp in warpers:
                scores = warp(input_ids, scores)
            probs = scores.float().softmax(dim=-1)
            chosen = torch.stack(
                [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
            )
            picked = torch.full_like(scores, float("-inf"))
            picked.scatter_(1, chosen, 0.0)
            return picked  # type: ignore[return-value]

    return RowSampler()


def _stop_on_strings(tokenizer: Any, stops: list[str], prompt_length: int) -> Any:
    """Stop a row once its continuation (never the prompt) contains a stop string.

    Transformers' own ``stop_strings`` also matches across the prompt/continuation boundary,
    which would end generation without any stop string in the output.
    """
    import torch
    from transformers import StoppingCriteria

    # A stop string of c characters lies within the last c + 1 tokens when it ends in the last one.
    window = max(len(s) for s in stops) + 1

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
            tails = input_ids[:, prompt_length:][:, -window:].tolist()
            done = [any(s in tokenizer.decode(t, skip_special_tokens=True) for s in stops) for t in tails]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]

    return StopOnStrings()


class _StopAwareStreamer:
    """Writes generated text as it comes, holding back what could be the start of a stop string."""

    def __init__(self, tokenizer: Any, out: IO[str], stops: list[str]) -> None:
        self.tokenizer, self.out, self.stops = tokenizer, out, stops
        self.tokens: list[int] = []
        self.written = 0
        self.prompt_seen = False
        self.stopped = False
        self.hold = max((len(s) for s in stops), default=1) - 1

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # the first call carries the prompt
            self.prompt_seen = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        self._flush(final=False)

    def end(self) -> None:
        self._flush(final=True)

    def _flush(self, final: bool) -> None:
        if self.stopped:
            return
        text: str = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        cut = _first_stop(text, self.stops)
        if cut is not None:
            limit, self.stopped = cut, True
        elif final:
            limit = len(text)
        else:
            limit = len(text) - self.hold
            if text.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the rest
                limit = min(limit, len(text) - 1)
        if limit > self.written:
            self.out.write(text[self.written : limit])
            self.out.flush()
            self.written = limit


# ---------------------------------------------------------------------- formats


def _text(result: dict[str, Any]) -> str:
    """Each generation as is, followed by a newline; after streaming, only the newline."""
    if result.get("streamed"):
        return ""
    return "\n".join(g["text"] for g in result["generations"])


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    for j, g in enumerate(result["generations"]):
        yield [result["index"], j, g["finish_reason"], g["new_tokens"], g["text"]]


FORMATTER = Formatter(
    text=_text,
    tsv_header=("index", "sequence", "finish_reason", "new_tokens", "text"),
    tsv_rows=_tsv_rows,
)


# ---------------------------------------------------------------------- Python API


def generate(
    inputs: str | Iterable[str] | Iterable[Record],
    *,
    model: str = DEFAULT_MODEL,
    options: GenerateOptions | None = None,
    model_options: ModelOptions | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Generate from each prompt; yields one plain dict per prompt, in input order.

    ``kwargs`` are :class:`GenerateOptions` fields (``max_new_tokens=20``, ``greedy=True``).
    """
    from transformers import AutoModelForCausalLM

    opts = options or GenerateOptions(**kwargs)
    opts.check()
    mopts = model_options or ModelOptions(model=model)
    tokenizer, lm = load(AutoModelForCausalLM, mopts)
    return Generator(tokenizer, lm, opts)(as_records(inputs))
