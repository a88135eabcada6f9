"""The encoder-decoder core of ``llmtool translate`` and ``llmtool summarize``: sources in, generations out.

One :class:`Seq2Seq` runs either command on either engine (:class:`~llmtool.engines.base.Seq2SeqEngine`).
What it does besides calling the engine: the generation settings resolved once (flag, else the
model's generation_config.json, else the model's ``task_specific_params`` for the task, else
llmtool's ``SEQ2SEQ_DEFAULTS``), the task prefix (T5's ``summarize: ``), language codes (a forced
first target token for mBART/NLLB/M2M100, ``>>code<<`` before the source for multilingual Marian),
inputs longer than the model takes truncated with a message, batching by length, streaming, and the
records :mod:`llmtool.tasks.generate` writes (its formatter too).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterable, Iterator
from typing import IO, Any

from llmtool.engines import choice as engines
from llmtool.engines.base import Seq2SeqEngine, Tokenizer
from llmtool.errors import UsageError
from llmtool.io.console import say
from llmtool.io.inputs import Record, chunked
from llmtool.models import ModelRef, max_input_length
from llmtool.settings import SEQ2SEQ_DEFAULTS, ModelOptions, Seq2SeqOptions, TranslateOptions
from llmtool.tasks.base import locate
from llmtool.tasks.generate import row_seed

# Language-code tokens as multilingual vocabularies spell them: mBART-50 (en_XX), NLLB (eng_Latn), M2M100 (__en__).
LANGUAGE_CODE = re.compile(r"^(?:[a-z]{2,3}_[A-Z]{2}|[a-z]{3}_[A-Z][a-z]{3}|__[a-z]{2,3}__)$")
# What generation_config.json (and task_specific_params) call the settings llmtool resolves.
MODEL_NAMES = {
    "max_new_tokens": "max_new_tokens",
    "num_beams": "num_beams",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "length_penalty": "length_penalty",
    "no_repeat_ngram_size": "no_repeat_ngram_size",
}
SAMPLING_FIELDS = ("temperature", "top_k", "top_p")
# The most source tokens in one batch, padding included (rows x the longest): a batch of short sentences
# holds --batch-size of them, one of long documents fewer, so that memory stays bounded (measured in
# docs/commands/translate.md: larger batches of sentences decode several times faster on CTranslate2).
BATCH_TOKENS = 8192


@dataclasses.dataclass(frozen=True)
class Search:
    """The generation settings a run uses, every one resolved."""

    max_new_tokens: int
    greedy: bool
    num_beams: int
    temperature: float
    top_k: int
    top_p: float
    length_penalty: float
    no_repeat_ngram_size: int


def resolve(options: Seq2SeqOptions, model: dict[str, Any] | None) -> Search:
    """A flag wins, then the model's settings (``model``: generation_config.json with the task's
    task_specific_params over it), then llmtool's. A sampling flag without --greedy means sampling."""
    config = model or {}
    values: dict[str, Any] = {}
    for name, key in MODEL_NAMES.items():
        given = getattr(options, name)
        if given is None:
            given = config.get(key)
        if given is None and name == "max_new_tokens" and isinstance(config.get("max_length"), int):
            given = config["max_length"]  # a seq2seq model's max_length counts target tokens only
        values[name] = given if given is not None else SEQ2SEQ_DEFAULTS[name]
    if options.greedy is not None:
        greedy = options.greedy
    elif any(getattr(options, name) is not None for name in SAMPLING_FIELDS):
        greedy = False
    elif isinstance(config.get("do_sample"), bool):
        greedy = not config["do_sample"]
    else:
        greedy = bool(SEQ2SEQ_DEFAULTS["greedy"])
    beams = int(values["num_beams"]) if greedy else 1
    if options.num_beams is not None and options.num_beams > 1 and not greedy:
        raise UsageError("--beams above 1 is a search: drop --sample, or use --beams 1")
    return Search(
        max_new_tokens=int(values["max_new_tokens"]),
        greedy=greedy,
        num_beams=max(1, beams),
        temperature=float(values["temperature"]),
        top_k=int(values["top_k"]),
        top_p=float(values["top_p"]),
        length_penalty=float(values["length_penalty"]),
        no_repeat_ngram_size=int(values["no_repeat_ngram_size"]),
    )


def task_params(config: dict[str, Any] | None, task: str, options: Seq2SeqOptions) -> dict[str, Any]:
    """The model's ``task_specific_params`` entry for this run: ``summarization``, or for translate
    ``translation_<source>_to_<target>`` (the only translation entry when no languages are given)."""
    params = (config or {}).get("task_specific_params") or {}
    if not isinstance(params, dict):
        return {}
    if task == "summarize":
        found = params.get("summarization")
        return dict(found) if isinstance(found, dict) else {}
    keys = [k for k in params if str(k).startswith("translation_")]
    if isinstance(options, TranslateOptions) and (options.source_lang or options.target_lang):
        wanted = f"translation_{options.source_lang or ''}_to_{options.target_lang or ''}"
        for key in keys:
            if key.lower() == wanted.lower() or (
                not (options.source_lang and options.target_lang) and _matches(key, options)
            ):
                return dict(params[key])
        return {}
    return dict(params[keys[0]]) if len(keys) == 1 else {}


def _matches(key: str, options: TranslateOptions) -> bool:
    source, _, target = key.removeprefix("translation_").partition("_to_")
    return (options.source_lang or source).lower() == source.lower() and (
        options.target_lang or target
    ).lower() == target.lower()


class Seq2Seq:
    """An encoder-decoder (any engine) that turns source records into generation records."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        engine: Seq2SeqEngine,
        options: Seq2SeqOptions,
        task: str,
        name: str = "",
        config: dict[str, Any] | None = None,
        generation_config: dict[str, Any] | None = None,
    ) -> None:
        options.check()
        self.tokenizer, self.engine, self.options, self.task, self.name = tokenizer, engine, options, task, name
        own = dict(generation_config or {})
        params = task_params(config, task, options)
        model = {**own, **{k: v for k, v in params.items() if k != "prefix"}}
        self.search = resolve(options, model)
        if self.search.num_beams > 1 and options.num_return_sequences > self.search.num_beams:
            raise UsageError(
                f"--num-return-sequences {options.num_return_sequences} is more than the {self.search.num_beams} beams"
            )
        self.seed = options.seed if options.seed is not None else secrets.randbits(63)
        self.prefix_text = options.prefix if options.prefix is not None else str(params.get("prefix") or "")
        self.vocab = tokenizer.get_vocab()
        eos = own.get("eos_token_id", (config or {}).get("eos_token_id"))
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.suppress = [ids[0] for ids in own.get("bad_words_ids") or [] if isinstance(ids, list) and len(ids) == 1]
        self.source_code: int | None = None
        self.marian_code = ""
        self.forced: list[int] = []
        forced_bos = own.get("forced_bos_token_id", (config or {}).get("forced_bos_token_id"))
        if isinstance(forced_bos, int):
            self.forced = [forced_bos]
        if isinstance(options, TranslateOptions):
            self._languages(options, params)
        self._cap_new_tokens(config or {})
        limit = options.max_length or max_input_length(tokenizer, engine)
        self.max_length = limit
        self.limit_source = "--max-length" if options.max_length else "the model's limit"

    def _cap_new_tokens(self, config: dict[str, Any]) -> None:
        """A decoder with learned positions (BART, Marian...) writes at most its position table's length,
        the start token and forced prefix included: the budget is capped there (OPUS-MT's
        generation_config says max_length 512, its table holds 512); a flag asking for more is an error."""
        positions = config.get("max_position_embeddings") if config.get("model_type") not in ("t5", "mt5") else None
        if not isinstance(positions, int) or positions <= 0:
            return
        room = positions - 1 - len(self.forced)
        if self.search.max_new_tokens <= room:
            return
        if self.options.max_new_tokens is not None:
            raise UsageError(
                f"--max-new-tokens {self.options.max_new_tokens}: {self.name} writes at most {room} tokens "
                f"(its {positions} positions)"
            )
        self.search = dataclasses.replace(self.search, max_new_tokens=room)

    def _languages(self, options: TranslateOptions, params: dict[str, Any]) -> None:
        """Language codes: the target's as the forced first token (or Marian's ``>>code<<`` before the
        source), the source's in place of the tokenizer's own code (or first)."""
        target, source = options.target_lang, options.source_lang
        if target is not None:
            marian = f">>{target}<<"
            if marian in self.vocab:
                self.marian_code = marian + " "
            elif self._code(target) is not None:
                self.forced = [self._code(target) or 0]
            elif not params and not self.prefix_text:
                self._unknown("--target-lang", target)
        if source is not None:
            self.source_code = self._code(source)
            if self.source_code is None and not params and not self.prefix_text:
                self._unknown("--source-lang", source)

    def _unknown(self, flag: str, language: str) -> None:
        """A language the model has no code for: an error when it has codes for others, else said once
        (a one-pair model, e.g. OPUS-MT en-fr, translates into its one language)."""
        codes = [t for t in self.vocab if LANGUAGE_CODE.match(t) or (t.startswith(">>") and t.endswith("<<"))]
        if codes:
            shown = ", ".join(sorted(codes)[:6]) + (", ..." if len(codes) > 6 else "")
            raise UsageError(f"{self.name}: {flag} {language!r} is not one of the model's language codes ({shown})")
        say(f"{flag} {language}: {self.name} has no language codes; it translates the one pair it was trained on")

    def _code(self, language: str) -> int | None:
        for token in (language, f"__{language}__"):
            if token in self.vocab and (LANGUAGE_CODE.match(token) or (token == language and "_" in token)):
                return self.vocab[token]
        return None

    # ------------------------------------------------------------------ running

    def __call__(self, records: Iterable[Record], stream_to: IO[str] | None = None) -> Iterator[dict[str, Any]]:
        """Generation records in input order; with ``stream_to``, each input runs alone and its text is
        written there as it is produced."""
        if stream_to is not None:
            for record in records:
                yield from self._batch([record], stream_to)
            return
        size = self.options.batch_size
        for chunk in chunked(records, size * 4):
            sources = self.encode(chunk)
            order = sorted(range(len(chunk)), key=lambda i: len(sources[i]))
            done: dict[int, dict[str, Any]] = {}
            for group in token_batches(order, [len(s) for s in sources], size, BATCH_TOKENS):
                batch = [chunk[i] for i in group]
                for i, result in zip(group, self._batch(batch, sources=[sources[i] for i in group]), strict=True):
                    done[i] = result
            for i in range(len(chunk)):
                yield done[i]

    def encode(self, records: list[Record]) -> list[list[int]]:
        """Source token ids: prefix and language code, truncated to the model's limit with a message."""
        texts = [self.marian_code + self.prefix_text + r.text for r in records]
        ids: list[list[int]] = [list(row) for row in self.tokenizer(texts)["input_ids"]]
        out = []
        for record, text, row in zip(records, texts, ids, strict=True):
            row = self._with_source_code(row)
            if len(row) > self.max_length:
                where = f"{record.source}:{record.line}" if record.line else record.source
                say(
                    f"{where}: the input is {len(row)} tokens; only its first {self.max_length} are read "
                    f"({self.limit_source})"
                )
                cut = self.tokenizer(text, truncation=True, max_length=self.max_length)["input_ids"]
                row = self._with_source_code(list(cut))[: self.max_length]
            out.append(row)
        return out

    def _with_source_code(self, row: list[int]) -> list[int]:
        if self.source_code is None:
            return row
        tokens = self.tokenizer.convert_ids_to_tokens(row[:1] + row[-1:])
        first, last = (tokens[0], tokens[-1]) if isinstance(tokens, list) and tokens else ("", "")
        if row and LANGUAGE_CODE.match(str(first)):
            return [self.source_code, *row[1:]]
        if row and LANGUAGE_CODE.match(str(last)):
            return [*row[:-1], self.source_code]
        return [self.source_code, *row]

    def _batch(
        self, batch: list[Record], stream_to: IO[str] | None = None, sources: list[list[int]] | None = None
    ) -> list[dict[str, Any]]:
        how, n = self.search, self.options.num_return_sequences
        sources = self.encode(batch) if sources is None else sources
        streamer = _Streamer(self.tokenizer, stream_to) if stream_to is not None else None
        outputs = self.engine.generate(
            sources,
            max_new_tokens=how.max_new_tokens,
            greedy=how.greedy,
            num_beams=how.num_beams,
            temperature=how.temperature,
            top_k=how.top_k,
            top_p=how.top_p,
            length_penalty=how.length_penalty,
            no_repeat_ngram_size=how.no_repeat_ngram_size,
            num_return_sequences=n,
            seed=None if how.greedy else self.seed,
            row_seeds=None if how.greedy else [row_seed(self.seed, r.text, j) for r in batch for j in range(n)],
            eos_ids=self.eos_ids,
            prefix=self.forced,
            suppress=self.suppress,
            on_token=streamer,
        )
        results = []
        for b, record in enumerate(batch):
            generations = [self._finish(outputs[b * n + j]) for j in range(n)]
            results.append({"index": record.index, "input": record.text, "generations": generations})
            if streamer is not None:
                streamer.end(generations[0]["text"])
                results[-1]["streamed"] = True
        return results

    def _finish(self, tokens: list[int]) -> dict[str, Any]:
        """The decoded target (forced prefix and EOS left out), and why it ended."""
        tokens = tokens[len(self.forced) :]
        reason = "length"
        for pos, token in enumerate(tokens):
            if token in self.eos_ids:
                tokens, reason = tokens[:pos], "eos"
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return {"text": str(text), "finish_reason": reason, "new_tokens": len(tokens)}


class _Streamer:
    """Writes the first sequence's text as its tokens come (holding back a partial multi-byte character)."""

    def __init__(self, tokenizer: Tokenizer, out: IO[str]) -> None:
        self.tokenizer, self.out = tokenizer, out
        self.tokens: list[int] = []
        self.written = 0

    def __call__(self, sequence: int, token: int) -> bool:
        if sequence == 0:
            self.tokens.append(token)
            text = str(self.tokenizer.decode(self.tokens, skip_special_tokens=True))
            limit = len(text) - 1 if text.endswith("\ufffd") else len(text)
            self._write(text, limit)
        return False

    def end(self, final: str) -> None:
        if not final.startswith(str(self.tokenizer.decode(self.tokens, skip_special_tokens=True))[: self.written]):
            self.written = 0  # beam search: nothing was streamed that the result does not start with
        self._write(final, len(final))

    def _write(self, text: str, limit: int) -> None:
        if limit > self.written:
            self.out.write(text[self.written : limit])
            self.out.flush()
            self.written = limit


def should_stream(options: Seq2SeqOptions, one_input: bool, text_output: bool, to_terminal: bool) -> bool:
    """Streaming, unless asked either way: one input, text output, one sequence, to a terminal."""
    if options.stream is not None:
        if options.stream and not text_output:
            raise UsageError("--stream needs --format text and one sequence per input")
        return options.stream
    return text_output and one_input and options.num_return_sequences == 1 and to_terminal


# ---------------------------------------------------------------------- opening a model


def open_model(
    command: str, task: str, options: Seq2SeqOptions, model_options: ModelOptions
) -> tuple[Seq2Seq, ModelRef]:
    """The command's model located (and its kind checked), its engine opened, and the runner."""
    ref = locate(command, model_options)
    require_sentencepiece(ref)
    tokenizer, engine = engines.open_seq2seq(ref, task, load_torch)
    own = engines.generation_config_of(ref)
    if own is None:
        own = engine.generation_config
    config = engines.config_of(ref)
    if config is None:
        config = getattr(engine.config, "to_dict", lambda: {})()
    return Seq2Seq(tokenizer, engine, options, task, ref.name, config, own), ref


def require_sentencepiece(ref: ModelRef) -> None:
    """Marian (OPUS-MT) tokenizers are sentencepiece models read by the sentencepiece package, an extra."""
    if ref.folder is None or not (ref.folder / "source.spm").is_file():
        return
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        raise UsageError(
            f"{ref.name} has a sentencepiece tokenizer (source.spm): pip install 'llmtool[translate]'"
        ) from None


def load_torch(ref: ModelRef) -> tuple[Any, Any]:
    """An ``AutoModelForSeq2SeqLM`` and its tokenizer, with the loading rules of every command."""
    import warnings

    from transformers import AutoModelForSeq2SeqLM

    from llmtool.models import load

    with warnings.catch_warnings():  # MarianTokenizer recommends sacremoses on every load
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        return load(AutoModelForSeq2SeqLM, ref)


def token_batches(order: list[int], lengths: list[int], size: int, tokens: int) -> Iterator[list[int]]:
    """Consecutive groups of ``order`` (indices sorted by length) of at most ``size`` items whose count
    times their longest length stays within ``tokens`` (a group has at least one item)."""
    group: list[int] = []
    longest = 0
    for i in order:
        length = max(lengths[i], longest)
        if group and (len(group) >= size or (len(group) + 1) * length > tokens):
            yield group
            group, length = [], lengths[i]
        group.append(i)
        longest = length
    if group:
        yield group
