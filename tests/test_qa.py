"""``llmtool qa``: the same answers on both engines (tiny BERT and RoBERTa QA models), long contexts read in
windows, answers that are exact slices of the context (Chinese too), "no answer", the inputs and their
errors, and the span arithmetic on its own against a brute-force reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from conftest import run_cli

from llmtool.tasks.qa import Span, best_spans, rank_answers, read_questions

CONTEXT = (
    "the king lived in a castle . the dog was happy and the cat sat on the mat . "
    "once upon a time there lived a queen in a house ."
)
QUESTIONS = ["who lived in a castle ?", "where did the cat sit ?", "what was happy ?"]


@pytest.fixture(scope="module")
def qa_models(models_dir: Path) -> dict[str, Path]:
    return {
        "bert": tiny_models.build_with_head(models_dir / "qa-bert", tiny_models.build_bert, "BertForQuestionAnswering"),
        "roberta": tiny_models.build_with_head(
            models_dir / "qa-roberta", tiny_models.build_roberta, "RobertaForQuestionAnswering"
        ),
    }


@pytest.fixture(scope="module")
def chinese_qa(models_dir: Path) -> Path:
    """A tiny BERT QA model whose vocabulary has Chinese characters (one token each, as bert-base-chinese)."""
    chars = list(dict.fromkeys("北京是中国的首都。谁在哪里住城市上海有很多人口吗\uff1f"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *"abcdefghijklmnopqrstuvwxyz0123456789.,?"]
    return tiny_models.bert_from_vocab(models_dir / "qa-chinese", vocab, "BertForQuestionAnswering")


def jsonl(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def ask(model: Path, *args: str, engine: str = "torch", input: str | None = None) -> list[dict]:
    from conftest import cli_env

    result = run_cli(["qa", "-m", str(model), "--json", *args], input=input, env=cli_env(LLMTOOL_ENGINE=engine))
    assert result.returncode == 0, result.stderr
    return jsonl(result.stdout)


def as_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# --------------------------------------------------------------------------- both engines


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_both_engines_give_the_same_answers(family: str, qa_models: dict[str, Path]) -> None:
    rows = as_jsonl([{"question": q, "context": CONTEXT, "id": f"q{i}"} for i, q in enumerate(QUESTIONS)])
    args = ["--top-k", "3", "--no-answer", "--max-length", "32", "--doc-stride", "8"]
    torch_answers = ask(qa_models[family], *args, input=rows)
    ct2_answers = ask(qa_models[family], *args, engine="ctranslate2", input=rows)
    assert len(torch_answers) == 9
    assert [r["index"] for r in torch_answers] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [r["id"] for r in torch_answers][::3] == ["q0", "q1", "q2"]
    for a, b in zip(torch_answers, ct2_answers, strict=True):
        assert (a["index"], a["rank"], a["answer"], a["start"], a["end"]) == (
            b["index"],
            b["rank"],
            b["answer"],
            b["start"],
            b["end"],
        )
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert CONTEXT[a["start"] : a["end"]] == a["answer"]


def test_a_long_context_is_read_in_windows(qa_models: dict[str, Path], tmp_path: Path) -> None:
    """Windows of 24 tokens sharing 8: spans are found all along a context ten times longer than a window."""
    context = tmp_path / "long.txt"
    text = " ".join([CONTEXT] * 6)
    context.write_text(text, encoding="utf-8")
    answers = ask(qa_models["bert"], "who lived ?", "--context", str(context), "-k", "200", "--max-length", "24")
    assert len(answers) > 30
    assert max(a["start"] for a in answers) > len(text) * 3 // 4  # the last windows answer too
    assert min(a["start"] for a in answers) < len(CONTEXT)
    assert len({(a["start"], a["end"]) for a in answers}) == len(answers)  # a span in two windows counts once
    for a in answers:
        assert text[a["start"] : a["end"]] == a["answer"]


def test_chinese_offsets_point_at_the_right_characters(chinese_qa: Path, tmp_path: Path) -> None:
    context = "北京是中国的首都。上海有很多人口。"
    rows = as_jsonl([{"question": "中国的首都是哪里\uff1f", "context": context}])
    for engine in ("torch", "ctranslate2"):
        answers = ask(chinese_qa, "-k", "5", "--max-answer-length", "4", engine=engine, input=rows)
        assert len(answers) == 5
        for a in answers:
            assert context[a["start"] : a["end"]] == a["answer"]
            assert 1 <= len(a["answer"]) <= 4  # one character per token: at most 4 characters


def test_answers_keep_the_context_exactly(qa_models: dict[str, Path], tmp_path: Path) -> None:
    """Offsets count every character of the file: CRLF line ends, several spaces, accents."""
    context = tmp_path / "ctx.txt"
    raw = "The  king\r\nlived in a  castle .\r\nThe Café was happy ."
    context.write_bytes(raw.encode("utf-8"))
    answers = ask(qa_models["bert"], "who ?", "--context", str(context), "-k", "20")
    assert answers
    for a in answers:
        assert raw[a["start"] : a["end"]] == a["answer"]


def test_text_output_and_formats(qa_models: dict[str, Path], tmp_path: Path) -> None:
    context = tmp_path / "ctx.txt"
    context.write_text(CONTEXT, encoding="utf-8")
    questions = tmp_path / "questions.txt"
    questions.write_text("\n".join(QUESTIONS) + "\n", encoding="utf-8")
    model = str(qa_models["bert"])
    best = ask(qa_models["bert"], "--context", str(context), "--input", str(questions))
    text = run_cli(["qa", "-m", model, "--context", str(context), "--input", str(questions)])
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [r["answer"] for r in best]
    ranked = run_cli(["qa", "-m", model, "-c", str(context), "-k", "2", QUESTIONS[0]])
    lines = ranked.stdout.splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 2 for line in lines)
    tsv = run_cli(["qa", "-m", model, "-c", str(context), "--format", "tsv", QUESTIONS[0]])
    assert tsv.stdout.splitlines()[0] == "index\trank\tanswer\tstart\tend\tscore\terror"


def test_a_table_with_question_and_context_columns(qa_models: dict[str, Path], tmp_path: Path) -> None:
    table = tmp_path / "q.csv"
    table.write_text('id,question,context\na1,who lived ?,"the king lived in a castle ."\n', encoding="utf-8")
    (answer,) = ask(qa_models["bert"], "--input", str(table))
    assert answer["id"] == "a1"
    assert "the king lived in a castle ."[answer["start"] : answer["end"]] == answer["answer"]


def test_seeded_nothing_random_same_output_twice(qa_models: dict[str, Path]) -> None:
    rows = as_jsonl([{"question": QUESTIONS[0], "context": CONTEXT}])
    assert ask(qa_models["roberta"], "-k", "4", input=rows) == ask(qa_models["roberta"], "-k", "4", input=rows)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["who ?"], None, "a QUESTION argument needs --context FILE"),
        ([], '{"question": "who"}\n', "<stdin>:1: no 'context' field"),
        ([], "not json\n", "<stdin>:1:1: invalid JSON"),
        ([], '{"question": "who", "context": ""}\n', "<stdin>:1: field 'context' is not a non-empty string"),
        (["--null-threshold", "0.1"], None, "--null-threshold goes with --no-answer"),
        (["--max-length", "100"], '{"question": "a", "context": "b"}\n', "over the model's limit of 64 tokens"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], stdin: str | None, message: str, qa_models: dict[str, Path]
) -> None:
    result = run_cli(["qa", "-m", str(qa_models["bert"]), *args], input=stdin)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert message in result.stderr


def test_a_question_too_long_for_the_window(qa_models: dict[str, Path]) -> None:
    rows = as_jsonl([{"question": "the cat " * 20, "context": CONTEXT}, {"question": "who ?", "context": CONTEXT}])
    stopped = run_cli(["qa", "-m", str(qa_models["bert"]), "--max-length", "32"], input=rows)
    assert stopped.returncode == 2 and "<stdin>:1: the question (40 tokens) leaves -11 tokens" in stopped.stderr
    capped = run_cli(["qa", "-m", str(qa_models["bert"]), "--max-question-length", "10"], input=rows)
    assert capped.returncode == 2 and "40 tokens, over --max-question-length" in capped.stderr
    skipped = run_cli(
        ["qa", "-m", str(qa_models["bert"]), "--max-length", "32", "--skip-invalid", "--json"], input=rows
    )
    first, second = jsonl(skipped.stdout)
    assert "error" in first and first["line"] == 1
    assert second["index"] == 1 and "answer" in second


def test_read_questions_from_a_context_file_and_lines(tmp_path: Path) -> None:
    context = tmp_path / "c.txt"
    context.write_text("some text\n", encoding="utf-8")
    questions = tmp_path / "q.txt"
    questions.write_text("first ?\n\nsecond ?\n", encoding="utf-8")
    read = list(read_questions(None, str(questions), str(context)))
    assert [(q.index, q.line, q.question, q.context) for q in read] == [
        (0, 1, "first ?", "some text\n"),
        (1, 3, "second ?", "some text\n"),
    ]


# --------------------------------------------------------------------------- the span arithmetic


def reference_spans(start: np.ndarray, end: np.ndarray, allowed: np.ndarray, k: int, longest: int) -> list[tuple]:
    """Every span scored one by one, as the pipeline's formulas say."""

    def soft(x: np.ndarray) -> np.ndarray:
        x = np.where(allowed, x, -10000.0)
        e = np.exp(x - x.max())
        return e / e.sum()

    ps, pe = soft(start), soft(end)
    null = ps[0] * pe[0]
    spans = [
        (s, e, ps[s] * pe[e])
        for s in range(1, len(start))
        for e in range(s, min(len(start), s + longest))
        if allowed[s] and allowed[e]
    ]
    spans.sort(key=lambda t: -t[2])
    return [*spans[:k], null]


@pytest.mark.parametrize("seed", range(5))
def test_best_spans_match_a_brute_force_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 30
    start, end = rng.normal(size=n).astype(np.float32), rng.normal(size=n).astype(np.float32)
    allowed = np.zeros(n, dtype=bool)
    allowed[0] = True  # CLS
    allowed[8:29] = True  # the context, after the question and before the last [SEP]
    found, null = best_spans(start, end, allowed, 5, 6)
    *expected, expected_null = reference_spans(start, end, allowed, 5, 6)
    assert null == pytest.approx(expected_null, rel=1e-6)  # the reference in float32
    assert [(s, e) for s, e, _ in found] == [(s, e) for s, e, _ in expected]
    assert [p for _, _, p in found] == pytest.approx([p for _, _, p in expected], rel=1e-6)


def test_rank_answers_keeps_each_span_once_and_places_no_answer() -> None:
    spans = [Span(5, 9, 0.2), Span(0, 3, 0.5), Span(5, 9, 0.3), Span(10, 12, 0.1)]
    assert rank_answers(spans, None, 5) == [Span(0, 3, 0.5), Span(5, 9, 0.3), Span(10, 12, 0.1)]
    assert rank_answers(spans, 0.4, 2) == [Span(0, 3, 0.5), Span(0, 0, 0.4)]
    assert rank_answers(spans, 0.6, 1) == [Span(0, 0, 0.6)]
    assert rank_answers(spans, 0.6, 1, threshold=0.2) == [Span(0, 3, 0.5)]  # must win by more than 0.2
    assert rank_answers([], 0.01, 3) == [Span(0, 0, 0.01)]


def test_the_python_api_gives_the_clis_records(qa_models: dict[str, Path]) -> None:
    import llmtool

    records = list(
        llmtool.qa(
            [(QUESTIONS[0], CONTEXT), {"question": QUESTIONS[1], "context": CONTEXT, "id": "b"}],
            model=str(qa_models["bert"]),
            top_k=2,
        )
    )
    rows = as_jsonl(
        [{"question": QUESTIONS[0], "context": CONTEXT}, {"question": QUESTIONS[1], "context": CONTEXT, "id": "b"}]
    )
    cli = ask(qa_models["bert"], "-k", "2", input=rows)
    assert [(r["index"], r["rank"], r["answer"], r["start"], r["end"], r.get("id")) for r in records] == [
        (r["index"], r["rank"], r["answer"], r["start"], r["end"], r.get("id")) for r in cli
    ]
    assert [r["score"] for r in records] == pytest.approx([r["score"] for r in cli], abs=1e-6)
