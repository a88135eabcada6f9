"""`llmtool classify` through the installed CLI, checked against the model run directly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import tiny_models
from conftest import run_cli


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models gain nothing from threads, and on a busy 2-core machine threads contending for
    cores made these runs 2-20x slower; the llmtool subprocesses inherit this (see cli_env)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


TEXTS = [
    "i love this film",
    "it was a terrible movie",
    "the dog",
    "a happy king in a castle with a great story and a good day",
    "bad",
    "the capital of france is paris",
    "i hate the story",
    tiny_models.CORPUS[-1],  # longer than the model's 64 positions: truncated, not an error
]


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> Path:
    return tiny_models.build_bert_classifier(models_dir / "classifier-2")


def direct(folder: Path, texts: list[str], pairs: list[str] | None = None) -> list[list[float]]:
    """Class probabilities from plain Transformers, one input at a time (no batching, no sorting)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    out = []
    with torch.no_grad():
        for i, text in enumerate(texts):
            enc = tokenizer(text, pairs[i] if pairs else None, truncation=True, max_length=64, return_tensors="pt")
            out.append(model(**enc).logits.softmax(-1)[0].tolist())
    return out


def test_batched_stdin_matches_direct_computation_in_input_order(classifier: Path) -> None:
    # batch size 3 over 8 inputs of very different lengths: sorted by length inside, input order outside
    result = run_cli(["classify", "-m", str(classifier), "--json", "-k", "2", "-b", "3"], input="\n".join(TEXTS) + "\n")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = direct(classifier, TEXTS)
    assert [r["index"] for r in records] == list(range(len(TEXTS)))
    assert [r["input"] for r in records] == TEXTS
    names = ["negative", "positive"]
    for record, probs in zip(records, expected, strict=True):
        best = max(range(2), key=lambda i: probs[i])
        assert record["label"] == names[best]
        assert record["score"] == pytest.approx(probs[best], abs=1e-5)
        assert [p["label"] for p in record["predictions"]] == [names[best], names[1 - best]]
        assert [p["id"] for p in record["predictions"]] == [best, 1 - best]
        assert record["predictions"][1]["score"] == pytest.approx(probs[1 - best], abs=1e-5)
    # the tiny model was trained on these words: the user's label names come back, and make sense
    assert records[0]["label"] == "positive" and records[1]["label"] == "negative"


def test_two_arguments_are_a_pair_and_text_prints_label_tab_probability(classifier: Path) -> None:
    result = run_cli(["classify", "-m", str(classifier), "i love this film", "it was a bad movie"])
    assert result.returncode == 0, result.stderr
    probs = direct(classifier, ["i love this film"], ["it was a bad movie"])[0]
    label = ["negative", "positive"][probs.index(max(probs))]
    assert result.stdout == f"{label}\t{max(probs):.4f}\n"
    assert result.stderr == ""


def test_csv_in_csv_out_keeps_rows_and_appends_predictions(classifier: Path, tmp_path: Path) -> None:
    rows = [
        ["1", "i love this film", 'a, quoted "note"'],
        ["2", "it was a terrible movie", "line one\nline two"],
        ["3", "the dog", ""],
    ]
    data = tmp_path / "reviews.csv"
    with data.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "review", "note"], *rows])
    result = run_cli(["classify", "-m", str(classifier), "-i", str(data), "--text-column", "review", "-f", "csv"])
    assert result.returncode == 0, result.stderr
    table = list(csv.reader(io.StringIO(result.stdout)))
    assert table[0] == ["id", "review", "note", "predicted_label", "predicted_score"]
    assert [r[:3] for r in table[1:]] == rows  # quotes, commas and newlines survive the round trip
    expected = direct(classifier, [r[1] for r in rows])
    for row, probs in zip(table[1:], expected, strict=True):
        assert row[3] == ["negative", "positive"][probs.index(max(probs))]
        assert float(row[4]) == pytest.approx(max(probs), abs=1e-5)


def test_sentence_pairs_from_csv_columns(classifier: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.csv"
    firsts, seconds = ["i love this film", "the dog", "bad day"], ["it was a great movie", "the cat", "sad"]
    data.write_text("premise,hypothesis\n" + "".join(f"{a},{b}\n" for a, b in zip(firsts, seconds, strict=True)))
    result = run_cli(
        [
            "classify",
            "-m",
            str(classifier),
            "-i",
            str(data),
            "--text-column",
            "premise",
            "--text-pair-column",
            "hypothesis",
            "--format",
            "tsv",
            "-k",
            "2",
        ]
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "index\trank\tlabel\tlabel_id\tscore\terror"
    expected = direct(classifier, firsts, seconds)
    got = [line.split("\t") for line in lines[1:]]
    assert len(got) == 6
    for i, probs in enumerate(expected):
        top = got[2 * i]
        assert top[:2] == [str(i), "1"]
        assert int(top[3]) == probs.index(max(probs))
        assert float(top[4]) == pytest.approx(max(probs), abs=1e-5)


def test_bad_input_and_wrong_model(classifier: Path, tiny_bert: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("review,label\ngood,1\n,0\nbad,0\n")
    missing = run_cli(["classify", "-m", str(classifier), "-i", str(data), "--text-column", "reveiw"])
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"llmtool: error: {data}:1: no column 'reveiw' (did you mean 'review'?); columns: 'review', 'label'"
    )
    empty = run_cli(["classify", "-m", str(classifier), "-i", str(data), "--text-column", "review"])
    assert empty.returncode == 2
    assert empty.stderr.strip() == f"llmtool: error: {data}:3: empty text in column 'review'"
    assert empty.stdout.splitlines()[0].startswith("positive\t")  # rows before the bad one were written

    skipped = run_cli(["classify", "-m", str(classifier), "-i", str(data), "--skip-invalid", "-f", "csv"])
    assert skipped.returncode == 0, skipped.stderr
    table = list(csv.reader(io.StringIO(skipped.stdout)))
    assert table[0] == ["review", "label", "predicted_label", "predicted_score", "error"]
    assert table[2] == ["", "0", "", "", "empty text in column 'review'"]
    assert table[1][2] == "positive" and table[3][2] == "negative" and table[3][4] == ""

    wrong = run_cli(["classify", "-m", str(tiny_bert), "good"])
    assert wrong.returncode == 3
    assert wrong.stderr.startswith(f"llmtool: error: {tiny_bert} (BertForMaskedLM) has no trained sequence-class")
    assert "llmtool finetune --task classify" in wrong.stderr
    assert wrong.stdout == ""
