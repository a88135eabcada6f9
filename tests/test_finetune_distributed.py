"""``llmtool finetune`` under ``torchrun --nproc_per_node 2``: DDP over gloo on the CPU, end to end.

The same command as a plain run; the two processes split each batch's examples, so an epoch takes
half the optimizer steps, and only the main process prints and writes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env
from synthetic import write_sentiment_csv


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_model(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 640, seed=6)  # 576 training rows: 18 steps of 2 x 16
    out = tmp_path / "ddp-model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "llmtool", "finetune", str(train), "--model", str(tiny_bert), "--output", str(out),
        "--epochs", "3", "--lr", "3e-3", "--batch-size", "16", "--save-steps", "18", "--json",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=cli_env(), timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr

    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # one process printed the result
    metrics = json.loads(lines[0])
    assert [h["step"] for h in metrics["history"]] == [18, 36, 54]
    assert metrics["valid"]["accuracy"] >= 0.9
    assert proc.stderr.count("validation loss") == 3  # the main process reports, the other stays quiet
    assert proc.stderr.count("training rows") == 1

    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["world_size"] == 2
    names = sorted(p.name for p in out.iterdir() if p.name != "metrics.png")  # the curves need llmtool[plot]
    assert names == sorted(
        ["config.json", "llmtool_settings.json", "metrics.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json"]
    ), names  # fmt: skip
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
