"""`llmtool evaluate`: metrics against hand computations, through the installed CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import pty
import subprocess
from pathlib import Path

import pytest
import tiny_models
from conftest import cli_env, llmtool_executable, run_cli

from llmtool.tasks.evaluate import classification_metrics, label_id


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models gain nothing from threads, and on a busy 2-core machine threads contending for
    cores made these runs 2-20x slower; the llmtool subprocesses inherit this (see cli_env)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_metrics_match_a_hand_computation() -> None:
    # gold a: 3 right, 1 taken for b; gold b: 2 right, 2 taken for a; gold c: 1 right; nothing predicted c wrongly
    confusion = [[3, 1, 0], [2, 2, 0], [0, 0, 1]]
    m = classification_metrics(confusion, ["a", "b", "c"])
    assert m["examples"] == 9
    assert m["accuracy"] == pytest.approx(6 / 9)
    # a: precision 3/5, recall 3/4, f1 2*(0.6*0.75)/(1.35) = 2/3
    assert m["per_class"]["a"] == pytest.approx({"precision": 0.6, "recall": 0.75, "f1": 2 / 3, "support": 4})
    # b: precision 2/3, recall 2/4, f1 2*(2/3*1/2)/(7/6) = 4/7
    assert m["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 0.5, "f1": 4 / 7, "support": 4})
    assert m["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 7 + 1) / 3)
    assert m["confusion_matrix"] == confusion


def test_classes_never_seen_do_not_count_in_macro_f1() -> None:
    # class "c" is neither gold nor predicted: listed with zeros, left out of the macro average;
    # class "b" is predicted but never gold: precision 0, and it does count.
    m = classification_metrics([[1, 1, 0], [0, 0, 0], [0, 0, 0]], ["a", "b", "c"])
    assert m["per_class"]["a"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)


def test_labels_may_be_names_or_ids() -> None:
    label2id = {"negative": 0, "positive": 1}
    assert [label_id(v, label2id, 2) for v in ("positive", "0", "1.0", "2", "Positive", "x")] == [
        1,
        0,
        1,
        None,
        None,
        None,
    ]


@pytest.fixture(scope="module")
def classifier3(models_dir: Path) -> Path:
    return tiny_models.build_bert_classifier(models_dir / "classifier-3", ("negative", "neutral", "positive"))


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def predictions(folder: Path, texts: list[str]) -> list[int]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return [int(model(**tokenizer(t, return_tensors="pt")).logits.argmax(-1)) for t in texts]


def test_classifier_metrics_agree_with_direct_predictions(classifier3: Path, tmp_path: Path) -> None:
    examples = tiny_models.sentiment_examples(("negative", "neutral", "positive"))[::2]
    names = ["negative", "neutral", "positive"]
    # gold labels written as names for some rows and as ids for others
    rows = [[text, label if i % 3 else str(names.index(label))] for i, (text, label) in enumerate(examples)]
    data = write_csv(tmp_path / "dev.csv", ["sentence", "label"], rows)
    result = run_cli(["evaluate", str(data), "-m", str(classifier3), "--json", "-b", "4"])
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)

    predicted = predictions(classifier3, [t for t, _ in examples])
    gold = [names.index(label) for _, label in examples]
    confusion = [
        [sum(1 for g, p in zip(gold, predicted, strict=True) if (g, p) == (i, j)) for j in range(3)] for i in range(3)
    ]
    assert got["task"] == "classification" and got["labels"] == names
    assert got["examples"] == len(examples)
    assert got["confusion_matrix"] == confusion
    assert got["accuracy"] == pytest.approx(sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold))
    expected = classification_metrics(confusion, names)
    for name in names:
        assert got["per_class"][name] == pytest.approx(expected["per_class"][name])
    assert got["macro_f1"] == pytest.approx(expected["macro_f1"])
    assert 0 < got["accuracy"] < 1  # the partly trained model makes some mistakes: a real confusion matrix


def test_plain_text_report_for_pipes(models_dir: Path, tmp_path: Path) -> None:
    """The exact plain report. The 2-class model is right on all its training templates, so the
    one row below with a wrong gold label is the only disagreement."""
    classifier = tiny_models.build_bert_classifier(models_dir / "classifier-2-eval")
    rows = [
        ["i love this film", "positive"],
        ["it was a good movie", "positive"],
        ["i hate this film", "negative"],
        ["it was a bad movie", "positive"],
    ]
    data = write_csv(tmp_path / "dev.csv", ["text", "label"], rows)
    result = run_cli(["evaluate", str(data), "-m", str(classifier)])
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "examples: 4\n"
        "accuracy: 0.7500\n"
        "macro-F1: 0.7333\n"
        "\n"
        "label     precision  recall  f1      support\n"
        "negative  0.5000     1.0000  0.6667  1\n"
        "positive  1.0000     0.6667  0.8000  3\n"
        "\n"
        "confusion (rows: true label, columns: predicted)\n"
        "          negative  positive\n"
        "negative  1         0\n"
        "positive  1         2\n"
    )
    assert result.stderr == ""

    # A terminal gets Rich tables (box drawing), with the same numbers.
    main, secondary = pty.openpty()
    with subprocess.Popen(
        [llmtool_executable(), "evaluate", str(data), "-m", str(classifier), "-q"],
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=subprocess.PIPE,
        env=cli_env(),
    ) as proc:
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=300) == 0
    os.close(main)
    shown = b"".join(chunks).decode()
    assert "┏" in shown and "0.7333" in shown and "positive" in shown


def test_unknown_labels_are_reported_before_loading(classifier3: Path, tmp_path: Path) -> None:
    rows = [["good", "positive"], ["bad", "negatve"], ["red", "3"], ["sad", "negatve"]]
    data = write_csv(tmp_path / "dev.csv", ["text", "label"], rows)
    result = run_cli(["evaluate", str(data), "-m", str(classifier3)])
    assert result.returncode == 2
    assert result.stderr == (
        f"llmtool: error: {data}: labels the model does not know: 'negatve' (line 3), '3' (line 4); "
        "its labels (and ids) are 'negative' (0), 'neutral' (1), 'positive' (2)\n"
    )
    no_label = run_cli(["evaluate", str(data), "-m", str(classifier3), "--label-column", "gold"])
    assert no_label.returncode == 2
    assert no_label.stderr == f"llmtool: error: {data}:1: no column 'gold'; columns: 'text', 'label'\n"


def test_language_model_perplexity_on_a_csv_column(tiny_gpt2: Path, tmp_path: Path) -> None:
    texts = ["The capital of France is Paris.", "Once upon a time there lived a king.", "a red dog"]
    data = write_csv(tmp_path / "held_out.csv", ["id", "body"], [[str(i), t] for i, t in enumerate(texts)])
    result = run_cli(["evaluate", str(data), "-m", str(tiny_gpt2), "--text-column", "body", "--json"])
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_gpt2)).eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]])
            logprobs = model(ids).logits[0, :-1].log_softmax(-1)
            total += logprobs.gather(1, ids[0, 1:, None]).sum().item()
            tokens += ids.shape[1] - 1
    assert (got["task"], got["objective"], got["lines"], got["tokens"]) == ("perplexity", "clm", 3, tokens)
    assert got["log_likelihood"] == pytest.approx(total, abs=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(-total / tokens), rel=1e-4)
