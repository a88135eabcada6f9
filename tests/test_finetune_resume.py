"""Interrupting and resuming ``llmtool finetune``, and the output folder's --overwrite/--keep-checkpoints rules.

The interrupted run gets a real SIGINT (or SIGTERM) from outside, while it trains, as Ctrl-C
would send it; the resumed run must end exactly where an uninterrupted run with the same seed ends.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import cli_env, interrupt_after_first_epoch, run_cli
from synthetic import write_sentiment_csv

ENV = cli_env(OMP_NUM_THREADS="1")
EPOCHS = ["--epochs", "3", "--lr", "1e-3", "--batch-size", "16", "--seed", "7", "--json"]


@pytest.mark.slow
def test_sigint_then_resume_matches_the_uninterrupted_run(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 1200, seed=3)
    common = ["finetune", str(train), "--model", str(tiny_bert), *EPOCHS]

    whole = run_cli([*common, "--output", str(tmp_path / "whole")], env=ENV, subprocess=True)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)

    out = tmp_path / "interrupted"
    code, stderr = interrupt_after_first_epoch([*common, "--output", str(out)], signal.SIGINT, ENV, 120)
    assert code == 130, stderr
    assert "Ctrl-C: saving a checkpoint after this step" in stderr
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir())
    steps_per_epoch = expected["history"][0]["step"]
    assert checkpoints[-1] > steps_per_epoch, "stopped in the second epoch, past the first epoch's checkpoint"
    assert f"checkpoint saved in {out / 'checkpoints'}/checkpoint-{checkpoints[-1]}; continue with --resume" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no model, lock or cache: nothing half-done

    resumed = run_cli([*common, "--output", str(out), "--resume"], env=ENV, subprocess=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / 'checkpoints'}/checkpoint-{checkpoints[-1]}" in resumed.stderr
    got = json.loads(resumed.stdout)
    assert got["valid"] == expected["valid"]
    assert got["history"] == expected["history"]
    assert got["train"]["loss"] == expected["train"]["loss"]
    assert got["best_step"] == expected["best_step"]

    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@pytest.mark.slow
def test_sigint_ignored_since_start_does_not_stop_training(tmp_path: Path, tiny_bert: Path) -> None:
    """Started as a script's background job (SIGINT ignored), a training run keeps ignoring Ctrl-C."""
    train = write_sentiment_csv(tmp_path / "train.csv", 1200, seed=3)
    out = tmp_path / "background"
    args = ["finetune", str(train), "--model", str(tiny_bert), "--output", str(out), *EPOCHS]
    code, stderr = interrupt_after_first_epoch(args, signal.SIGINT, ENV, 120, ignore=[signal.SIGINT])
    assert code == 0, stderr
    assert "Ctrl-C" not in stderr
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_143(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 1200, seed=3)
    out = tmp_path / "terminated"
    args = ["finetune", str(train), "--model", str(tiny_bert), "--output", str(out), *EPOCHS]
    code, stderr = interrupt_after_first_epoch(args, signal.SIGTERM, ENV, 120)
    assert code == 143, stderr
    assert "SIGTERM: saving a checkpoint" in stderr and stderr.rstrip().endswith("llmtool: terminated")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]
    assert len(list((out / "checkpoints").iterdir())) >= 2


def test_overwrite_replaces_the_model_and_keep_checkpoints_keeps_them(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 200, seed=4)
    out = tmp_path / "model"
    base = ["finetune", str(train), "--model", str(tiny_bert), "--output", str(out), "--max-steps", "4"]
    assert run_cli(base, env=ENV).returncode == 0
    again = run_cli(base, env=ENV)
    assert again.returncode == 2 and "is not empty" in again.stderr
    finished = run_cli([*base, "--resume"], env=ENV)
    assert finished.returncode == 2 and "holds a finished model and no checkpoint to resume" in finished.stderr

    replaced = run_cli([*base, "--overwrite", "--keep-checkpoints", "--lr", "1e-4", "--save-steps", "2"], env=ENV)
    assert replaced.returncode == 0, replaced.stderr
    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["training"]["lr"] == 1e-4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert not (out / ".llmtool.lock").exists() and not (out / ".llmtool-cache").exists()
