"""`llmtool score` against a direct computation with the model, for short and long texts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import tiny_models
from conftest import run_cli


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny models gain nothing from threads, and on a busy 2-core machine threads contending for
    cores made these runs 2-20x slower; the llmtool subprocesses inherit this (see cli_env)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


SHORT = ["The capital of France is Paris.", "Once upon a time", "a", "It was a great movie and I love the story."]
# Longer than both tiny models' contexts (GPT-2: 128 positions, BERT: 64): scored in windows.
LONG = " ".join(tiny_models.CORPUS * 3)


def causal_direct(folder: Path, text: str, window: int | None = None, stride: int | None = None) -> tuple[float, int]:
    """log P(text) with BOS first: one forward pass, or the HF sliding-window recipe when windowed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    window = window or len(ids)
    stride = stride or window
    total, scored, prev_end = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            chunk = torch.tensor([ids[begin:end]])
            logprobs = model(chunk).logits[0].log_softmax(-1)
            for t in range(max(prev_end, begin + 1), end):  # each token once, given the window before it
                total += logprobs[t - begin - 1, ids[t]].item()
                scored += 1
            prev_end = end
            if end == len(ids):
                break
    return total, scored


def masked_direct(folder: Path, text: str, window: int = 62, stride: int = 31) -> tuple[float, int]:
    """Pseudo-log-likelihood: mask each token in turn ([CLS] window [SEP]), one at a time."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForMaskedLM.from_pretrained(str(folder)).eval()
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    total, prev_end = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            for t in range(prev_end, end):
                row = [tokenizer.cls_token_id, *ids[begin:end], tokenizer.sep_token_id]
                row[1 + t - begin] = tokenizer.mask_token_id
                logprobs = model(torch.tensor([row])).logits[0, 1 + t - begin].log_softmax(-1)
                total += logprobs[ids[t]].item()
            prev_end = end
            if end == len(ids):
                break
    return total, len(ids)


def records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_causal_scores_equal_direct_computation(tiny_gpt2: Path) -> None:
    texts = [*SHORT, LONG]
    result = run_cli(["score", "-m", str(tiny_gpt2), "--json", "--total", "-b", "2"], input="\n".join(texts))
    assert result.returncode == 0, result.stderr
    out = records(result.stdout)
    assert len(out) == len(texts) + 1
    for i, (record, text) in enumerate(zip(out, texts, strict=False)):
        # Default window: the model's 128 positions, stride 64 (only LONG needs more than one).
        ll, n = causal_direct(tiny_gpt2, text, 128, 64)
        assert record["index"] == i and record["input"] == text
        assert record["tokens"] == n
        assert record["log_likelihood"] == pytest.approx(ll, abs=1e-4)
        assert record["perplexity"] == pytest.approx(math.exp(-ll / n), rel=1e-4)
    assert out[-2]["tokens"] > 128  # the long text really was longer than the context
    total = out[-1]
    assert total["total"] is True and total["lines"] == len(texts)
    assert total["tokens"] == sum(r["tokens"] for r in out[:-1])
    assert total["log_likelihood"] == pytest.approx(sum(r["log_likelihood"] for r in out[:-1]), abs=1e-6)
    assert total["perplexity"] == pytest.approx(math.exp(-total["log_likelihood"] / total["tokens"]), rel=1e-9)


def test_stride_and_text_format(tiny_gpt2: Path) -> None:
    # A small window and stride: many windows per text, each token still scored exactly once.
    result = run_cli(
        ["score", "-m", str(tiny_gpt2), "--max-length", "20", "--stride", "7", "--total"], input=f"{SHORT[0]}\n{LONG}\n"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = [causal_direct(tiny_gpt2, t, 20, 7) for t in (SHORT[0], LONG)]
    for line, text, (ll, n) in zip(lines, (SHORT[0], LONG), expected, strict=False):
        ppl, got_ll, tokens, echoed = line.split("\t")
        assert (float(got_ll), int(tokens), echoed) == (pytest.approx(ll, abs=1e-3), n, text)
        assert float(ppl) == pytest.approx(math.exp(-ll / n), rel=1e-3)
    total_ll, total_n = sum(e[0] for e in expected), sum(e[1] for e in expected)
    assert lines[2].split("\t")[2:] == [str(total_n), "total"]
    assert float(lines[2].split("\t")[0]) == pytest.approx(math.exp(-total_ll / total_n), rel=1e-3)


def test_masked_pseudo_likelihood_equals_direct_computation(tiny_bert: Path) -> None:
    texts = [SHORT[0], SHORT[3], LONG]
    result = run_cli(["score", "-m", str(tiny_bert), "--json", "-b", "16"], input="\n".join(texts) + "\n")
    assert result.returncode == 0, result.stderr
    out = records(result.stdout)
    assert len(out) == 3
    for record, text in zip(out, texts, strict=True):
        ll, n = masked_direct(tiny_bert, text)  # windows of 64 - 2 text tokens, stride 31
        assert record["tokens"] == n
        assert record["log_likelihood"] == pytest.approx(ll, abs=1e-4)
    assert out[-1]["tokens"] > 64


def test_errors(tiny_gpt2: Path, models_dir: Path) -> None:
    one_token = run_cli(["score", "-m", str(tiny_gpt2), "--no-bos"], input="The capital of France\na\n")
    assert one_token.returncode == 2
    assert one_token.stderr.strip() == (
        "llmtool: error: <stdin>:2: nothing to score: one token, and --no-bos leaves the first token without context"
    )
    assert len(one_token.stdout.splitlines()) == 1  # the line before was scored and written

    classifier = tiny_models.build_bert_classifier(models_dir / "score-classifier", steps=0)
    wrong = run_cli(["score", "-m", str(classifier), "some text"])
    assert wrong.returncode == 3
    assert wrong.stderr.strip() == (
        f"llmtool: error: {classifier} (BertForSequenceClassification) is not a causal or masked language model"
    )
    stride = run_cli(["score", "-m", str(tiny_gpt2), "--max-length", "16", "--stride", "16", "text"])
    assert stride.returncode == 2
    assert stride.stderr.strip() == "llmtool: error: --stride must be below the window (--max-length 16)"


def test_python_api_names_stay_functions_after_submodule_imports() -> None:
    import llmtool
    import llmtool.tasks.evaluate  # imports llmtool.tasks.score and llmtool.tasks.classify, the modules
    import llmtool.tasks.score

    assert callable(llmtool.score) and callable(llmtool.classify) and callable(llmtool.next_sentence)
    assert llmtool.score.__module__ == "llmtool.tasks.score"


@pytest.mark.parametrize("command", ["classify", "evaluate", "score", "next-sentence"])
def test_help_of_the_inference_commands_imports_no_heavy_library(command: str) -> None:
    import subprocess
    import sys

    from conftest import cli_env, llmtool_executable

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", llmtool_executable(), command, "--help"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "datasets", "accelerate", "tokenizers"}
    assert "Example:" in proc.stdout
