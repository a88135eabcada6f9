"""Training defaults that hold on corpora the plan was not tuned on (issue 21): the fine-tuning rate of
the small models ``pretrain`` makes, and the layout of a corpus written without spaces."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, run_cli

from llmtool.settings import FinetuneSettings
from llmtool.training.defaults import PRETRAINED_MIN_STEPS
from llmtool.training.finetune import PreTraining, finetune_batch, finetune_rate, training_plan
from llmtool.training.pretrain_data import estimated_tokens

ENV = cli_env(OMP_NUM_THREADS="1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ beside tests/

from bench.learns import CAPITALS_ZH, FORMS_ZH, capitals_zh, capitals_zh2  # noqa: E402


def test_the_size_rule_goes_on_below_minilm() -> None:
    assert finetune_rate(487_358, None) == (1e-3, "for 0.5M parameters")  # pretrain --size tiny
    assert finetune_rate(5_500_000, None)[0] == 5e-4  # GPT-2 mini
    assert finetune_rate(22_700_000, None)[0] == 1e-4  # all-MiniLM-L6-v2: as measured on SST-2
    assert finetune_rate(110_000_000, None)[0] == 5e-5  # BERT-base
    assert finetune_rate(340_000_000, None)[0] == 2e-5  # BERT-large


def test_a_model_llmtool_pretrained_is_finetuned_at_half_its_rate() -> None:
    assert finetune_rate(487_358, 2e-3) == (1e-3, "0.5 x the base model's pre-training rate")


def test_a_model_llmtool_pretrained_is_finetuned_with_the_batch_it_was_pretrained_with() -> None:
    assert finetune_batch(108, 32) == 32  # with 1e-3 on 120 QA rows, 300 steps: batch 8 52%, 16 74%, 32 90%
    assert finetune_batch(108, 96) == 32  # mlm lines pre-train 96 a step: at most 32
    assert finetune_batch(108, None) == 8  # another model: the size rule for small data (SST-2, MiniLM)
    assert finetune_batch(5_000, None) == 16


def test_a_model_llmtool_pretrained_is_finetuned_like_it_was_pretrained() -> None:
    """Half its rate, its batch, and enough steps to learn small data: 120 QA rows, no flags."""
    settings = FinetuneSettings(task="clm", prompt_column="question", response_column="answer")
    resolved, plan = training_plan(settings, 610_432, 120, 0, PreTraining(2e-3, 32))
    assert (plan.lr, plan.batch_size, plan.steps) == (1e-3, 32, PRETRAINED_MIN_STEPS), plan
    assert plan.lr_from == "0.5 x the base model's pre-training rate"
    assert resolved.max_steps == PRETRAINED_MIN_STEPS
    _, other = training_plan(settings, 610_432, 120, 0, None)  # not one llmtool made: the size rule, as before
    assert (other.lr, other.batch_size, other.steps) == (1e-3, 8, 150), other


def _qa_file(path: Path, rows: int) -> Path:
    path.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}."}) + "\n" for i in range(rows)))
    return path


def test_prompt_response_rows_too_few_for_a_useful_split_all_train(tiny_gpt2: Path, tmp_path: Path) -> None:
    """10% of 120 rows is 12 answers never trained and a loss too noisy to pick a checkpoint by: every row
    trains (and the last model is kept); 10% of 300 rows (30) is split off as before."""
    args = ["finetune", "--task", "clm", "--model", str(tiny_gpt2), "--prompt-column", "question",
            "--response-column", "answer", "--output", str(tmp_path / "out"), "--dry-run", "--json"]  # fmt: skip
    small = json.loads(run_cli([*args, str(_qa_file(tmp_path / "small.jsonl", 120))], env=ENV).stdout)
    assert small["rows"] == {"train": 120, "valid": 0}, small
    assert small["valid"].startswith("none: 10% of 120 rows is under 20"), small["valid"]
    assert not small["warnings"], small["warnings"]
    large = json.loads(run_cli([*args, str(_qa_file(tmp_path / "large.jsonl", 300))], env=ENV).stdout)
    assert large["rows"] == {"train": 270, "valid": 30}, large
    given = json.loads(run_cli([*args, str(tmp_path / "small.jsonl"), "--valid-split", "0.2"], env=ENV).stdout)
    assert given["rows"] == {"train": 96, "valid": 24}, given


def test_the_training_run_plans_prompt_response_rows_one_per_example(tiny_gpt2: Path, tmp_path: Path) -> None:
    """The run's plan line said "packed blocks" for conversations (never packed); --dry-run was right."""
    args = ["finetune", str(_qa_file(tmp_path / "qa.jsonl", 40)), "--task", "clm", "--model", str(tiny_gpt2),
            "--prompt-column", "question", "--response-column", "answer", "--max-steps", "1",
            "--output", str(tmp_path / "out")]  # fmt: skip
    result = run_cli(args, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "plan: one row per example, 40 training examples;" in result.stderr, result.stderr


def test_tokens_are_estimated_alike_with_and_without_spaces() -> None:
    assert estimated_tokens("The capital of France is Paris.") == 8  # 6 words, about 1.3 tokens each
    assert estimated_tokens("法国的首都是巴黎。") == 9  # a token per character
    assert estimated_tokens("巴黎 is 法国的首都") == 8


@pytest.mark.parametrize("corpus", [capitals_zh, capitals_zh2])
def test_a_chinese_corpus_of_short_lines_is_one_line_per_example(tmp_path: Path, corpus: Any) -> None:
    """72 lines of 8-12 characters (and another 72 of 9-17): one line per example, as for an English corpus of
    that shape (the plan used to pack them into 15 blocks and then warn against its own choice)."""
    lines, _ = corpus(0)
    assert corpus is capitals_zh2 or len(lines) == len(CAPITALS_ZH) * (len(FORMS_ZH) - 1)
    corpus = tmp_path / "capitals.txt"
    corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    result = run_cli(["pretrain", str(corpus), "--objective", "mlm", "--dry-run", "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["plan"]["layout"].startswith("one line per example"), report["plan"]
    assert not report["plan"]["warnings"]
    assert not (tmp_path / "out").exists()


def test_the_plan_says_where_the_finetuning_rate_comes_from(tiny_gpt2: Path, tmp_path: Path) -> None:
    rows = tmp_path / "qa.jsonl"
    rows.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}."}) + "\n" for i in range(40)))
    args = ["finetune", str(rows), "--task", "clm", "--model", str(tiny_gpt2), "--prompt-column", "question",
            "--response-column", "answer", "--output", str(tmp_path / "out"), "--dry-run"]  # fmt: skip
    result = run_cli(args, env=ENV)
    assert result.returncode == 0, result.stderr
    assert "plan     lr 0.001 (for 0." in result.stdout and "M parameters)" in result.stdout, result.stdout


@pytest.mark.slow
def test_a_tiny_gpt2_pretrained_here_then_finetuned_on_questions_answers_them(tmp_path: Path) -> None:
    """The issue's case: pretrain --size tiny (no flags), then finetune on 120 prompt/response rows with
    --max-steps 300 and no --lr; the rate 1e-4 of the old size rule left every answer the same word.
    With the base's rate (1e-3) but batch 8 and 12 rows held out for validation, 45% were answered; with its
    batch (32) and every row trained, 90% (2026-12-05, bench.learns --corpus qa, seed 0)."""
    import argparse

    from bench.learns import run_qa

    result = run_qa(tmp_path, argparse.Namespace(people=40, seed=0, extra=[]))
    assert "pre-training rate" in result["plan"] and "one row per example" in result["plan"], result
    assert "batch 32," in result["plan"], result
    assert result["answered"] >= 0.8, result
