"""The defaults across corpora of different shapes, both objectives and several seeds (issue 21).

Runs ``python -m bench.learns`` (no training flags) for every (corpus, objective, seed) of the
matrix below, one at a time, and keeps each result line in ``bench/learns-results.json`` (a run
already there is skipped unless ``--again``), then prints the table of docs/measurements.md:
seen and held-out accuracy (mean and range over the seeds) and the ``pretrain`` seconds.

- ``people``: 40 invented people x 3 relations x 5 phrasings, one held out (mlm, clm);
- ``islands``: 18 invented islands x 3 relations x 5 phrasings, one held out (mlm, clm);
- ``capitals-zh``, ``capitals-zh2``: Chinese short lines without spaces, 12 and 18 countries, one
  phrasing per country held out; right when every character of the capital is (mlm);
- ``qa``: a tiny GPT-2 pre-trained with no flags, then fine-tuned on 120 prompt/response rows with
  ``--max-steps 300`` and no other flag; the share of the questions answered (clm).

Usage: ``python -m bench.learns_suite [--corpus C ...] [--seeds 0 1 2] [--again] [--table]``.
Accuracies are valid under load; seconds only when the machine is otherwise idle (the JSON says
``loaded`` when the 1-minute load average exceeded the core count at the start of the run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("learns-results.json")
MATRIX: dict[str, tuple[str, ...]] = {
    "people": ("mlm", "clm"),
    "islands": ("mlm", "clm"),
    "capitals-zh": ("mlm",),
    "capitals-zh2": ("mlm",),
    "qa": ("clm",),
}


def load() -> list[dict[str, Any]]:
    return json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else []


def key(row: dict[str, Any]) -> tuple[str, str, int]:
    return row["corpus"], row.get("objective", "clm"), int(row["seed"])


def run_one(corpus: str, objective: str, seed: int) -> dict[str, Any]:
    loaded = os.getloadavg()[0] > (os.cpu_count() or 1)
    args = [sys.executable, "-m", "bench.learns", "--corpus", corpus, "--seed", str(seed)]
    if corpus != "qa":
        args += ["--objective", objective]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{corpus} {objective} seed {seed} failed:\n{out.stderr}")
    row = json.loads(out.stdout.splitlines()[-1])
    return {**row, "objective": objective, "loaded": loaded}


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per (corpus, objective), mean [min-max] over the seeds."""
    lines = [
        "| corpus | objective | seeds | seen (qa: answered) | held out | seconds (pretrain; qa: and finetune) |",
        "|---|---|---|---|---|---|",
    ]
    for corpus, objectives in MATRIX.items():
        for objective in objectives:
            runs = [r for r in rows if key(r)[:2] == (corpus, objective)]
            if not runs:
                continue
            seen = [r["answered"] if corpus == "qa" else r["seen"] for r in runs]
            held = [r["heldout"] for r in runs if "heldout" in r]
            alone = [r["seconds"] for r in runs if not r.get("loaded")]  # the only seconds to quote
            loaded = [r["seconds"] for r in runs if r.get("loaded")]
            secs = " ".join(
                part
                for part in (
                    f"{_spread(alone, '{:.0f}')} alone" if alone else "",
                    f"({_spread(loaded, '{:.0f}')} loaded)" if loaded else "",
                )
                if part
            )
            held_out = _spread(held) if held else "-"
            lines.append(f"| {corpus} | {objective} | {len(runs)} | {_spread(seen)} | {held_out} | {secs} |")
    return "\n".join(lines)


def _spread(values: list[float], form: str = "{:.1%}") -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return form.format(mean)
    return f"{form.format(mean)} [{form.format(min(values))}-{form.format(max(values))}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", nargs="*", default=list(MATRIX), choices=list(MATRIX))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--again", action="store_true", help="Rerun what the results file already holds.")
    parser.add_argument("--table", action="store_true", help="Only print the table of the results file.")
    args = parser.parse_args(argv)
    rows = load()
    if not args.table:
        for corpus in args.corpus:
            for objective in MATRIX[corpus]:
                for seed in args.seeds:
                    if not args.again and any(key(r) == (corpus, objective, seed) for r in rows):
                        continue
                    row = run_one(corpus, objective, seed)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    rows = [r for r in load() if key(r) != key(row)] + [row]
                    RESULTS.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
