"""``llmtool qa``: extractive question answering, the answer a span of the context.

What Transformers 4.x's question-answering pipeline did (Transformers 5 removed it), the same for
both engines, with the post-processing in numpy:

- each (question, context) pair is tokenized as ``question [SEP] context`` in windows of
  ``max_length`` tokens; a long context is cut into several windows that share ``doc_stride``
  tokens, so an answer in the second window is found (the pipeline's defaults: 384 and 128);
- per window, the start and end logits of every token that is not context (the question, the
  special tokens, padding) are set to -10000, the CLS token kept; both are softmaxed over the
  window; the null score is P(start=CLS) x P(end=CLS), then CLS is zeroed;
- a span's score is P(start) x P(end), over start <= end < start + ``max_answer_length``; the
  ``top_k`` best of each window are gathered, widened to whole words (as the pipeline's
  ``align_to_words``), and the best over all windows kept (a span found in two overlapping windows
  counts once, at its best score: the pipeline listed it twice);
- with ``no_answer`` (the pipeline's ``handle_impossible_answer``), the smallest null score over
  the windows competes as the empty answer: it wins over a span when it beats that span's score by
  more than ``null_threshold``.

An answer is always ``context[start:end]`` (character offsets from the tokenizer's offset map into
the context as given, Chinese included).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.engines import choice as engines
from llmtool.errors import InputError, ModelError, UsageError
from llmtool.io.formats import Formatter
from llmtool.io.inputs import ARGUMENT, STDIN, check_readable, decode_lines, is_terminal, open_binary, suggest
from llmtool.io.streams import read_records
from llmtool.io.tables import csv_rows, find_column, is_table
from llmtool.models import MissingHeadError, ModelRef, load
from llmtool.settings import ModelOptions
from llmtool.settings.qa import QAOptions
from llmtool.tasks.base import BatchedTask, Invalid, locate
from llmtool.tasks.batching import by_length
from llmtool.tasks.registry import command

if TYPE_CHECKING:
    import numpy as np
    import tokenizers

COMMAND = command("qa")
DEFAULT_MODEL = COMMAND.default_model or ""
DEFAULT_WINDOW, DEFAULT_STRIDE = 384, 128  # tokens: the pipeline's max_seq_len and doc_stride
MASKED = -10000.0  # the logit given to tokens that cannot be part of an answer (the pipeline's value)
QUESTION, CONTEXT, ID = "question", "context", "id"  # the default columns and JSON fields


@dataclass(frozen=True, slots=True)
class Question:
    """A question and the context to answer it from."""

    index: int  # 0-based position in the input
    line: int  # 1-based line (row) in the source
    question: str
    context: str
    source: str = ARGUMENT
    id: str | None = None

    @property
    def text(self) -> str:
        """The question (what an error record shows as its input)."""
        return self.question


@dataclass(frozen=True, slots=True)
class Span:
    """A candidate answer: character offsets into the context and its score."""

    start: int
    end: int
    score: float


# --------------------------------------------------------------------------- input


def read_questions(
    question: str | None = None,
    input_path: str | None = None,
    context_path: str | None = None,
    *,
    question_column: str | None = None,
    context_column: str | None = None,
    id_column: str | None = None,
    encoding: str = "utf-8",
) -> Iterator[Question]:
    """Questions with their context: QUESTION (or lines of ``--input``/stdin) over ``--context FILE``; else
    ``--input`` a .csv/.tsv with question and context columns, or JSON Lines (a file or stdin) of
    ``{"question", "context"[, "id"]}``."""
    if context_path is not None:
        if context_column is not None:
            raise UsageError("--context-column reads contexts from --input; it does not go with --context")
        context = read_context(context_path, encoding)
        column = question_column or (QUESTION if is_table(input_path) or _is_jsonl(input_path) else None)
        records = read_records(question, input_path, column, encoding=encoding)
        return (Question(r.index, r.line, r.text, context, r.source) for r in records)
    if question is not None and question != "-":
        raise UsageError("a QUESTION argument needs --context FILE (the text to answer from)")
    if input_path is not None and input_path != "-" and is_table(input_path):
        return _table_questions(input_path, question_column, context_column, id_column, encoding)
    if input_path is not None and input_path != "-":
        check_readable(input_path)
        if not _is_jsonl(input_path):
            raise UsageError(
                f"{input_path}: without --context, --input is a .csv/.tsv with question and context columns or "
                'JSON Lines (.jsonl) of {"question", "context"}'
            )
        lines = decode_lines(open_binary(input_path), input_path, encoding)
        return _json_questions(lines, input_path, question_column, context_column, id_column)
    import sys

    stdin = sys.stdin.buffer if sys.stdin is not None else None
    if stdin is None or is_terminal(stdin):
        raise UsageError("no input: give QUESTION with --context FILE, --input FILE, or pipe JSON Lines on stdin")
    return _json_questions(decode_lines(stdin, STDIN, encoding), STDIN, question_column, context_column, id_column)


def read_context(path: str, encoding: str = "utf-8") -> str:
    """The whole file, exactly (line ends too: offsets count every character)."""
    check_readable(path)
    try:
        with open(path, encoding=encoding, newline="") as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid {encoding} text at byte {exc.start}", source=path) from None
    if not text.strip():
        raise InputError("the context is empty", source=path)
    return text


def _is_jsonl(path: str | None) -> bool:
    return path is not None and Path(path).suffix.lower() in (".jsonl", ".ndjson")


def _table_questions(
    path: str, question_column: str | None, context_column: str | None, id_column: str | None, encoding: str
) -> Iterator[Question]:
    header, rows = csv_rows(path, encoding)
    q = find_column(header, question_column or QUESTION, path, "--question-column")
    c = find_column(header, context_column or CONTEXT, path, "--context-column")
    if q == c:
        raise UsageError(f"the question and the context are both column {header[q]!r}")
    i = find_column(header, id_column, path, "--id-column") if id_column else header.index(ID) if ID in header else None

    def questions() -> Iterator[Question]:
        for index, (line, row) in enumerate(rows):
            for col in (q, c):
                if not row[col].strip():
                    raise InputError(f"empty text in column {header[col]!r}", source=path, line=line)
            yield Question(index, line, row[q], row[c], path, row[i] if i is not None else None)

    return questions()


def _json_questions(
    lines: Iterable[tuple[int, str]],
    source: str,
    question_field: str | None,
    context_field: str | None,
    id_field: str | None,
) -> Iterator[Question]:
    fields = (question_field or QUESTION, context_field or CONTEXT)
    index = 0
    for line, raw in lines:
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", source=source, line=line, column=exc.colno) from None
        if not isinstance(obj, dict):
            raise InputError('expected a JSON object {"question", "context"}', source=source, line=line)
        texts = []
        for name in fields:
            if name not in obj:
                raise InputError(f"no {name!r} field{suggest(name, list(obj))}", source=source, line=line)
            if not isinstance(obj[name], str) or not obj[name].strip():
                raise InputError(f"field {name!r} is not a non-empty string", source=source, line=line)
            texts.append(obj[name])
        ident = obj.get(id_field or ID)
        yield Question(index, line, texts[0], texts[1], source, None if ident is None else str(ident))
        index += 1


def as_questions(inputs: Iterable[tuple[str, str] | dict[str, Any] | Question]) -> Iterator[Question]:
    """Questions from (question, context) pairs, ``{"question", "context"[, "id"]}`` dicts or Questions."""
    for index, item in enumerate(inputs):
        if isinstance(item, Question):
            yield item
        elif isinstance(item, dict):
            ident = item.get(ID)
            yield Question(
                index, index + 1, item[QUESTION], item[CONTEXT], ARGUMENT, None if ident is None else str(ident)
            )
        else:
            yield Question(index, index + 1, item[0], item[1])


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True, slots=True)
class Window:
    """One window of a question's context: the model's input and how its tokens map to the context."""

    row: dict[str, list[int]]  # input_ids (and token_type_ids)
    allowed: list[bool]  # tokens an answer may start or end on (the context's); CLS is allowed too, for the null score
    context: list[bool]  # the context's tokens
    encoding: Any  # the tokenizers Encoding (words and offsets)


def window_tokenizer(tokenizer: Any, max_length: int | None, stride: int) -> tokenizers.Tokenizer:
    """A private copy of the model's ``tokenizers`` tokenizer that cuts a (question, context) pair into
    windows of ``max_length`` tokens (None: does not cut): only the context is cut, neighbouring windows
    share ``stride`` tokens, no padding."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError("question answering needs a fast (tokenizers) tokenizer for its offsets; this model has none")
    copy = Tokenizer.from_str(backend.to_str())
    copy.no_padding()
    if max_length is None:
        copy.no_truncation()
    else:
        copy.enable_truncation(max_length, stride=stride, strategy="only_second", direction="right")
    return copy


def windows_of(
    backend: tokenizers.Tokenizer, question: str, context: str, with_types: bool, cls_id: int | None
) -> list[Window]:
    """Every window of ``question`` over ``context`` (the first, then the overflowing ones, in order)."""
    first = backend.encode(question, context)
    out = []
    for enc in [first, *first.overflowing]:
        ids = list(enc.ids)
        sequence = enc.sequence_ids
        context_tokens = [s == 1 for s in sequence]
        allowed = [c or (cls_id is not None and t == cls_id) for c, t in zip(context_tokens, ids, strict=True)]
        row = {"input_ids": ids}
        if with_types:
            row["token_type_ids"] = list(enc.type_ids)
        out.append(Window(row, allowed, context_tokens, enc))
    return out


# --------------------------------------------------------------------------- spans (numpy)


def softmax(x: np.ndarray) -> np.ndarray:
    import numpy as np

    e = np.exp(x - x.max())
    return e / e.sum()


def best_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, allowed: np.ndarray, top_k: int, max_answer_length: int
) -> tuple[list[tuple[int, int, float]], float]:
    """The ``top_k`` best (start token, end token, score) of one window, best first, and its null score.

    The pipeline's ``select_starts_ends`` and ``decode_spans``: probabilities over the allowed tokens,
    the null score at token 0 (CLS), then spans of context tokens with start <= end < start +
    ``max_answer_length`` scored P(start) x P(end)."""
    import numpy as np

    start = softmax(np.where(allowed, start_logits.astype(np.float64), MASKED))
    end = softmax(np.where(allowed, end_logits.astype(np.float64), MASKED))
    null = float(start[0] * end[0])
    start[0] = end[0] = 0.0
    outer = np.tril(np.triu(np.outer(start, end)), max_answer_length - 1)
    flat = outer.ravel()
    if top_k == 1:
        order = np.array([int(np.argmax(flat))])
    elif len(flat) <= top_k:
        order = np.argsort(-flat, kind="stable")
    else:
        part = np.argpartition(-flat, top_k)[:top_k]
        order = part[np.argsort(-flat[part], kind="stable")]
    starts, ends = np.unravel_index(order, outer.shape)
    spans = [
        (int(s), int(e), float(outer[s, e])) for s, e in zip(starts, ends, strict=True) if allowed[s] and allowed[e]
    ]
    return spans, null


def char_span(encoding: Any, start: int, end: int) -> tuple[int, int]:
    """The context characters of tokens ``start..end``, widened to whole words (the pipeline's
    ``align_to_words``); the tokens' own offsets where the tokenizer has no words."""
    try:
        first, last = encoding.token_to_word(start), encoding.token_to_word(end)
        if first is not None and last is not None:
            begin = encoding.word_to_chars(first, 1)
            finish = encoding.word_to_chars(last, 1)
            if begin is not None and finish is not None:
                return int(begin[0]), int(finish[1])
    except Exception:  # tokenizers raises plain Exceptions for tokenizers without words
        pass
    return int(encoding.offsets[start][0]), int(encoding.offsets[end][1])


def rank_answers(spans: Iterable[Span], null: float | None, top_k: int, threshold: float = 0.0) -> list[Span]:
    """The ``top_k`` best answers over a question's windows: each character span once (at its best
    score), and with ``null`` (no answer allowed) the empty answer placed before every span it beats
    by more than ``threshold``."""
    best: dict[tuple[int, int], Span] = {}
    for span in spans:
        known = best.get((span.start, span.end))
        if known is None or span.score > known.score:
            best[(span.start, span.end)] = span
    ranked = sorted(best.values(), key=lambda s: (-s.score, s.start, s.end))
    if null is not None:
        place = next((i for i, s in enumerate(ranked) if null > s.score + threshold), len(ranked))
        ranked.insert(place, Span(0, 0, null))
    return ranked[:top_k]


# --------------------------------------------------------------------------- the task


def load_qa(ref: ModelRef) -> engines.LoadedModel:
    """Tokenizer and question-answering model for the torch engine; a model without a trained span head is refused."""
    from transformers import AutoModelForQuestionAnswering

    try:
        return load(AutoModelForQuestionAnswering, ref, require_head="question-answering head")
    except MissingHeadError as exc:
        raise ModelError(f"{exc}; train one with `llmtool finetune --task qa`") from None


Encoded = list[Window]
Result = list[Span]


class QuestionAnswerer(BatchedTask[Question, Encoded, Result]):
    """A question-answering model (any engine): questions over contexts in, answer records out."""

    def __init__(self, tokenizer: Any, encoder: Any, options: QAOptions) -> None:
        options.check()
        super().__init__(options.batch_size, options.window, options.skip_invalid)
        from llmtool.models import max_input_length

        self.options = options
        self.encoder = encoder
        limit = max_input_length(tokenizer, encoder)
        if options.max_length is not None and options.max_length > limit:
            raise UsageError(f"--max-length {options.max_length} is over the model's limit of {limit} tokens")
        self.max_length = options.max_length or min(DEFAULT_WINDOW, limit)  # the pipeline's rule
        self.doc_stride = (
            options.doc_stride if options.doc_stride is not None else min(DEFAULT_STRIDE, self.max_length // 2)
        )
        self.backend = window_tokenizer(tokenizer, self.max_length, self.doc_stride)
        self.plain = window_tokenizer(tokenizer, None, 0)  # counts a question's tokens (one text: no truncation)
        self.with_types = "token_type_ids" in tokenizer("a")
        cls_id = getattr(tokenizer, "cls_token_id", None)
        self.cls_id = int(cls_id) if cls_id is not None else None
        self.specials = self.backend.num_special_tokens_to_add(True)

    def encode(self, chunk: list[Question]) -> list[Encoded | Invalid]:
        out: list[Encoded | Invalid] = []
        for item in chunk:
            if not item.question.strip() or not item.context.strip():
                out.append(Invalid("empty question" if not item.question.strip() else "empty context"))
                continue
            asked = len(self.plain.encode(item.question, add_special_tokens=False).ids)
            room = self.max_length - asked - self.specials
            if asked > self.options.max_question_length:
                out.append(Invalid(f"the question is {asked} tokens, over --max-question-length"))
            elif room <= self.doc_stride:
                out.append(
                    Invalid(
                        f"the question ({asked} tokens) leaves {room} tokens of context per window, not more "
                        f"than --doc-stride {self.doc_stride}; raise --max-length or lower --doc-stride"
                    )
                )
            else:
                out.append(windows_of(self.backend, item.question, item.context, self.with_types, self.cls_id))
        return out

    def length(self, encoded: Encoded) -> int:
        return max(len(w.row["input_ids"]) for w in encoded)

    def predict_all(self, encoded: dict[int, Encoded]) -> dict[int, Result]:
        """Every window of the chunk batched by length, then each question's answers from its windows."""
        import numpy as np

        flat = [(i, w) for i, windows in encoded.items() for w in windows]
        scores: list[tuple[list[tuple[int, int, float]], float]] = [([], 0.0)] * len(flat)
        for batch in by_length(range(len(flat)), lambda n: len(flat[n][1].row["input_ids"]), self.batch_size):
            logits = self.encoder.token_logits([flat[n][1].row for n in batch])
            for n, values in zip(batch, logits, strict=True):
                window = flat[n][1]
                allowed = np.array(window.allowed)
                values = np.asarray(values)
                scores[n] = best_spans(
                    values[:, 0], values[:, 1], allowed, self.options.top_k, self.options.max_answer_length
                )
        spans: dict[int, list[Span]] = {i: [] for i in encoded}
        nulls: dict[int, float] = {}
        for (i, window), (found, null) in zip(flat, scores, strict=True):
            nulls[i] = min(nulls.get(i, 1.0), null)
            for s, e, p in found:
                if window.context[s] and window.context[e]:
                    begin, finish = char_span(window.encoding, s, e)
                    spans[i].append(Span(begin, finish, p))
        no_answer = self.options.no_answer
        return {
            i: rank_answers(spans[i], nulls[i] if no_answer else None, self.options.top_k, self.options.null_threshold)
            for i in encoded
        }

    def record(self, item: Question, result: Result) -> dict[str, Any]:
        answers = [
            {"answer": item.context[s.start : s.end], "start": s.start, "end": s.end, "score": s.score} for s in result
        ]
        return {"index": item.index, "question": item.question, "id": item.id, "answers": answers}

    def answers(self, items: Iterable[Question]) -> Iterator[dict[str, Any]]:
        """One record per answer (best first), in input order: see :func:`answer_records`."""
        for _, record in self.results(items):
            yield from answer_records(record, self.options.top_k)


def answer_records(record: dict[str, Any], top_k: int = 1) -> Iterator[dict[str, Any]]:
    """A question's record made the output records: one per answer ``{"index", ["rank",] "answer",
    "start", "end", "score"[, "id"]}`` (``rank`` from 1 when more than one answer is asked for); an error
    record (``--skip-invalid``) as it is."""
    if "error" in record:
        yield record
        return
    for rank, answer in enumerate(record["answers"], 1):
        out: dict[str, Any] = {"index": record["index"]}
        if top_k > 1:
            out["rank"] = rank
        out.update(answer)
        if record["id"] is not None:
            out["id"] = record["id"]
        yield out


# --------------------------------------------------------------------------- formats


def _text(result: dict[str, Any]) -> str:
    """The answer (an empty line for no answer); with --top-k, ``score<TAB>answer``."""
    if "error" in result:
        return f"error: {result['error']}"
    answer = " ".join(result["answer"].split())  # one line, whatever the context's line breaks
    return f"{result['score']:.4f}\t{answer}" if "rank" in result else answer


def _tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    if "error" in result:
        yield [result["index"], "", "", "", "", "", result["error"]]
        return
    score = f"{result['score']:.6g}"
    yield [result["index"], result.get("rank", 1), result["answer"], result["start"], result["end"], score, ""]


FORMATTER = Formatter(
    text=_text, tsv_header=("index", "rank", "answer", "start", "end", "score", "error"), tsv_rows=_tsv_rows
)


# --------------------------------------------------------------------------- Python API


def open_qa(model_options: ModelOptions, options: QAOptions) -> QuestionAnswerer:
    """Locate the model (refusing one of another kind), open it on the chosen engine."""
    options.check()
    ref = locate(COMMAND.name, model_options)
    tokenizer, encoder = engines.open_encoder(ref, "qa", load_qa)
    return QuestionAnswerer(tokenizer, encoder, options)


def qa(
    questions: Iterable[tuple[str, str] | dict[str, Any] | Question],
    *,
    model: str = DEFAULT_MODEL,
    options: QAOptions | None = None,
    model_options: ModelOptions | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Answer each ``(question, context)``; yields one dict per answer, best first, questions in order (the
    records ``llmtool qa --json`` prints: the CLI calls this too). ``kwargs`` are :class:`QAOptions` fields.

    >>> for r in qa([("Who wrote it?", "It was written by Ada.")], model="./squad-model"):
    ...     print(r["answer"], r["start"], r["end"])  # doctest: +SKIP
    """
    opts = options or QAOptions(**kwargs)
    answerer = open_qa(model_options or ModelOptions(model=model), opts)
    return answerer.answers(as_questions(questions))
