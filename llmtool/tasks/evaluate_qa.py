"""``llmtool evaluate`` for question-answering models: exact match and F1 by the official SQuAD measure.

The measure is that of the official evaluation scripts (SQuAD v1.1 ``evaluate-v1.1.py``, v2.0
``evaluate-v2.0.py``): answers normalised (lower case, punctuation and the articles a/an/the
removed, white space collapsed), a prediction's exact match and token F1 the best over the
question's reference answers, both averaged over the questions and given in percent as the scripts
print them. A question with no answer (SQuAD 2.0 ``is_impossible``) has the empty answer as its
reference; when the data has such questions, the model may answer nothing (``llmtool qa
--no-answer``) and the report adds the scores over the answerable and unanswerable questions.

The data (also what ``finetune --task qa`` reads, :func:`read_squad`): SQuAD's nested JSON (v1.1 and
v2.0), JSON Lines (``{"question", "context", "answers": {"text": [...], "answer_start": [...]}}``, the
Hugging Face layout, or ``answer_text``/``answer_start`` fields), or a .csv/.tsv with the columns
``context, question, answer_text, answer_start`` (an empty answer: no answer). A malformed record is
one error naming the file and the line, or for nested JSON the path (``data[0].paragraphs[3]...``).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmtool.errors import InputError
from llmtool.io.console import Console
from llmtool.io.inputs import check_readable
from llmtool.io.tables import csv_rows, find_column, is_table
from llmtool.models import ModelRef
from llmtool.settings import EvaluateOptions
from llmtool.settings.qa import QAOptions

# --------------------------------------------------------------------------- the official measure

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces: the official scripts' ``normalize_answer``."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    """Token F1 of the normalised answers; an empty answer scores 1 against an empty one, else 0 (v2.0)."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def references(answers: Sequence[str]) -> list[str]:
    """The answers a prediction is compared with: those not empty once normalised, else the empty one."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def squad_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """``exact_match`` and ``f1`` in percent over the questions (each the best over its references), and
    with unanswerable questions, the same over the answerable (``has_answer_*``) and the others (``no_answer_*``)."""
    em_scores, f1_scores, answerable = [], [], []
    for prediction, gold in zip(predictions, answers, strict=True):
        refs = references(gold)
        em_scores.append(max(exact_match(prediction, r) for r in refs))
        f1_scores.append(max(f1(prediction, r) for r in refs))
        answerable.append(refs != [""])
    out = {"exact_match": _percent(em_scores), "f1": _percent(f1_scores)}
    if not all(answerable):
        for name, keep in (("has_answer", True), ("no_answer", False)):
            chosen = [i for i, a in enumerate(answerable) if a == keep]
            out[f"{name}_exact_match"] = _percent([em_scores[i] for i in chosen])
            out[f"{name}_f1"] = _percent([f1_scores[i] for i in chosen])
            out[f"{name}_total"] = len(chosen)
    return out


def _percent(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


# --------------------------------------------------------------------------- the data


@dataclass(frozen=True, slots=True)
class QAExample:
    """A question with its context and reference answers (text, character start); none: unanswerable."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]
    where: str  # "FILE:LINE" or "FILE: data[0].paragraphs[1].qas[2]", for messages
    line: int = 0  # the line, where the file has lines (0: nested JSON)
    moved: int = 0  # answers not at their answer_start, found nearby (see _checked)


def is_squad_json(path: str) -> bool:
    return Path(path).suffix.lower() == ".json"


def is_qa_data(path: str, encoding: str = "utf-8") -> bool:
    """Whether DATA is question-answering data: SQuAD JSON, or JSON Lines whose first record has a question
    and a context (read by :func:`read_squad` after the model's kind is known)."""
    if is_squad_json(path):
        return True
    if Path(path).suffix.lower() not in (".jsonl", ".ndjson") or not Path(path).is_file():
        return False
    try:
        with open(path, encoding=encoding) as f:
            first = next((line for line in f if line.strip()), "")
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "question" in record and "context" in record


def read_squad(path: str, encoding: str = "utf-8") -> list[QAExample]:
    """Every example of a SQuAD file (.json nested, .jsonl, .csv/.tsv), checked: a malformed one raises
    one :class:`InputError` naming the file and its line or JSON path."""
    check_readable(path)
    if is_squad_json(path):
        examples = _nested(path, encoding)
    elif is_table(path):
        examples = list(_table(path, encoding))
    else:
        examples = list(_json_lines(path, encoding))
    if not any(e.question for e in examples):
        raise InputError("no questions", source=path)
    return examples


def warnings(examples: Sequence[QAExample]) -> list[str]:
    """What reading changed: empty questions left out, answers found away from their answer_start."""
    out = []
    empty = [e.where for e in examples if not e.question]
    if empty:
        out.append(f"{len(empty)} empty questions were left out; the first: {empty[0]}")
    moved = sum(e.moved for e in examples)
    if moved:
        out.append(f"{moved} answers were not at their answer_start; the nearest occurrence of the text was taken")
    return out


def _nested(path: str, encoding: str) -> list[QAExample]:
    try:
        with open(path, encoding=encoding) as f:
            doc = json.load(f)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", source=path, line=exc.lineno, column=exc.colno) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid {encoding} text at byte {exc.start}", source=path) from None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise InputError('not SQuAD JSON: no "data" list at the top', source=path)
    out: list[QAExample] = []
    for a, article in enumerate(data):
        paragraphs = _field(article, "paragraphs", list, path, f"data[{a}]")
        for p, paragraph in enumerate(paragraphs):
            at = f"data[{a}].paragraphs[{p}]"
            context = _field(paragraph, "context", str, path, at)
            for q, qa in enumerate(_field(paragraph, "qas", list, path, at)):
                here = f"{at}.qas[{q}]"
                question = _field(qa, "question", str, path, here)
                if not question.strip():  # CMRC 2018's trial set has one: nothing to ask, left out (and counted)
                    out.append(QAExample("", "", context, (), f"{path}: {here}"))
                    continue
                ident = str(qa.get("id", f"{a}-{p}-{q}")) if isinstance(qa, dict) else ""
                impossible = qa.get("is_impossible") is True
                answers: list[tuple[str, int]] = []
                moved = 0
                for n, answer in enumerate([] if impossible else _field(qa, "answers", list, path, here)):
                    text = _field(answer, "text", str, path, f"{here}.answers[{n}]")
                    start = _field(answer, "answer_start", int, path, f"{here}.answers[{n}]")
                    answers.append(_checked(text, start, context, path, at=f"{here}.answers[{n}]"))
                    moved += answers[-1][1] != start
                if not impossible and not answers:
                    raise InputError(f'{here}: no answers and no "is_impossible": true', source=path)
                out.append(QAExample(ident, question, context, tuple(answers), f"{path}: {here}", 0, moved))
    return out


def _field(obj: Any, name: str, kind: type, path: str, at: str) -> Any:
    if not isinstance(obj, dict):
        raise InputError(f"{at}: expected a JSON object", source=path)
    if name not in obj:
        raise InputError(f"{at}: no {name!r}", source=path)
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{at}.{name}: expected {_KINDS[kind]}, found {type(value).__name__}", source=path)
    if isinstance(value, str) and name == "context" and not value.strip():
        raise InputError(f"{at}.{name} is empty", source=path)
    return value


_KINDS = {list: "a list", str: "a string", int: "an integer", dict: "an object"}


def _checked(
    text: str, start: int, context: str, source: str, line: int | None = None, at: str = ""
) -> tuple[str, int]:
    """An answer and where it starts in the context. SQuAD promises ``context[start:]`` begins with the text;
    some sets (CMRC 2018's trial set) are off by a character or two: then the occurrence nearest to
    ``start`` is taken (``finetune`` and ``evaluate`` count them). A text not in the context is an error."""
    where = f"{at}: " if at else ""
    if not text.strip():
        raise InputError(f"{where}empty answer text", source=source, line=line)
    if start >= 0 and context[start : start + len(text)] == text:
        return text, start
    found = [m.start() for m in re.finditer(re.escape(text), context)]
    if not found:
        message = f"{where}answer {text!r} (answer_start {start}) is not in the context"
        raise InputError(message, source=source, line=line)
    return text, min(found, key=lambda at: (abs(at - start), at))


def _json_lines(path: str, encoding: str) -> Iterator[QAExample]:
    from llmtool.io.inputs import decode_lines, open_binary

    with open_binary(path) as binary:
        for line, raw in decode_lines(binary, path, encoding):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON: {exc.msg}", source=path, line=line, column=exc.colno) from None
            if not isinstance(obj, dict):
                raise InputError("expected a JSON object", source=path, line=line)
            texts = []
            for name in ("question", "context"):
                if not isinstance(obj.get(name), str) or not obj[name].strip():
                    raise InputError(f"no {name!r} text", source=path, line=line)
                texts.append(obj[name])
            pairs = _jsonl_answers(obj, path, line)
            where = f"{path}:{line}"
            answers = tuple(_checked(t, s, texts[1], path, line) for t, s in pairs)
            moved = sum(a[1] != s for a, (_, s) in zip(answers, pairs, strict=True))
            yield QAExample(str(obj.get("id", line)), texts[0], texts[1], answers, where, line, moved)


def _jsonl_answers(obj: dict[str, Any], path: str, line: int) -> list[tuple[str, int]]:
    """(text, start) pairs from ``answers`` ({"text": [...], "answer_start": [...]} or a list of
    {"text", "answer_start"}) or ``answer_text``/``answer_start``; none: unanswerable."""
    if "answers" in obj:
        answers = obj["answers"]
        if isinstance(answers, dict) and isinstance(answers.get("text"), list):
            starts = answers.get("answer_start")
            if not isinstance(starts, list) or len(starts) != len(answers["text"]):
                raise InputError("answers.text and answers.answer_start differ in length", source=path, line=line)
            pairs = list(zip(answers["text"], starts, strict=True))
        elif isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
            pairs = [(a.get("text"), a.get("answer_start")) for a in answers]
        else:
            message = '"answers" is neither {"text", "answer_start"} lists nor a list of them'
            raise InputError(message, source=path, line=line)
    elif "answer_text" in obj:
        text = obj["answer_text"]
        pairs = [] if text in ("", None) else [(text, obj.get("answer_start"))]
    else:
        raise InputError('no "answers" (or "answer_text" and "answer_start")', source=path, line=line)
    for text, start in pairs:
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise InputError("an answer needs a text and an integer answer_start", source=path, line=line)
    return pairs


def _table(path: str, encoding: str) -> Iterator[QAExample]:
    header, rows = csv_rows(path, encoding)
    cols = [find_column(header, name, path, name) for name in ("context", "question", "answer_text", "answer_start")]
    ident = header.index("id") if "id" in header else None
    for line, row in rows:
        context, question, text, start = (row[c] for c in cols)
        for name, value in (("context", context), ("question", question)):
            if not value.strip():
                raise InputError(f"empty {name}", source=path, line=line)
        answers: tuple[tuple[str, int], ...] = ()
        if text:
            try:
                offset = int(start.strip())
            except ValueError:
                raise InputError(f"answer_start {start!r} is not an integer", source=path, line=line) from None
            answers = (_checked(text, offset, context, path, line),)
        yield QAExample(
            row[ident] if ident is not None else str(line), question, context, answers, f"{path}:{line}", line
        )


# --------------------------------------------------------------------------- evaluate


def evaluate_qa(data: str, ref: ModelRef, opts: EvaluateOptions, console: Console) -> dict[str, Any]:
    """The model's answers to DATA's questions, judged by the official measure."""
    from llmtool.engines import choice as engines
    from llmtool.tasks.qa import Question, QuestionAnswerer, load_qa

    read = read_squad(data, opts.encoding)  # all checked before the model loads
    for warning in warnings(read):
        console.warn(warning)
    examples = [e for e in read if e.question]
    impossible = any(not e.answers for e in examples)
    tokenizer, encoder = engines.open_encoder(ref, "qa", load_qa)
    options = QAOptions(batch_size=opts.batch_size, max_length=opts.max_length, no_answer=impossible, skip_invalid=True)
    answerer = QuestionAnswerer(tokenizer, encoder, options)
    questions = (Question(i, e.line, e.question, e.context, e.where, e.id) for i, e in enumerate(examples))
    predictions: list[str] = []
    unanswered: list[str] = []
    with console.progress("questions", total=len(examples)) as bar:
        for question, record in answerer.results(questions):
            if "error" in record:  # a question too long for the window: no answer, counted wrong
                unanswered.append(f"{question.source}: {record['error']}")
            predictions.append(record["answers"][0]["answer"] if record.get("answers") else "")
            bar.advance()
    if unanswered:
        console.warn(
            f"{len(unanswered)} questions could not be asked (scored as no answer); the first: {unanswered[0]}"
        )
    scores = squad_scores(predictions, [[t for t, _ in e.answers] for e in examples])
    return {
        "task": "qa",
        "model": ref.name,
        "data": data,
        "examples": len(examples),
        "measure": "SQuAD v2.0 (no-answer questions)" if impossible else "SQuAD v1.1",
        **scores,
    }


def qa_summary(result: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("examples", str(result["examples"])), ("exact match", f"{result['exact_match']:.2f}")]
    rows.append(("F1", f"{result['f1']:.2f}"))
    for name in ("has_answer", "no_answer"):
        if f"{name}_total" in result:
            label = name.replace("_", " ")
            rows.append(
                (
                    f"{label} ({result[f'{name}_total']})",
                    f"EM {result[f'{name}_exact_match']:.2f}, F1 {result[f'{name}_f1']:.2f}",
                )
            )
    return rows


def qa_tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    for key in ("examples", "exact_match", "f1"):
        yield [key, "", "", result[key]]
    for name in ("has_answer", "no_answer"):
        for key in ("total", "exact_match", "f1"):
            if f"{name}_{key}" in result:
                yield [f"{name}_{key}", "", "", result[f"{name}_{key}"]]
