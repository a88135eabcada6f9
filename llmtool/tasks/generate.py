"""``llmtool generate``: text generation with a causal LM, batched over piped prompts.

Sampling draws from a random generator of each output sequence's own, seeded from ``--seed``,
the prompt and the sequence number. So the same seed gives the same text for a prompt whether
it runs alone or inside any batch, which plain ``model.generate`` (one shared generator) cannot.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Iterable, Iterator
from typing import IO, Any

from llmtool.engines import choice as engines
from llmtool.errors import InputError, UsageError
from llmtool.io.formats import Formatter
from llmtool.io.inputs import Record, as_records, chunked
from llmtool.models import ModelRef, ensure_pad_token, load, max_input_length, set_seed
from llmtool.settings import GENERATION_DEFAULTS, GenerateOptions, ModelOptions
from llmtool.tasks.base import locate
from llmtool.tasks.registry import command

COMMAND = command("generate")
DEFAULT_MODEL = COMMAND.default_model or ""


def row_seed(seed: int, prompt: str, sequence: int) -> int:
    """The seed of one output sequence: a function of the run's seed, its prompt and its number."""
    digest = hashlib.blake2b(f"{seed}\x00{sequence}\x00{prompt}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def should_stream(options: GenerateOptions, one_prompt: bool, text_output: bool, to_terminal: bool) -> bool:
    """Streaming, unless asked either way: one prompt, text output, one sequence, to a terminal."""
    if options.stream is not None:
        if options.stream and not text_output:
            raise UsageError("--stream needs --format text and one sequence per prompt")
        return options.stream
    return text_output and one_prompt and options.num_return_sequences == 1 and to_terminal


SAMPLING_FIELDS = ("temperature", "top_k", "top_p")


@dataclasses.dataclass(frozen=True)
class Sampling:
    """The generation settings a run uses, every one resolved: flag, else the model's
    generation_config.json, else llmtool's default (``GENERATION_DEFAULTS``)."""

    max_new_tokens: int
    greedy: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    eos_token_id: int | list[int] | None = None  # None: the model's config.json / the tokenizer's
    pad_token_id: int | None = None


def resolve(options: GenerateOptions, model_config: dict[str, Any] | None) -> Sampling:
    """One rule for both engines: a value given in ``options`` wins, then the model's
    generation_config.json (``model_config``), then llmtool's own default. A sampling flag
    (temperature, top-k, top-p) given without --greedy also means sampling, whatever the model's
    do_sample says."""
    config = model_config or {}
    values: dict[str, Any] = {}
    for name in ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty"):
        given = getattr(options, name)
        from_model = config.get(name)
        if given is None:
            given = from_model if from_model is not None else GENERATION_DEFAULTS[name]
        values[name] = given
    if options.greedy is not None:
        greedy = options.greedy
    elif any(getattr(options, name) is not None for name in SAMPLING_FIELDS):
        greedy = False
    elif isinstance(config.get("do_sample"), bool):
        greedy = not config["do_sample"]
    else:
        greedy = GENERATION_DEFAULTS["greedy"]
    if float(values["temperature"]) <= 0:  # a model's temperature 0 means greedy decoding
        greedy = True
    return Sampling(
        max_new_tokens=int(values["max_new_tokens"]),
        greedy=greedy,
        temperature=float(values["temperature"]),
        top_k=int(values["top_k"]),
        top_p=float(values["top_p"]),
        repetition_penalty=float(values["repetition_penalty"]),
        eos_token_id=config.get("eos_token_id"),
        pad_token_id=config.get("pad_token_id") if isinstance(config.get("pad_token_id"), int) else None,
    )


def _budget_source(options: GenerateOptions, model_config: dict[str, Any] | None, tokens: int) -> str:
    """Where the new-token budget came from, for the prompt-too-long message."""
    if options.max_new_tokens is not None:
        return f"--max-new-tokens {tokens}"
    if (model_config or {}).get("max_new_tokens") is not None:
        return f"max_new_tokens {tokens} from the model's generation_config.json (--max-new-tokens overrides it)"
    return f"the default --max-new-tokens {tokens}"


class Generator:
    """A causal LM (any engine) that turns prompt records into generation records.

    ``generation_config``: the model's generation_config.json (a dict); its values apply where
    ``options`` leaves a field None (see :func:`resolve`)."""

    def __init__(
        self,
        tokenizer: Any,
        decoder: Any,
        options: GenerateOptions,
        name: str = "",
        generation_config: dict[str, Any] | None = None,
    ) -> None:
        options.check()
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.options = options
        self.sampling = resolve(options, generation_config)
        self.budget = _budget_source(options, generation_config, self.sampling.max_new_tokens)
        self.seed = options.seed if options.seed is not None else secrets.randbits(63)
        self.max_length = max_input_length(tokenizer, decoder)
        if tokenizer.pad_token_id is None and self.sampling.pad_token_id is not None:
            tokenizer.pad_token = tokenizer.convert_ids_to_tokens(self.sampling.pad_token_id)
        ensure_pad_token(tokenizer, name)
        eos = self.sampling.eos_token_id
        if eos is None:
            eos = getattr(decoder, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if options.chat and not getattr(tokenizer, "chat_template", None):
            raise UsageError(f"{name}: the tokenizer has no chat template; drop --chat")

    def __call__(self, records: Iterable[Record], stream_to: IO[str] | None = None) -> Iterator[dict[str, Any]]:
        """Generation records in input order. With ``stream_to``, each prompt runs alone and its
        text is written there token by token as it is produced (after the prompt, as typed, unless
        the output holds only the continuation or comes from a chat template)."""
        if stream_to is not None:
            for record in records:
                if self.options.include_prompt and not self.options.chat:
                    stream_to.write(record.text)
                    stream_to.flush()
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
        opts, how = self.options, self.sampling
        n = opts.num_return_sequences
        prompts = [self._prompt(r.text) for r in batch]
        ids: list[list[int]] = self.tokenizer(prompts, add_special_tokens=not opts.chat)["input_ids"]
        for record, prompt_ids in zip(batch, ids, strict=True):
            if len(prompt_ids) + how.max_new_tokens > self.max_length:
                raise InputError(
                    f"the prompt is {len(prompt_ids)} tokens; with {self.budget} that is more than the model's "
                    f"context of {self.max_length} tokens",
                    source=record.source,
                    line=record.line,
                )
        watcher = _Watcher(self.tokenizer, len(batch) * n, opts.stop, stream_to)
        new_tokens = self.decoder.generate(
            ids,
            max_new_tokens=how.max_new_tokens,
            greedy=how.greedy,
            temperature=how.temperature,
            top_k=how.top_k,
            top_p=how.top_p,
            repetition_penalty=how.repetition_penalty,
            num_return_sequences=n,
            seed=None if how.greedy else self.seed,
            row_seeds=None if how.greedy else [row_seed(self.seed, r.text, j) for r in batch for j in range(n)],
            eos_ids=self.eos_ids,
            on_token=watcher if watcher.needed else None,
        )
        watcher.end()
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


class _Watcher:
    """Sees each new token of each sequence as it is made: stops a sequence once its continuation
    (never the prompt) holds a stop string, and writes a streamed sequence's text as it comes,
    holding back what could be the start of a stop string or of a multi-byte character.

    (Transformers' own ``stop_strings`` also matches across the prompt/continuation boundary, which
    would end generation without any stop string in the output.)"""

    def __init__(self, tokenizer: Any, sequences: int, stops: list[str], out: IO[str] | None) -> None:
        self.tokenizer, self.stops, self.out = tokenizer, stops, out
        self.tokens: list[list[int]] = [[] for _ in range(sequences)]
        self.needed = bool(stops) or out is not None
        # A stop string of c characters lies within the last c + 1 tokens when it ends in the last one.
        self.window = max((len(s) for s in stops), default=0) + 1
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.written = 0
        self.stopped = False

    def __call__(self, sequence: int, token: int) -> bool:
        tokens = self.tokens[sequence]
        tokens.append(token)
        if self.out is not None and sequence == 0:
            self._flush(final=False)
        if not self.stops:
            return False
        tail = self.tokenizer.decode(tokens[-self.window :], skip_special_tokens=True)
        return any(s in tail for s in self.stops)

    def end(self) -> None:
        if self.out is not None:
            self._flush(final=True)

    def _flush(self, final: bool) -> None:
        assert self.out is not None
        if self.stopped:
            return
        text: str = self.tokenizer.decode(self.tokens[0], skip_special_tokens=True)
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
    stream_to: IO[str] | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Generate from each prompt; yields one plain dict per prompt, in input order (the records
    ``llmtool generate --json`` prints: the CLI calls this too).

    ``kwargs`` are :class:`GenerateOptions` fields (``max_new_tokens=20``, ``greedy=True``).
    ``stream_to``: write each prompt and its text there as it is produced (one prompt at a time).
    """
    opts = options or GenerateOptions(**kwargs)
    opts.check()
    ref = locate(COMMAND.name, model_options or ModelOptions(model=model))
    tokenizer, decoder = engines.open_decoder(ref, "generate", _load_torch(opts.seed))
    own = engines.generation_config_of(ref)
    if own is None:  # not on disk before loading (downloaded by the torch engine): what the engine read
        own = getattr(decoder, "generation_config", None)
    return Generator(tokenizer, decoder, opts, ref.name, own)(as_records(inputs), stream_to=stream_to)


def _load_torch(seed: int | None) -> engines.TorchLoader:
    def load_causal_lm(ref: ModelRef) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM

        set_seed(seed)
        return load(AutoModelForCausalLM, ref)

    return load_causal_lm
