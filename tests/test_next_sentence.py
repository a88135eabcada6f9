"""`llmtool next-sentence` against BERT's NSP head run directly, on a tiny BertForPreTraining."""

from __future__ import annotations

import csv
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


PAIRS = [
    ("i love this film", "it was a great movie"),
    ("i love this film", "a sad day"),
    ("the dog", "the cat"),
    ("once upon a time there lived a king", "the capital of france is paris and the capital of italy is rome"),
    ("bad", "terrible"),
    (tiny_models.CORPUS[-1], tiny_models.CORPUS[-1]),  # longer than 64 positions together: truncated
    ("it was a good movie", "i hate this film"),
]


@pytest.fixture(scope="module")
def nsp_model(models_dir: Path) -> Path:
    return tiny_models.build_bert_pretraining(models_dir / "bert-pretraining")


def direct(folder: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """P(is next) from plain Transformers, one pair at a time."""
    import torch
    from transformers import AutoTokenizer, BertForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = BertForPreTraining.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        return [
            model(**tokenizer(a, b, truncation="longest_first", max_length=64, return_tensors="pt"))
            .seq_relationship_logits.softmax(-1)[0, 0]
            .item()
            for a, b in pairs
        ]


def test_tsv_stdin_matches_direct_computation(nsp_model: Path) -> None:
    lines = "".join(f"{a}\t{b}\n" for a, b in PAIRS)
    result = run_cli(["next-sentence", "-m", str(nsp_model), "--json", "-b", "2"], input=lines)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = direct(nsp_model, PAIRS)
    assert [(r["index"], r["first"], r["second"]) for r in records] == [(i, a, b) for i, (a, b) in enumerate(PAIRS)]
    for record, p in zip(records, expected, strict=True):
        assert record["is_next"] == pytest.approx(p, abs=1e-5)
    assert max(expected) - min(expected) > 0.3  # the pairs really get different answers


def test_two_arguments_text_format(nsp_model: Path) -> None:
    result = run_cli(["next-sentence", "-m", str(nsp_model), "i love this film", "it was a great movie"])
    assert result.returncode == 0, result.stderr
    p = direct(nsp_model, [PAIRS[0]])[0]
    assert result.stdout == f"{p:.4f}\ti love this film\tit was a great movie\n"
    assert result.stderr == ""


def test_csv_columns_chosen_by_name(nsp_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.csv"
    with data.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "second_sentence", "first_sentence"])
        writer.writerows([[i, b, a] for i, (a, b) in enumerate(PAIRS[:4])])
    result = run_cli(
        [
            "next-sentence",
            "-m",
            str(nsp_model),
            "-i",
            str(data),
            "--first-column",
            "first_sentence",
            "--second-column",
            "second_sentence",
            "-f",
            "tsv",
        ]
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert rows[0] == ["index", "is_next", "first", "second"]
    for row, (a, b), p in zip(rows[1:], PAIRS[:4], direct(nsp_model, PAIRS[:4]), strict=True):
        assert row[2:] == [a, b]
        assert float(row[1]) == pytest.approx(p, abs=1e-5)


def test_bad_lines_and_models_without_the_head(nsp_model: Path, tiny_bert: Path, tiny_gpt2: Path) -> None:
    no_tab = run_cli(["next-sentence", "-m", str(nsp_model)], input="the dog\tthe cat\nno tab here\n")
    assert no_tab.returncode == 2
    assert no_tab.stderr == "llmtool: error: <stdin>:2: expected A<TAB>B, found no tab\n"

    mlm_only = run_cli(["next-sentence", "-m", str(tiny_bert), "a", "b"])
    assert mlm_only.returncode == 3
    assert mlm_only.stderr.startswith(f"llmtool: error: {tiny_bert} (BertForMaskedLM) has no trained next-sentence")
    assert "llmtool pretrain --objective mlm --nsp" in mlm_only.stderr

    gpt2 = run_cli(["next-sentence", "-m", str(tiny_gpt2), "a", "b"])
    assert gpt2.returncode == 3
    assert gpt2.stderr.startswith(f"llmtool: error: {tiny_gpt2} (GPT2LMHeadModel) has no next-sentence head")

    one = run_cli(["next-sentence", "-m", str(nsp_model), "only one sentence"])
    assert one.returncode == 2
    assert one.stderr == "llmtool: error: give two sentences, A and B (or A<TAB>B lines on stdin)\n"
