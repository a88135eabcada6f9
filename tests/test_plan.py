"""The training plan (llmtool.training.plan, issue 12): what a run chooses when its flags leave it open, the
cadence of evaluations and checkpoints, and the warnings said before training starts. The layout and
the plan line of real runs are checked through the CLI in test_pretrain.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import cli_env, run_cli

from llmtool.settings import PretrainSettings
from llmtool.training.plan import MIN_EVAL_STEPS, Rules, eval_every, make_plan, steps_per_epoch

ENV = cli_env(OMP_NUM_THREADS="1")
RULES = Rules(lr=2e-3, batch_size=32, epochs=40, min_steps=3000, max_steps=10_000, warmup_ratio=0.05, from_scratch=True)


def test_open_settings_are_chosen_and_given_ones_kept() -> None:
    settings, plan = make_plan(PretrainSettings(), RULES, examples=2395, valid_examples=0, layout="lines")
    assert (settings.batch_size, settings.lr, settings.warmup_ratio) == (32, 2e-3, 0.05)
    assert plan.steps_per_epoch == 75 and plan.steps == settings.max_steps == 3000  # 40 epochs of 75
    assert plan.chosen == ["batch", "steps", "lr", "warm-up"]
    given = PretrainSettings(batch_size=8, lr=1e-4, warmup_ratio=0.0, epochs=2)
    settings, plan = make_plan(given, RULES, examples=100, valid_examples=0, layout="lines")
    assert (settings.batch_size, settings.lr, settings.warmup_ratio, settings.max_steps) == (8, 1e-4, 0.0, None)
    assert plan.steps == 26 and plan.chosen == []


@pytest.mark.parametrize(
    ("examples", "steps"),
    [(20, 3000), (480, 3000), (2395, 3000), (20_000, 10_000), (10_000_000, 10_000)],
)
def test_the_step_budget_is_epochs_within_bounds(examples: int, steps: int) -> None:
    """Small corpora get the minimum (many epochs), big ones the maximum (less than an epoch is said)."""
    _, plan = make_plan(PretrainSettings(), RULES, examples=examples, valid_examples=0, layout="lines")
    assert plan.steps == steps
    assert plan.batch_size == min(32, examples)


def test_evaluations_are_whole_epochs_and_never_too_frequent() -> None:
    assert eval_every(per_epoch=1, total=600) == 100  # 20 examples: every 100 one-step epochs, not every step
    assert eval_every(per_epoch=7, total=700) == 105  # at least MIN_EVAL_STEPS apart, on an epoch's end
    assert eval_every(per_epoch=75, total=3000) == 300  # about ten evaluations in a run
    assert eval_every(per_epoch=4000, total=12_000) == 4000  # long epochs: each epoch, as before
    assert all(eval_every(p, t) >= min(MIN_EVAL_STEPS, p) for p in range(1, 80) for t in range(1, 2000, 97))
    settings, plan = make_plan(PretrainSettings(max_steps=600), RULES, examples=20, valid_examples=0, layout="x")
    assert settings.save_steps == plan.eval_every == 100
    settings, _ = make_plan(PretrainSettings(epochs=3), RULES, examples=4000, valid_examples=0, layout="x")
    assert settings.save_steps is None  # epochs of 125 steps: evaluate at each epoch's end


def test_steps_per_epoch_counts_processes_and_accumulation() -> None:
    assert steps_per_epoch(100, 8, 1, 1) == 13
    assert steps_per_epoch(100, 8, 2, 1) == 7
    assert steps_per_epoch(101, 8, 1, 2) == 7  # the sampler pads to 51 per process


def test_warnings_say_what_to_change() -> None:
    settings = PretrainSettings(max_steps=40)
    _, plan = make_plan(settings, RULES, examples=20, valid_examples=3, layout="packed 128-token blocks")
    text = "\n".join(plan.warnings)
    assert "40 optimizer steps are too few" in text and "--max-steps" in text
    assert "packing leaves 20 blocks" in text and "--line-by-line" in text
    assert "3 validation examples" in text and "--valid-split" in text
    _, plan = make_plan(PretrainSettings(), RULES, examples=2000, valid_examples=200, layout="lines")
    assert plan.warnings == []


def test_pretrain_dry_run_chooses_the_layout_from_the_corpus(tmp_path: Path) -> None:
    facts = tmp_path / "facts.txt"
    facts.write_text("".join(f"The colour of item {i} is red.\n" for i in range(60)))
    prose = tmp_path / "prose.txt"  # running text: lines that break sentences anywhere, as wrapped prose does
    words = " ".join(f"word{i % 50}" for i in range(3000)).split()
    prose.write_text("".join(" ".join(words[i : i + 9]) + "\n" for i in range(0, len(words), 9)))
    result = run_cli(["pretrain", str(prose), "--objective", "clm", "--dry-run", "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["plan"]["layout"] == "packed 128-token blocks"
    text = run_cli(["pretrain", str(facts), "--objective", "mlm", "--dry-run", "--max-steps", "20"], env=ENV)
    assert text.returncode == 0, text.stderr
    assert "plan     one line per example" in text.stdout and "20 steps" in text.stdout
    assert "warning  20 optimizer steps are too few" in text.stdout
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["facts.txt", "prose.txt"]


def test_mlm_on_short_lines_takes_a_batch_of_lines_filling_32_blocks() -> None:
    """One line per example holds few masked tokens: the batch takes as many lines as fill about 32
    blocks of 32 tokens (bench/learns.py's people corpus: 70.8% of the facts seen with 32 lines a
    step, 100% with 96)."""
    import dataclasses

    from datasets import Dataset

    from llmtool.training.pretrain import batch_size

    lines = Dataset.from_dict({"input_ids": [[2, *range(5, 13), 3]] * 50})  # [CLS] 8 tokens [SEP]
    mlm = PretrainSettings(objective="mlm", line_by_line=True)
    assert batch_size(mlm, lines) == 96  # 3 lines of 10 tokens fill a block of 32
    assert batch_size(dataclasses.replace(mlm, line_by_line=False), lines) == 32  # packed blocks
    assert batch_size(PretrainSettings(objective="clm", line_by_line=True), lines) == 32  # every token learns
    assert batch_size(mlm, Dataset.from_dict({"input_ids": [[2, 5, 3]] * 50})) == 256  # at most 8 lines a block
    _, plan = make_plan(mlm, dataclasses.replace(RULES, batch_size=96), examples=480, valid_examples=0, layout="x")
    assert plan.batch_size == 96 and plan.steps == 3000  # the people corpus's plan: 600 epochs of 5
