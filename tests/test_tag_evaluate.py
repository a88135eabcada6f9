"""Entity-level evaluation of token classifiers: the measure equals ``seqeval``'s (conlleval mode and strict
IOB2, per type and averaged), and ``llmtool evaluate`` on a tagger equals seqeval on predictions made
independently with Transformers (each word's first subword), on both engines and in every data format."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import Any

import pytest
import tiny_models
from conftest import cli_env, run_cli

from llmtool.tasks.tag_scores import entity_scores

seqeval = pytest.importorskip("seqeval", reason="the independent measure: pip install 'llmtool[test]'")

TAGS = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG", "E-PER", "S-LOC"]
IOB2_TAGS = ["O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]


def sequences(rng: random.Random, tags: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    gold = [[rng.choice(tags) for _ in range(rng.randint(0, 12))] for _ in range(rng.randint(1, 6))]
    predicted = [[rng.choice(tags) if rng.random() < 0.4 else t for t in g] for g in gold]
    return gold, predicted


@pytest.mark.parametrize("strict", [False, True])
def test_scores_equal_seqeval(strict: bool) -> None:
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rng = random.Random(7)
    kwargs: dict[str, Any] = {"mode": "strict", "scheme": IOB2} if strict else {}
    for _ in range(300):
        gold, predicted = sequences(rng, IOB2_TAGS if strict else TAGS)
        ours = entity_scores(gold, predicted, strict=strict)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report = classification_report(gold, predicted, output_dict=True, zero_division=0, **kwargs)
            assert ours["f1"] == pytest.approx(f1_score(gold, predicted, zero_division=0, **kwargs), abs=1e-12)
            assert ours["precision"] == pytest.approx(precision_score(gold, predicted, zero_division=0, **kwargs))
            assert ours["recall"] == pytest.approx(recall_score(gold, predicted, zero_division=0, **kwargs))
        for kind, scores in ours["per_type"].items():
            assert scores["f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-12)
            assert scores["support"] == report[kind]["support"]
        if ours["per_type"]:
            assert ours["macro_f1"] == pytest.approx(report["macro avg"]["f1-score"], abs=1e-12)


SENTENCES = [
    (["the", "king", "lived", "in", "paris", "."], ["O", "B-PER", "O", "O", "B-LOC", "O"]),
    (["queen", "anne", "of", "spain", "and", "rome"], ["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC"]),
    (["a", "blue", "castle", "in", "tokyo"], ["O", "O", "B-ORG", "O", "B-LOC"]),
    (
        ["kings", "ran", "to", "berlin", "and", "madrid", "with", "the", "dogs"],
        ["B-PER", "O", "O", "B-LOC"] + ["O"] * 5,
    ),
]


@pytest.fixture(scope="module")
def tagger(models_dir: Path) -> Path:
    return tiny_models.build_token_classifier(models_dir / "tag-evaluate", tiny_models.build_bert, scale=8.0)


def independent_f1(folder: Path) -> dict[str, float]:
    """seqeval on Transformers' predictions: each word labelled by its first subword (run_ner's way)."""
    import torch
    from seqeval.metrics import f1_score, precision_score, recall_score
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForTokenClassification.from_pretrained(str(folder)).eval()
    predicted = []
    for words, _ in SENTENCES:
        encoded = tokenizer(words, is_split_into_words=True, return_tensors="pt")
        with torch.inference_mode():
            labels = model(**encoded).logits[0].argmax(-1).tolist()
        firsts: dict[int, int] = {}
        for position, word in enumerate(encoded.word_ids()):
            if word is not None and word not in firsts:
                firsts[word] = labels[position]
        predicted.append([model.config.id2label[firsts[w]] for w in range(len(words))])
    gold = [tags for _, tags in SENTENCES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "f1": f1_score(gold, predicted, zero_division=0),
            "precision": precision_score(gold, predicted, zero_division=0),
            "recall": recall_score(gold, predicted, zero_division=0),
        }


def write_formats(folder: Path) -> dict[str, Path]:
    conll = folder / "dev.conll"
    conll.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(ws, ts, strict=True)) + "\n" for ws, ts in SENTENCES))
    tokens = folder / "dev.jsonl"
    tokens.write_text("".join(json.dumps({"tokens": ws, "tags": ts}) + "\n" for ws, ts in SENTENCES))
    spans = folder / "spans.jsonl"
    lines = []
    for words, tags in SENTENCES:
        text, at, found = " ".join(words), 0, []
        for word, tag in zip(words, tags, strict=True):
            if tag.startswith("B-"):
                found.append([at, at + len(word), tag[2:]])
            elif tag.startswith("I-"):
                found[-1][1] = at + len(word)
            at += len(word) + 1
        lines.append(json.dumps({"text": text, "label": found}) + "\n")
    spans.write_text("".join(lines))
    return {"conll": conll, "tokens": tokens, "spans": spans}


def test_evaluate_equals_seqeval_on_independent_predictions(tagger: Path, tmp_path: Path) -> None:
    expected = independent_f1(tagger)
    files = write_formats(tmp_path)
    env = cli_env(LLMTOOL_CACHE=str(tmp_path / "cache"))
    results = {}
    for name, path in files.items():
        for engine in ("torch", "ctranslate2"):
            run = run_cli(["evaluate", str(path), "-m", str(tagger), "--json", "--engine", engine], env=env)
            assert run.returncode == 0, run.stderr
            results[name, engine] = json.loads(run.stdout)
    for result in results.values():
        assert result["task"] == "tagging" and result["sentences"] == len(SENTENCES)
        assert result["measure"].startswith("conlleval")
        for key in ("f1", "precision", "recall"):
            assert result[key] == pytest.approx(expected[key], abs=1e-9)
    assert expected["f1"] > 0  # the random tagger finds some entities, so the comparison means something


def test_text_and_tsv_reports(tagger: Path, tmp_path: Path) -> None:
    conll = write_formats(tmp_path)["conll"]
    text = run_cli(["evaluate", str(conll), "-m", str(tagger)])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"sentences: {len(SENTENCES)}" and lines[1] == "entities: 9"
    assert any(line.startswith("measure: conlleval") for line in lines)
    assert "type  precision  recall  f1      support" in lines
    tsv = run_cli(["evaluate", str(conll), "-m", str(tagger), "-f", "tsv"])
    assert tsv.stdout.splitlines()[0] == "metric\tlabel\tpredicted\tvalue"
    assert any(line.startswith("f1\tLOC\t\t") for line in tsv.stdout.splitlines())


def test_long_sentences_are_scored_in_windows(tagger: Path, tmp_path: Path) -> None:
    words = [w for ws, _ in SENTENCES for w in ws] * 3
    tags = [t for _, ts in SENTENCES for t in ts] * 3
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"tokens": words, "tags": tags}) + "\n")
    whole = run_cli(["evaluate", str(data), "-m", str(tagger), "--json"])
    windows = run_cli(["evaluate", str(data), "-m", str(tagger), "--json", "--max-length", "16"])
    assert whole.returncode == 0 and windows.returncode == 0, windows.stderr
    a, b = json.loads(whole.stdout), json.loads(windows.stdout)
    assert a["words"] == b["words"] == len(words)
    assert b["accuracy"] > 0.5 * a["accuracy"]  # every word is predicted (none defaults to O for want of a window)
