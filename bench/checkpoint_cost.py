"""What checkpoints cost a short run (issue 12): 600 steps on a 20-example corpus (one step per epoch).

Three settings, run in turn (ABCABC...) so that the machine's load falls on each alike:

- ``default``: the default cadence (every few epochs, at least 50 steps apart: :mod:`llmtool.training.plan`);
- ``per-epoch``: ``--save-steps 1``, what the default was before (one epoch is one step here);
- ``end-only``: ``--save-steps 1000000``, no checkpoint before the end.

Each run's training seconds (``metrics.json``: the Trainer loop, without start-up) are compared to
the end-only runs': the issue's bar is default / end-only <= 1.1. Single runs on a loaded machine
vary by more than the checkpoints cost, so the script also derives the cost of one checkpoint from
the per-epoch runs (one per step) and the default's ratio from it (``default_ratio_from_checkpoint_cost``).

Usage: ``python -m bench.checkpoint_cost [--rounds N] [--steps N] [--dir DIR]``; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {"default": [], "per-epoch": ["--save-steps", "1"], "end-only": ["--save-steps", "1000000"]}


def _checkpoints(out: Path) -> int:
    """How many checkpoints the default cadence wrote: its ``save_steps`` (the plan's), over the run."""
    settings = json.loads((out / "llmtool_settings.json").read_text())
    every, steps = settings["training"]["save_steps"], settings["plan"]["steps"]
    return -(-steps // every)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="ckpt-cost-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "twenty.txt"
    corpus.write_text("".join(f"Line {i} of the corpus says that item {i} is number {i * 7}.\n" for i in range(20)))
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    for _ in range(args.rounds):
        for name, flags in SETTINGS.items():
            out = work / name
            command = [sys.executable, "-m", "llmtool", "pretrain", str(corpus), "--objective", "mlm", "--output",
                       str(out), "--overwrite", "--max-steps", str(args.steps), "--json", *flags]  # fmt: skip
            run = subprocess.run(command, capture_output=True, text=True, check=False)
            if run.returncode != 0:
                print(run.stderr, file=sys.stderr)
                return 1
            seconds[name].append(json.loads(run.stdout)["train"]["seconds"])
    base = statistics.median(seconds["end-only"])
    saved = {"default": _checkpoints(work / "default"), "per-epoch": args.steps}  # checkpoints a run wrote
    each = (statistics.median(seconds["per-epoch"]) - base) / max(1, saved["per-epoch"] - 1)
    print(json.dumps({
        "steps": args.steps, "examples": 20, "seconds": seconds, "checkpoints": saved,
        "ratio_to_end_only": {k: round(statistics.median(v) / base, 3) for k, v in seconds.items()},
        "seconds_per_checkpoint": round(each, 4),
        "default_ratio_from_checkpoint_cost": round(1 + (saved["default"] - 1) * each / base, 3),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
