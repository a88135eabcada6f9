"""``finetune --task qa`` and ``evaluate`` on QA models: the official SQuAD measure (against a copy of the
official script's functions), SQuAD files read and malformed ones refused in one line, the run_qa
labelling rule, and a tiny model trained here that answers, also from a long context's second window."""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from pathlib import Path

import pytest
import tiny_models
from conftest import run_cli

from llmtool.errors import InputError
from llmtool.tasks.evaluate_qa import exact_match, f1, read_squad, squad_scores
from llmtool.training.qa_data import answer_tokens

# --------------------------------------------------------------------------- the official measure


# A copy of the official SQuAD v1.1 evaluation script's functions (evaluate-v1.1.py), to compare with.
def official_normalize_answer(s: str) -> str:
    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text: str) -> str:
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def official_f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = official_normalize_answer(prediction).split()
    ground_truth_tokens = official_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def official_exact_match_score(prediction: str, ground_truth: str) -> bool:
    return official_normalize_answer(prediction) == official_normalize_answer(ground_truth)


CASES = [
    ("Saint Bernadette Soubirous", ["Saint Bernadette Soubirous"]),
    ("the Saint Bernadette", ["Saint Bernadette Soubirous"]),
    ("Denver Broncos", ["Denver Broncos", "The Denver Broncos", "Broncos"]),
    ("a golden statue of the Virgin Mary", ["a copper statue of Christ"]),
    ("1879.", ["1879"]),
    ("U.S. Army", ["the US army", "United States Army"]),
    ("nothing in common", ["entirely different words"]),
    # (an answer that normalises to nothing: v1.1 scores F1 0, v2.0, followed here, counts it as "no answer")
    ("Café   au lait!", ["cafe au lait", "café au lait"]),
]


@pytest.mark.parametrize(("prediction", "golds"), CASES)
def test_the_measure_is_the_official_scripts(prediction: str, golds: list[str]) -> None:
    assert max(exact_match(prediction, g) for g in golds) == max(
        int(official_exact_match_score(prediction, g)) for g in golds
    )
    assert max(f1(prediction, g) for g in golds) == pytest.approx(max(official_f1_score(prediction, g) for g in golds))


def test_scores_in_percent_and_the_v2_no_answer_rule() -> None:
    assert squad_scores(["Denver Broncos", "x"], [["Broncos"], ["x"]]) == {
        "exact_match": 50.0,
        "f1": pytest.approx(100 * (2 / 3 + 1) / 2),
    }
    scores = squad_scores(["", "", "Paris"], [[], ["Paris"], ["Paris"]])
    assert scores["exact_match"] == pytest.approx(200 / 3)
    assert (scores["has_answer_total"], scores["has_answer_exact_match"]) == (2, 50.0)
    assert (scores["no_answer_total"], scores["no_answer_exact_match"], scores["no_answer_f1"]) == (1, 100.0, 100.0)


# --------------------------------------------------------------------------- reading SQuAD files


def squad(paragraphs: list[dict], version: str = "1.1") -> dict:
    return {"data": [{"title": "t", "paragraphs": paragraphs}], "version": version}


def test_nested_v1_and_v2_and_flat_files_read_the_same(tmp_path: Path) -> None:
    context = "Paris is the capital of France."
    nested = tmp_path / "v2.json"
    nested.write_text(
        json.dumps(
            squad(
                [
                    {
                        "context": context,
                        "qas": [
                            {"id": "a", "question": "capital?", "answers": [{"text": "Paris", "answer_start": 0}]},
                            {
                                "id": "b",
                                "question": "king?",
                                "answers": [],
                                "is_impossible": True,
                                "plausible_answers": [{"text": "France", "answer_start": 24}],
                            },
                        ],
                    }
                ],
                "v2.0",
            )
        ),
        encoding="utf-8",
    )
    flat = tmp_path / "flat.csv"
    flat.write_text(
        f'id,context,question,answer_text,answer_start\na,"{context}",capital?,Paris,0\nb,"{context}",king?,,\n'
    )
    lines = tmp_path / "flat.jsonl"
    lines.write_text(
        json.dumps(
            {"id": "a", "question": "capital?", "context": context, "answers": {"text": ["Paris"], "answer_start": [0]}}
        )
        + "\n"
        + json.dumps({"id": "b", "question": "king?", "context": context, "answers": {"text": [], "answer_start": []}})
        + "\n"
    )
    for path in (nested, flat, lines):
        read = [(e.id, e.question, e.context, e.answers) for e in read_squad(str(path))]
        assert read == [("a", "capital?", context, (("Paris", 0),)), ("b", "king?", context, ())], path


def test_an_answer_off_its_start_takes_the_nearest_occurrence(tmp_path: Path) -> None:
    path = tmp_path / "off.json"
    context = "the cat and the cat"
    path.write_text(
        json.dumps(
            squad(
                [
                    {
                        "context": context,
                        "qas": [{"id": "x", "question": "q", "answers": [{"text": "cat", "answer_start": 15}]}],
                    }
                ]
            )
        )
    )
    (example,) = read_squad(str(path))
    assert example.answers == (("cat", 16),) and example.moved == 1


BAD_SQUAD = [
    ({"version": "1.1"}, 'not SQuAD JSON: no "data" list'),
    (squad([{"qas": []}]), "data[0].paragraphs[0]: no 'context'"),
    (squad([{"context": "c", "qas": [{"id": "1", "question": "q"}]}]), "data[0].paragraphs[0].qas[0]: no 'answers'"),
    (
        squad(
            [
                {
                    "context": "the cat",
                    "qas": [{"id": "1", "question": "q", "answers": [{"text": "cat", "answer_start": "4"}]}],
                }
            ]
        ),
        "data[0].paragraphs[0].qas[0].answers[0].answer_start: expected an integer, found str",
    ),
    (
        squad(
            [
                {
                    "context": "the cat",
                    "qas": [{"id": "1", "question": "q", "answers": [{"text": "dog", "answer_start": 4}]}],
                }
            ]
        ),
        "answers[0]: answer 'dog' (answer_start 4) is not in the context",
    ),
]


@pytest.mark.parametrize(("doc", "message"), BAD_SQUAD)
def test_malformed_squad_is_one_line_exit_2_and_no_folder(doc: dict, message: str, tmp_path: Path) -> None:
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(doc), encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(["finetune", str(data), "--task", "qa", "-m", str(tmp_path / "no-model-needed"), "-o", str(out)])
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"llmtool: error: {data}: "), line
    assert message in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("bad.csv", "context,question,answer_text,answer_start\nthe cat,q,cat,four\n", ":2: answer_start 'four'"),
        ("bad.csv", "context,question,answer_text\nthe cat,q,cat\n", "answer_start"),
        (
            "bad.jsonl",
            '{"question": "q", "context": "the cat", "answers": {"text": ["cat"], "answer_start": [4]}}\n{oops\n',
            ":2:",
        ),
        ("bad.jsonl", '{"question": "q", "context": "the cat"}\n', ':1: no "answers"'),
        ("bad.json", '{"data": [', ":1:"),
    ],
)
def test_malformed_flat_files_name_the_line(name: str, text: str, where: str, tmp_path: Path) -> None:
    data = tmp_path / name
    data.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_squad(str(data))
    assert where in str(caught.value)
    assert str(caught.value).startswith(str(data))


# --------------------------------------------------------------------------- windows


def test_span_metrics_score_each_windows_best_span_against_its_label() -> None:
    from types import SimpleNamespace

    import numpy as np

    from llmtool.training.recipes.qa import SpanMetrics

    start = np.full((4, 8), -5.0, dtype=np.float32)
    end = np.full((4, 8), -5.0, dtype=np.float32)
    start[0, 2], end[0, 3] = 4, 4  # predicts 2..3, label 2..3: exact
    start[1, 2], end[1, 5] = 4, 4  # predicts 2..5, label 4..5: overlap 2 of 4 and 2 -> F1 2/3
    start[2, 0], end[2, 0] = 9, 9  # predicts none, label none: exact
    start[3, 6], end[3, 6] = 4, 4  # predicts 6..6, label none: 0
    start[3, 7] = end[3, 7] = -100  # padding, as Trainer pads shorter batches: never a span
    labels = (np.array([2, 4, 0, 0]), np.array([3, 5, 0, 0]))
    scores = SpanMetrics()(SimpleNamespace(predictions=(start, end), label_ids=labels))
    assert scores["span_exact"] == pytest.approx(2 / 4)
    assert scores["span_f1"] == pytest.approx((1 + 2 / 3 + 1 + 0) / 4)
    assert SpanMetrics(longest=2).best_span(start[1], end[1]) != (2, 5)  # longer than 2 tokens: not taken


def test_answer_tokens_follow_run_qa() -> None:
    # [CLS] q [SEP] "the" "cat" "sat" [SEP]; the context's characters: the(0-3) cat(4-7) sat(8-11)
    sequence = [None, 0, None, 1, 1, 1, None]
    offsets = [(0, 0), (0, 1), (0, 0), (0, 3), (4, 7), (8, 11), (0, 0)]
    assert answer_tokens(sequence, offsets, 4, 3) == (4, 4)  # "cat"
    assert answer_tokens(sequence, offsets, 4, 7) == (4, 5)  # "cat sat"
    assert answer_tokens(sequence, offsets, 20, 3) == (0, 0)  # not in this window: CLS
    assert answer_tokens(sequence, offsets, -1, 0) == (0, 0)  # no answer: CLS


# --------------------------------------------------------------------------- a tiny model trained here

CAPITALS = [("france", "paris"), ("germany", "berlin"), ("italy", "rome"), ("spain", "madrid"), ("japan", "tokyo")]
FILLER = ["the dog was happy .", "the cat lived in a house .", "the king lived in a castle .", "it was a great movie ."]


def capital_rows(seed: int, n: int, filler: int = 2) -> list[dict]:
    """Contexts with one capital among filler sentences; the question asks for it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        country, city = rng.choice(CAPITALS)
        parts = [rng.choice(FILLER) for _ in range(filler)]
        parts.insert(rng.randrange(len(parts) + 1), f"the capital of {country} is {city} .")
        context = " ".join(parts)
        start = context.index(f" is {city}") + 4
        rows.append(
            {
                "id": f"{seed}-{i}",
                "question": "what is the capital ?",
                "context": context,
                "answers": {"text": [city], "answer_start": [start]},
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_a_tiny_model_trained_here_answers_even_in_a_second_window(tmp_path: Path, models_dir: Path) -> None:
    base = tiny_models.build_bert(models_dir / "qa-train-base")
    train = write_jsonl(tmp_path / "train.jsonl", capital_rows(0, 300))
    dev = write_jsonl(tmp_path / "dev.jsonl", capital_rows(1, 30))
    out = tmp_path / "qa-model"
    trained = run_cli(
        [
            "finetune",
            str(train),
            "--task",
            "qa",
            "-m",
            str(base),
            "-o",
            str(out),
            "--max-steps",
            "200",
            "--lr",
            "3e-3",
            "-q",
            "--json",
        ]
    )
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads(trained.stdout)  # the best checkpoint by span F1 over the validation windows
    assert metrics["best_metric"] == "span_f1" and metrics["valid"]["span_f1"] >= 0.8, metrics
    best = max(metrics["history"], key=lambda h: h["span_f1"])
    assert metrics["valid"]["span_f1"] == best["span_f1"] and 0 <= best["span_exact"] <= best["span_f1"] <= 1
    judged = run_cli(["evaluate", str(dev), "-m", str(out), "--json"])
    assert judged.returncode == 0, judged.stderr
    result = json.loads(judged.stdout)
    assert result["task"] == "qa" and result["examples"] == 30
    assert result["exact_match"] >= 80, result
    # a context three windows long, the capital near its end: found in the last window, on both engines
    long = " ".join(["the dog was happy ."] * 12 + ["the capital of italy is rome ."])
    rows = json.dumps({"question": "what is the capital ?", "context": long}) + "\n"
    for engine in ("torch", "ctranslate2"):
        from conftest import cli_env

        asked = run_cli(
            ["qa", "-m", str(out), "--json", "--max-length", "32"], input=rows, env=cli_env(LLMTOOL_ENGINE=engine)
        )
        assert asked.returncode == 0, asked.stderr
        answer = json.loads(asked.stdout)
        assert answer["answer"] == "rome" and long[answer["start"] : answer["end"]] == "rome"


@pytest.mark.slow
def test_lora_for_qa(tmp_path: Path, models_dir: Path) -> None:
    base = tiny_models.build_bert(models_dir / "qa-lora-base")
    train = write_jsonl(tmp_path / "train.jsonl", capital_rows(2, 40))
    out = tmp_path / "adapter"
    args = ["finetune", str(train), "--task", "qa", "-m", str(base), "-o", str(out), "--lora", "--max-steps", "4", "-q"]
    trained = run_cli(args)
    assert trained.returncode == 0, trained.stderr
    assert (out / "adapter_config.json").is_file()
    asked = run_cli(["qa", "-m", str(out), "--json"], input=json.dumps(capital_rows(3, 1)[0]) + "\n")
    assert asked.returncode == 0, asked.stderr
    answer = json.loads(asked.stdout)
    context = capital_rows(3, 1)[0]["context"]
    assert context[answer["start"] : answer["end"]] == answer["answer"]


def test_dry_run_reports_qa_windows(tmp_path: Path, tiny_bert: Path) -> None:
    """--dry-run counts the windows training makes (long contexts make several), not the rows."""
    train = write_jsonl(tmp_path / "train.jsonl", capital_rows(4, 20, filler=8))  # contexts of ~60 tokens
    common = ["finetune", str(train), "--task", "qa", "-m", str(tiny_bert), "--max-length", "40", "--valid-split", "0"]
    result = run_cli([*common, "-o", str(tmp_path / "o"), "--dry-run", "--json"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "qa" and report["rows"]["train"] == 20
    assert not (tmp_path / "o").exists()
    trained = run_cli([*common, "-o", str(tmp_path / "t"), "--max-steps", "1", "--json"])
    assert trained.returncode == 0, trained.stderr
    record = json.loads((tmp_path / "t" / "llmtool_settings.json").read_text(encoding="utf-8"))
    windows = record["examples"]["train"]
    assert report["steps"]["examples"] == windows > 20

    # --doc-stride 19 (the default here: 13): windows that share more tokens move on less, so more of them
    closer = run_cli([*common, "-o", str(tmp_path / "o"), "--dry-run", "--json", "--doc-stride", "19"])
    assert closer.returncode == 0, closer.stderr
    assert json.loads(closer.stdout)["steps"]["examples"] > windows
    for extra, message in (
        (["--doc-stride", "20"], "--doc-stride 20: must be at least 0 and less than half the 40-token window"),
        (["--doc-stride", "-1"], "--doc-stride -1: must be at least 0 and less than half the 40-token window"),
    ):
        refused = run_cli([*common, "-o", str(tmp_path / "o"), *extra])
        assert refused.returncode == 2 and refused.stderr.splitlines()[-1] == f"llmtool: error: {message}"
        assert not (tmp_path / "o").exists()
    other = run_cli(["finetune", str(train), "-m", str(tiny_bert), "-o", str(tmp_path / "o"), "--doc-stride", "8"])
    assert other.returncode == 2 and "--doc-stride goes with --task qa" in other.stderr


def test_resume_continues_from_the_checkpoint(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", capital_rows(5, 30))
    out = tmp_path / "resumed"
    common = ["finetune", str(train), "--task", "qa", "-m", str(tiny_bert), "-o", str(out), "--save-steps", "2"]
    first = run_cli([*common, "--max-steps", "4", "--keep-checkpoints"])
    assert first.returncode == 0, first.stderr
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    again = run_cli([*common, "--max-steps", "6", "--resume", "--json"])
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr and "checkpoint-4" in again.stderr
    assert json.loads(again.stdout)["train"]["steps"] == 6


# --------------------------------------------------------------------------- Chinese: CMRC 2018


def chinese_bert(folder: Path, texts: list[str]) -> Path:
    """A tiny BERT QA model whose vocabulary holds every character of ``texts`` (one token each, as
    bert-base-chinese), so offsets map characters one to one."""
    chars = sorted({c for t in texts for c in t.lower() if not c.isspace()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    return tiny_models.bert_from_vocab(folder, vocab, "BertForQuestionAnswering", positions=128)


@pytest.mark.slow
def test_cmrc2018_offsets_are_exact_in_training_windows_and_answers(shared_data: Path, models_dir: Path) -> None:
    from transformers import AutoTokenizer

    from llmtool.tasks.evaluate_qa import warnings
    from llmtool.training.qa_data import WindowEncoder, rows_of

    path = shared_data / "qa" / "cmrc2018" / "trial.json"
    examples = read_squad(str(path))
    assert [w.split(";")[0] for w in warnings(examples)] == [
        "2 empty questions were left out",
        "5 answers were not at their answer_start",
    ]
    for e in examples:
        for text, start in e.answers:
            assert e.context[start : start + len(text)] == text
    chosen = [e for e in examples if e.question][:20]
    model = chinese_bert(models_dir / "cmrc-bert", [t for e in chosen for t in (e.question, e.context)])
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    rows = list(rows_of(chosen))
    batch = {key: [r[key] for r in rows] for key in rows[0]}
    windows = WindowEncoder(tokenizer, 128)(batch)
    again = tokenizer(batch["question"], batch["context"], truncation="only_second", max_length=128, stride=42,
                      return_overflowing_tokens=True, return_offsets_mapping=True)  # fmt: skip
    assert again["input_ids"] == windows["input_ids"]
    labelled = 0
    for w, (s, e) in enumerate(zip(windows["start_positions"], windows["end_positions"], strict=True)):
        if s == 0:
            continue
        labelled += 1
        row = rows[again["overflow_to_sample_mapping"][w]]
        offsets = again["offset_mapping"][w]
        assert row["context"][offsets[s][0] : offsets[e][1]] == row["answer_text"]  # the exact characters
    assert labelled >= len(rows)  # every answer is labelled in at least one window
    lines = "".join(
        json.dumps({"question": e.question, "context": e.context}, ensure_ascii=False) + "\n" for e in chosen[:5]
    )
    for engine in ("torch", "ctranslate2"):
        from conftest import cli_env

        asked = run_cli(["qa", "-m", str(model), "--json", "-k", "3"], input=lines, env=cli_env(LLMTOOL_ENGINE=engine))
        assert asked.returncode == 0, asked.stderr
        for answer in map(json.loads, asked.stdout.splitlines()):
            assert chosen[answer["index"]].context[answer["start"] : answer["end"]] == answer["answer"]
