"""``llmtool finetune`` end to end: real Trainer runs on tiny local models, through the installed CLI.

Each run trains for a few seconds; most of a test's time is the CLI importing torch and
transformers. OMP_NUM_THREADS=1 because tiny models gain nothing from threads, and on a busy
machine competing OpenMP threads make a step forty times slower.
"""

from __future__ import annotations

import json
import math
import os
import pty
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import cli_env, llmtool_executable, run_cli
from synthetic import sentiment_rows, story_lines, write_sentiment_csv, write_stories

from llmtool.training.finetune import format_report

ENV = cli_env(OMP_NUM_THREADS="1")
MODEL_FILES = {"config.json", "llmtool_settings.json", "metrics.json", "model.safetensors", "tokenizer_config.json"}


def assert_clean_model_folder(out: Path) -> None:
    """The model, tokenizer and the two JSON files; no checkpoints, lock, cache, pickles or leftovers."""
    names = {p.name for p in out.iterdir()}
    assert names >= MODEL_FILES, names
    assert not {n for n in names if n.startswith(".") or n.endswith((".bin", ".pt", ".pth"))}, names
    assert "checkpoints" not in names
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


def test_classify_learns_and_keeps_the_users_label_names(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 600, seed=1)
    out = tmp_path / "sentiment-model"
    args = ["finetune", str(train), "--model", str(tiny_bert), "--output", str(out)]
    result = run_cli([*args, "--epochs", "4", "--lr", "3e-3", "--batch-size", "16", "--json"], env=ENV)
    assert result.returncode == 0, result.stderr

    metrics = json.loads(result.stdout)  # one JSON document, nothing else on stdout
    assert metrics["task"] == "classify" and metrics["labels"] == ["negative", "positive"]
    assert metrics["valid"]["accuracy"] >= 0.95 and metrics["valid"]["macro_f1"] >= 0.95
    # 34-step epochs: evaluated every 3 epochs (at least 100 steps apart, llmtool.training.plan) and at the end
    assert [h["epoch"] for h in metrics["history"]] == [3.0, 4.0] and metrics["history"][0]["step"] == 102
    assert metrics["best_step"] in [h["step"] for h in metrics["history"]]
    assert all(line.startswith("llmtool: ") for line in result.stderr.splitlines()), result.stderr  # no tqdm
    assert "validation loss" in result.stderr

    assert_clean_model_folder(out)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["labels"] == ["negative", "positive"]
    assert settings["columns"] == {"text": "text", "text_pair": None, "label": "label"}
    assert settings["rows"] == {"train": 540, "valid": 60}
    assert settings["training"]["lr"] == 0.003 and settings["training"]["seed"] == 42

    # Held-out rows, never seen in training: `llmtool classify` answers with the user's label names,
    # plain Transformers agrees, and `llmtool evaluate` reports the accuracy computed here by hand.
    rows = sentiment_rows(200, seed=99)
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows), encoding="utf-8")
    classified = run_cli(["classify", "--model", str(out), "--input", str(test_csv), "--json"], env=ENV)
    assert classified.returncode == 0, classified.stderr
    predicted = [json.loads(line)["label"] for line in classified.stdout.splitlines()]
    assert set(predicted) == {"negative", "positive"}
    accuracy = sum(p == label for p, (_, label) in zip(predicted, rows, strict=True)) / len(rows)
    assert accuracy >= 0.95

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = model(**tokenizer([t for t, _ in rows], padding=True, return_tensors="pt")).logits
    assert [model.config.id2label[int(i)] for i in logits.argmax(-1)] == predicted
    assert model.config.label2id == {"negative": 0, "positive": 1}

    evaluated = run_cli(["evaluate", str(test_csv), "--model", str(out), "--json"], env=ENV)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(accuracy)


def _mean_loss(folder: Path, lines: list[str]) -> float:
    """Token-weighted mean next-token loss of a causal LM on lines (an independent perplexity check)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    total, count = 0.0, 0
    with torch.no_grad():
        for line in lines:
            ids = tokenizer(line, return_tensors="pt")["input_ids"]
            n = ids.shape[1] - 1
            total += float(model(input_ids=ids, labels=ids).loss) * n
            count += n
    return total / count


def test_clm_lowers_held_out_perplexity(tmp_path: Path, tiny_gpt2: Path) -> None:
    train = write_stories(tmp_path / "train.txt", 600, seed=1)
    valid = write_stories(tmp_path / "valid.txt", 80, seed=2)
    out = tmp_path / "story-lm"
    result = run_cli(
        ["finetune", str(train), "--task", "clm", "--model", str(tiny_gpt2), "--output", str(out),
         "--valid", str(valid), "--block-size", "32", "--epochs", "2", "--lr", "3e-3", "--batch-size", "16",
         "--eval-on-start", "--json"],
        env=ENV,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    baseline, *epochs = metrics["history"]
    # short epochs: evaluated every few epochs (at least 100 steps apart) and at the end, not each epoch
    assert baseline["step"] == 0 and epochs and epochs[-1]["step"] == metrics["train"]["steps"]
    assert metrics["valid"]["perplexity"] < baseline["perplexity"] / 3
    assert metrics["valid"]["perplexity"] == pytest.approx(math.exp(metrics["valid"]["loss"]))
    assert_clean_model_folder(out)
    held_out = story_lines(80, seed=2)
    assert _mean_loss(out, held_out) < _mean_loss(tiny_gpt2, held_out) - 1.0


def run_with_terminal_stderr(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run llmtool with stdout on a pipe and stderr on a pseudo-terminal, as in an interactive shell."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [llmtool_executable(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:  # the terminal must be read while the bar draws, or the child blocks
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(master)
    return proc.returncode, stdout.decode(), b"".join(chunks).decode("utf-8", "replace")


def test_mlm_lowers_perplexity_with_a_progress_bar_on_a_terminal(tmp_path: Path, tiny_bert: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("id,text\n" + "".join(f"{i},{line}\n" for i, line in enumerate(story_lines(600, seed=3))))
    out = tmp_path / "story-mlm"
    env = {k: v for k, v in ENV.items() if k != "NO_COLOR"} | {"TERM": "xterm", "COLUMNS": "150"}
    code, stdout, stderr = run_with_terminal_stderr(
        ["finetune", str(train), "--task", "mlm", "--model", str(tiny_bert), "--output", str(out),
         "--block-size", "32", "--epochs", "3", "--lr", "3e-3", "--batch-size", "16", "--eval-on-start",
         "--logging-steps", "2", "--json"],
        env,
    )  # fmt: skip
    assert code == 0, stderr
    metrics = json.loads(stdout)
    assert metrics["valid"]["perplexity"] < metrics["history"][0]["perplexity"] / 2
    assert "training" in stderr and "loss " in stderr  # the bar, with the running loss
    assert "Writing model shards" not in stderr and "it/s]" not in stderr  # no tqdm
    assert_clean_model_folder(out)


def test_dry_run_reports_and_writes_nothing(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 100, seed=5, header=("sentence", "label"))
    out = tmp_path / "never"
    args = ["finetune", str(train), "--model", str(tiny_bert), "--output", str(out), "--dry-run", "--batch-size", "8",
            "--epochs", "3"]  # fmt: skip
    result = run_cli([*args, "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["steps"]["total"] == 36 and report["rows"] == {"train": 90, "valid": 10}
    assert sum(report["labels"]["train"].values()) == 90
    assert report["tokens"]["per_row"]["p50"] <= report["tokens"]["per_row"]["max"] <= 64
    assert not out.exists()
    lines = format_report(report).splitlines()  # the text form of the same report (without --json)
    assert lines[0] == "task     classify"
    assert "columns  text='sentence', label='label'" in lines
    assert any(line.startswith("rows     90 train, 10 valid (10% of") for line in lines)
    assert any(line.startswith("labels   train: negative=") for line in lines)
    assert any(line.startswith("tokens   per row: p50 ") and "max length 64" in line for line in lines)
    assert any(line.startswith("steps    36 (12 per epoch x 3.0 epochs") for line in lines), lines


@pytest.mark.parametrize(("task", "model"), [("classify", "bert-base-uncased"), ("clm", "gpt2")])
def test_default_models_offline_exit_3_and_leave_nothing(tmp_path: Path, task: str, model: str) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 40, seed=0)
    out = tmp_path / "out"
    result = run_cli(["finetune", str(train), "--task", task, "--output", str(out)], env=ENV)
    assert result.returncode == 3, result.stderr
    assert f"model {model!r} is not in the local cache" in result.stderr
    assert result.stderr.count("llmtool: error:") == 1
    assert not out.exists()


@pytest.mark.parametrize("task", ["classify", "clm"])
def test_tokenizing_in_two_processes_gives_the_same_examples(tmp_path: Path, tiny_bert: Path, task: str) -> None:
    """Big files are tokenized with datasets' num_proc; the examples must not depend on it."""
    from transformers import AutoTokenizer

    from llmtool.models import ModelOptions
    from llmtool.training.data import prepare
    from llmtool.training.finetune import FinetuneSettings, tokenized

    train = write_sentiment_csv(tmp_path / "train.csv", 3000, seed=8)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    examples = []
    for procs in (1, 2):
        data = prepare(str(train), task, cache_dir=str(tmp_path / f"cache{procs}"), valid_split=0)  # type: ignore[arg-type]
        settings = FinetuneSettings(task=task, num_proc=procs)
        ds = tokenized(data.train, tokenizer, settings, 32, ModelOptions(model=str(tiny_bert)), "train")
        examples.append(ds.to_dict())
    assert examples[0] == examples[1]
    if task == "classify":
        assert len(examples[0]["input_ids"]) == 3000 and set(examples[0]["labels"]) == {0, 1}
    else:  # packed into full blocks
        assert len(examples[0]["input_ids"]) > 100 and {len(ids) for ids in examples[0]["input_ids"]} == {32}


def test_best_metric_perplexity_picks_by_loss_and_an_unreported_one_is_refused(tmp_path: Path, tiny_bert: Path) -> None:
    train = tmp_path / "train.csv"
    train.write_text("id,text\n" + "".join(f"{i},{line}\n" for i, line in enumerate(story_lines(200, seed=3))))
    common = ["finetune", str(train), "--task", "mlm", "--model", str(tiny_bert), "--block-size", "32",
              "--max-steps", "20", "--save-steps", "10", "--lr", "3e-3", "--json"]  # fmt: skip
    by_perplexity = run_cli([*common, "--output", str(tmp_path / "p"), "--best-metric", "perplexity"], env=ENV)
    assert by_perplexity.returncode == 0, by_perplexity.stderr
    metrics = json.loads(by_perplexity.stdout)
    assert metrics["best_metric"] == "perplexity"
    lowest = min(metrics["history"], key=lambda h: h["perplexity"])
    assert metrics["best_step"] == lowest["step"] and metrics["valid"]["perplexity"] == lowest["perplexity"]

    refused = run_cli([*common, "--output", str(tmp_path / "a"), "--best-metric", "accuracy"], env=ENV)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        "llmtool: error: --best-metric accuracy: this run's validation reports loss, perplexity"
    )
    assert "Traceback" not in refused.stderr and not (tmp_path / "a").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".a.")] == []
