"""``llmtool tag``: label the tokens of each line with a token classifier (named entities, parts of
speech...), grouped into entities with character offsets into the line.

Each line is tokenized with the tokenizer's own Rust backend (the fast tokenizer of either engine),
which gives each token's characters in the original line, so offsets are right for lower-cased,
accented and Chinese text alike (a Chinese character model: one token per character). A line longer
than the model's window (``--max-length``, default the model's limit) is cut into windows that share
``--stride`` tokens, exactly as Transformers' pipeline does with ``stride``; entities are merged
across windows, and nothing is truncated. The engine gives each window's per-token logits
(:meth:`~llmtool.engines.base.EncoderEngine.token_logits`); entities are made from them here in numpy
(:mod:`llmtool.tasks.tag_entities`), so both engines give the same records.

Records: ``{"index", "input", "entities": [{"text", "label", "start", "end", "score"}]}`` per line,
``text == input[start:end]``. Formats: text with inline marks (``the capital is [Paris](LOC) .``),
JSON Lines, TSV (one row per entity), and CoNLL columns (``word tag`` in IOB2, a blank line after
each input) for conlleval-style tools.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from llmtool.engines import choice as engines
from llmtool.errors import ModelError, UsageError
from llmtool.io.formats import Formatter
from llmtool.io.inputs import Record, as_records
from llmtool.models import MissingHeadError, ModelRef, ensure_pad_token, load, max_input_length
from llmtool.settings import ModelOptions, TagOptions
from llmtool.tasks.base import BatchedTask, Invalid, locate
from llmtool.tasks.batching import by_length
from llmtool.tasks.registry import command
from llmtool.tasks.tag_entities import Entity, Window, entities_of, word_tags

if TYPE_CHECKING:
    import tokenizers

    from llmtool.engines.base import EncoderEngine, FloatArray, Tokenizer

COMMAND = command("tag")
HEAD = COMMAND.head


# --------------------------------------------------------------------------- model


def load_tagger(ref: ModelRef) -> engines.LoadedModel:
    """Tokenizer and token classifier for the torch engine; a checkpoint without a trained head is refused."""
    from transformers import AutoModelForTokenClassification

    try:
        tokenizer, model = load(AutoModelForTokenClassification, ref, require_head=HEAD)
    except MissingHeadError as exc:
        raise ModelError(f"{exc}; train one with `llmtool finetune --task tag`") from None
    ensure_pad_token(tokenizer, ref.name)
    return tokenizer, model


def backend_of(tokenizer: Tokenizer, name: str) -> tokenizers.Tokenizer:
    """A private copy of the tokenizer's Rust backend (its truncation is set here, not on the shared one)."""
    import tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(f"the tokenizer of {name} is not a fast tokenizer; tag needs character offsets")
    copy = tokenizers.Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    copy.no_truncation()
    return copy


Tagged = tuple[list[Window], list["FloatArray"]]  # a line's windows and their per-token logits


class Tagger(BatchedTask[Record, list[Window], Tagged]):
    """A token classifier (any engine) that turns lines into entity records."""

    def __init__(self, tokenizer: Tokenizer, encoder: EncoderEngine, options: TagOptions, name: str = "") -> None:
        options.check()
        super().__init__(options.batch_size, options.window, options.skip_invalid)
        self.encoder = encoder
        self.options = options
        config = encoder.config
        self.id2label: dict[int, str] = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
        if not self.id2label:
            raise ModelError(f"{name or 'the model'} names no labels (id2label in its config.json)")
        self.with_types = int(getattr(config, "type_vocab_size", 1) or 1) > 1
        self.backend = backend_of(tokenizer, name)
        self.words_backend = backend_of(tokenizer, name)  # no truncation: a whole line's words
        self.unk_id: int | None = getattr(tokenizer, "unk_token_id", None)
        self.continuation_marks = bool(getattr(self.backend.model, "continuing_subword_prefix", None))
        self.max_length = options.max_length or max_input_length(tokenizer, encoder)
        added = self.backend.num_special_tokens_to_add(False)
        room = self.max_length - added
        if room < 1:
            raise UsageError(f"--max-length {self.max_length} leaves no room beside the {added} special tokens")
        self.stride = options.stride if options.stride is not None else room // 4
        if self.stride >= room:
            raise UsageError(
                f"--stride {self.stride} must be below the {room} tokens a window of {self.max_length} holds "
                f"beside its {added} special tokens"
            )
        self.backend.enable_truncation(self.max_length, stride=self.stride, strategy="longest_first")

    # ------------------------------------------------------------------ the loop's steps (tasks.base)

    def encode(self, chunk: list[Record]) -> list[list[Window] | Invalid]:
        """Each line's windows (one when it fits)."""
        encodings = self.backend.encode_batch([r.text for r in chunk])
        return [[_window(e) for e in [encoding, *encoding.overflowing]] for encoding in encodings]

    def length(self, encoded: list[Window]) -> int:
        return max(len(w.ids) for w in encoded)

    def predict_all(self, encoded: dict[int, list[Window]]) -> dict[int, Tagged]:
        """Every window of the chunk's lines, batched by length; the logits regrouped per line."""
        flat = [(i, w) for i in encoded for w in encoded[i]]
        logits: dict[int, FloatArray] = {}
        for batch in by_length(list(range(len(flat))), lambda n: len(flat[n][1].ids), self.batch_size):
            rows = [self._row(flat[n][1]) for n in batch]
            for n, result in zip(batch, self.encoder.token_logits(rows), strict=True):
                if result.shape[-1] != len(self.id2label):
                    raise ModelError(
                        f"the model gives {result.shape[-1]} outputs per token but names {len(self.id2label)} labels"
                    )
                logits[n] = result
        out: dict[int, Tagged] = {i: (encoded[i], []) for i in encoded}
        for n, (i, _) in enumerate(flat):
            out[i][1].append(logits[n])
        return out

    def record(self, item: Record, result: Tagged) -> dict[str, Any]:
        windows, logits = result
        entities = entities_of(
            item.text,
            windows,
            logits,
            self.options.aggregation,
            self.id2label,
            ignore=self.options.ignore_labels,
            continuation_marks=self.continuation_marks,
            unk_id=self.unk_id,
        )
        return {"index": item.index, "input": item.text, "entities": entities}

    def words(self, text: str) -> list[tuple[int, int]]:
        """The line's words, as (start, end) characters: the tokenizer's pre-tokenization (a Chinese
        character model: each character), spanning their tokens' offsets."""
        encoding = self.words_backend.encode(text, add_special_tokens=False)
        spans: dict[int, tuple[int, int]] = {}
        for word, (start, end) in zip(encoding.word_ids, encoding.offsets, strict=True):
            if word is None or end <= start:
                continue
            first, last = spans.get(word, (start, end))
            spans[word] = (min(first, start), max(last, end))
        return [spans[w] for w in sorted(spans)]

    def _row(self, window: Window) -> dict[str, list[int]]:
        row = {"input_ids": window.ids}
        if self.with_types:
            row["token_type_ids"] = window.type_ids
        return row


def _window(encoding: tokenizers.Encoding) -> Window:
    offsets = [(int(a), int(b)) for a, b in encoding.offsets]
    return Window(
        list(encoding.ids), list(encoding.tokens), offsets, list(encoding.special_tokens_mask), list(encoding.type_ids)
    )


def open_tagger(model_options: ModelOptions, options: TagOptions) -> Tagger:
    """Locate and load a token classifier (on the engine :mod:`llmtool.engines.choice` chooses)."""
    options.check()
    ref = locate(COMMAND.name, model_options)
    tokenizer, encoder = engines.open_encoder(ref, "tag", load_tagger)
    return Tagger(tokenizer, encoder, options, ref.name)


# --------------------------------------------------------------------------- formats


def marked(text: str, entities: list[Entity]) -> str:
    """The line with each entity marked inline: ``the capital is [Paris](LOC) .``."""
    out, at = [], 0
    for e in sorted(entities, key=lambda e: e["start"]):
        if e["start"] < at:  # overlaps the entity before it (windows): the first one stays marked
            continue
        out += [text[at : e["start"]], f"[{text[e['start'] : e['end']]}]({e['label']})"]
        at = e["end"]
    out.append(text[at:])
    return "".join(out)


def _text(result: dict[str, Any]) -> str:
    if "error" in result:
        return ""
    return marked(result["input"], result["entities"])


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    if "error" in result:
        yield [result["index"], "", "", "", "", "", result["error"]]
        return
    for e in result["entities"]:
        yield [result["index"], e["start"], e["end"], e["label"], f"{e['score']:.6g}", e["text"], ""]


def _conll(result: dict[str, Any]) -> str:
    """``word<SPACE>tag`` per word (IOB2), then a blank line: CoNLL columns for conlleval-style tools."""
    if "error" in result:
        return ""
    words = result["words"]
    tags = word_tags(words, result["entities"])
    return "".join(f"{result['input'][s:e]} {tag}\n" for (s, e), tag in zip(words, tags, strict=True))


FORMATTER = Formatter(
    text=_text, tsv_header=("index", "start", "end", "label", "score", "text", "error"), tsv_rows=_tsv_rows
)
CONLL = Formatter(text=_conll, tsv_header=FORMATTER.tsv_header, tsv_rows=_tsv_rows)


# --------------------------------------------------------------------------- Python API


def tag(
    inputs: str | Iterable[str] | Iterable[Record],
    *,
    model: str = "",
    options: TagOptions | None = None,
    model_options: ModelOptions | None = None,
    with_words: bool = False,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Tag each input line; yields ``{"index", "input", "entities"}`` per line, in order (the records
    ``llmtool tag --json`` prints). ``with_words``: each record also has ``words``, the line's words as
    ``[start, end]`` characters (for CoNLL columns). ``kwargs`` are :class:`TagOptions` fields.

    >>> for r in tag(["Paris is in France"], model="./ner-model"):
    ...     print([(e["text"], e["label"]) for e in r["entities"]])  # doctest: +SKIP
    """
    opts = options or TagOptions(**kwargs)
    tagger = open_tagger(model_options or ModelOptions(model=model), opts)
    for item, record in tagger.results(as_records(inputs)):
        if with_words:
            record = {**record, "words": tagger.words(item.text)}
        yield record
