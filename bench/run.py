"""``python -m bench``: run the benchmark rows, write bench/results.md and bench/results.json.

    python -m bench                  # every row, full size (tens of minutes on 2 CPU cores)
    python -m bench --quick          # every row, small inputs: a smoke run of a few minutes
    python -m bench --rows 1,3       # chosen rows only
    python -m bench --quick --size tiny --rows 1,3,4,7 --results-dir /tmp/b   # the test's run
    python -m bench --rows 3,7 --update   # re-measure rows 3 and 7, keep the others' figures
    python -m bench --render         # rewrite results.md from results.json (after editing changes.md)

Exits 0 whatever the timings: a missed goal is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
import traceback
from pathlib import Path

from bench import assets, report
from bench.context import FULL, QUICK, Context, RowResult
from bench.harness import log_stderr
from bench.rows import ROWS

# Which model sizes each row needs (row 8 needs all of them).
ROW_SIZES = {
    "1": (),
    "2": ("base",),
    "3": ("base",),
    "4": ("base",),
    "5": ("base",),
    "6": ("small",),
    "7": ("tiny",),
    "9": ("base",),
    "10": ("base",),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one repetition: a smoke run")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated row numbers (default: all)")
    parser.add_argument("--reps", type=int, help="measured repetitions per variant (default: 3, quick: 1)")
    parser.add_argument("--warmup", type=int, help="warm-up runs per variant (default: 1)")
    parser.add_argument("--size", choices=assets.SIZES, help="use this model size in every row (tests: tiny)")
    parser.add_argument("--device", default="auto", help="auto (cuda when present, else cpu), cpu or cuda")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each row, wait up to SECONDS for the 1-minute load average to fall below half the CPU count",
    )
    parser.add_argument("--out-dir", type=Path, default=assets.OUT_DIR, help="models and inputs (default: bench/out)")
    parser.add_argument(
        "--results-dir", type=Path, help="where results.md/json go (default: bench/, or bench/out/ with --quick)"
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite results.md from results.json and bench/changes.md",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="merge the chosen rows into the existing results.json: the other rows keep their figures, "
        "and each re-measured row records its own date and git revision",
    )
    args = parser.parse_args(argv)
    unknown = [r for r in args.rows.split(",") if r.strip() not in ROWS]
    if unknown:
        parser.error(f"unknown row(s) {', '.join(unknown)}; rows are {', '.join(ROWS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.render:
        md = report.render(args.results_dir or assets.BENCH_DIR)
        log_stderr(f"bench: wrote {md}")
        return 0
    selected = [r.strip() for r in args.rows.split(",")]
    scale = QUICK if args.quick else FULL
    if args.reps is not None or args.warmup is not None:
        scale = dataclasses.replace(
            scale,
            reps=args.reps if args.reps is not None else scale.reps,
            startup_reps=args.reps if args.reps is not None else scale.startup_reps,
            warmup=args.warmup if args.warmup is not None else scale.warmup,
        )
    device = _device(args.device)
    results_dir = args.results_dir or (args.out_dir if args.quick else assets.BENCH_DIR)
    info = report.machine_info(device)
    previous = None
    if args.update:
        try:
            previous = report.load(results_dir)
        except (OSError, ValueError) as exc:
            log_stderr(f"bench: --update needs an earlier results.json in {results_dir}: {exc}")
            return 2
        different = report.incomparable(previous[0], info, "quick" if args.quick else "full")
        if different:
            log_stderr(f"bench: --update refused: {different}; run every row instead")
            return 2
    log_stderr(f"bench: {info['cpu']}, {info['cpu_count']} CPUs, load average {info['load_average_start'][0]:.2f}")

    sizes = {args.size} if args.size else _sizes(selected)
    log_stderr(f"bench: preparing models ({', '.join(sorted(sizes)) or 'none'}) under {args.out_dir}")
    prepared = assets.prepare(tuple(s for s in assets.SIZES if s in sizes), args.out_dir)
    work = args.out_dir / ("run-quick" if args.quick else "run")
    ctx = Context(scale, prepared, work, device, size=args.size, log=log_stderr)

    results: list[RowResult] = []
    for row_id in selected:
        load = _wait_idle(args.wait_idle)
        log_stderr(f"bench: row {row_id} (load average {load[0]:.2f})")
        start = time.perf_counter()
        try:
            result = ROWS[row_id](ctx)
        except Exception as exc:  # a broken row is reported in the results, and the others still run
            traceback.print_exc()
            result = RowResult(row_id, ROWS[row_id].__name__, "", skipped=f"the harness failed: {exc!r}")
        result.seconds = time.perf_counter() - start
        result.load_average = load
        results.append(result)
        md, js = report.write(results_dir, info, results, "quick" if args.quick else "full", previous)
    if results:
        log_stderr(f"bench: wrote {md} and {js}")
    return 0


def _wait_idle(limit: float) -> list[float]:
    """Wait (at most ``limit`` seconds) for other work on the machine to calm down; the load then."""
    deadline = time.monotonic() + limit
    quiet = (os.cpu_count() or 1) / 2
    while os.getloadavg()[0] >= quiet and time.monotonic() < deadline:
        time.sleep(min(15.0, max(0.0, deadline - time.monotonic())))
    return [round(x, 2) for x in os.getloadavg()]


def _sizes(rows: list[str]) -> set[str]:
    if "8" in rows:
        return set(assets.SIZES)
    return {s for r in rows for s in ROW_SIZES.get(r, ())}


def _device(spec: str) -> str:
    if spec != "auto":
        return spec
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
