"""Translation throughput, whole process: ``python -m bench.translate [--lines 500]``.

Pipes N English sentences (Tatoeba, ../shared/data/translation/tatoeba_fra_eng) into these programs and
times each whole process (start-up, model load, translation, writing JSON Lines):

- ``llmtool translate --engine ctranslate2`` at float32, and with ``--quantize int8`` (the model
  converted beforehand with ``llmtool cache add``: a conversion happens once, not per run);
- ``llmtool translate --engine torch``;
- a plain Transformers script: ``model.generate`` over batches of the same size, in input order.

each greedy and with 4 beams. Then the token agreement of each with the plain script: the share of
sentences whose output is the same text. No pretrained translation model is available offline, so
the model is a MarianMTModel of OPUS-MT's shape (6+6 layers, d_model 512, 8 heads, ffn 2048) with
random weights and a real sentencepiece tokenizer trained here on the Tatoeba file (8k pieces; OPUS-MT
en-fr has 59k, so the output layer is a smaller share of the work), decoding a fixed budget of new
tokens (``--new-tokens``): the speed comparison holds, the translations are noise. Prints a Markdown
table naming the machine and writes the figures as JSON (--out, default bench/translate-results.json).
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
TATOEBA = SHARED / "translation" / "tatoeba_fra_eng" / "fra-eng.txt"
BASELINE = """
import json, sys
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
folder, beams, new_tokens, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lines = [line.rstrip("\\n") for line in sys.stdin if line.strip()]
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
with torch.inference_mode():
    for start in range(0, len(lines), batch):
        inputs = tokenizer(lines[start : start + batch], return_tensors="pt", padding=True)
        out = model.generate(**inputs, num_beams=beams, max_new_tokens=new_tokens, do_sample=False,
                             forced_eos_token_id=None, early_stopping=True)
        for row in out:
            print(json.dumps({"text": tokenizer.decode(row, skip_special_tokens=True)}, ensure_ascii=False))
"""


def pairs() -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in TATOEBA.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r[0], r[1]) for r in rows if len(r) >= 2]


def sentences(n: int) -> list[str]:
    """N distinct English sentences from the end of the file (the longer ones: it is sorted by length)."""
    english = list(dict.fromkeys(e for e, _ in pairs()))
    return english[-n:]


def build_model(folder: Path) -> Path:
    """The OPUS-MT-shaped Marian with random weights and a sentencepiece model trained on the file."""
    if (folder / "model.safetensors").is_file():
        return folder
    sys.path.insert(0, str(HERE.parent / "tests"))
    import tiny_models

    lines = [text for pair in pairs() for text in pair]
    return tiny_models.build_marian(folder, lines=lines, vocab_size=8000, size="opus")


def run(argv: list[str], stdin: bytes, env: dict[str, str]) -> tuple[float, list[str]]:
    start = time.perf_counter()
    proc = subprocess.run(argv, input=stdin, capture_output=True, env=env, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    texts = []
    for line in proc.stdout.decode("utf-8").splitlines():
        record = json.loads(line)
        texts.append(record["generations"][0]["text"] if "generations" in record else record["text"])
    return wall, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=500, help="sentences piped in (default 500)")
    parser.add_argument("--new-tokens", type=int, default=32, help="most new tokens per sentence (default 32)")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[16, 64],
        help="sentences per batch, each size for all variants alike (default 16 64; llmtool's default is 64)",
    )  # fmt: skip
    parser.add_argument("--model", type=Path, default=HERE / "out" / "opus-mt-shaped-marian")
    parser.add_argument("--reps", type=int, default=1, help="runs of each variant (the median is reported)")
    parser.add_argument("--out", type=Path, default=HERE / "translate-results.json")
    args = parser.parse_args()
    model = build_model(args.model)
    llmtool = str(Path(sys.executable).parent / "llmtool")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    stdin = ("\n".join(sentences(args.lines)) + "\n").encode("utf-8")
    for quantize in ("none", "int8"):
        add = [llmtool, "cache", "add", str(model), "--quantize", quantize]
        subprocess.run(add, env=env, check=True, capture_output=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory():
        for batch, beams in [(b, n) for b in args.batch_sizes for n in (1, 4)]:
            common = ["-m", str(model), "-q", "--json", "-t", str(args.new_tokens), "--beams", str(beams)]
            common += ["--batch-size", str(batch)]
            variants = {
                "ctranslate2 float32": [llmtool, "translate", *common, "--engine", "ctranslate2"],
                "ctranslate2 int8": [llmtool, "translate", *common, "--engine", "ctranslate2", "--quantize", "int8"],
                "torch float32": [llmtool, "translate", *common, "--engine", "torch"],
                "plain model.generate float32": [
                    sys.executable, "-c", BASELINE, str(model), str(beams), str(args.new_tokens), str(batch)
                ],
            }  # fmt: skip
            walls: dict[str, list[float]] = {name: [] for name in variants}
            outputs: dict[str, list[str]] = {}
            for _ in range(args.reps):
                for name, argv in variants.items():  # in turn, so a change of load hits every variant alike
                    wall, texts = run(argv, stdin, env)
                    walls[name].append(wall)
                    outputs[name] = texts
            plain = outputs["plain model.generate float32"]
            plain_wall = statistics.median(walls["plain model.generate float32"])
            first = next((r for r in rows if r["beams"] == beams and r["variant"].startswith("plain")), None)
            first_wall = first["wall_s"] if first else plain_wall  # the plain loop at the first batch size
            for name, times in walls.items():
                wall = statistics.median(times)
                same = sum(a == b for a, b in zip(outputs[name], plain, strict=True))
                rows.append({"variant": name, "batch": batch, "beams": beams, "wall_s": round(wall, 2),
                             "lines_per_s": round(args.lines / wall, 1),
                             "speedup_vs_plain": round(plain_wall / wall, 2),
                             "speedup_vs_plain_at_first_batch": round(first_wall / wall, 2),
                             "same_text_as_plain": round(same / len(plain), 4), "runs": times})  # fmt: skip
    machine: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
    }
    print(f"Translating {args.lines} piped Tatoeba sentences, OPUS-MT-shaped Marian (random weights), "
          f"{args.new_tokens} new tokens at most, whole process, median of {args.reps}; {machine['cpu']}, "
          f"{machine['cpus_usable']} CPUs usable, OMP_NUM_THREADS={machine['omp_num_threads']}, "
          f"load {machine['load_average'][0]:.2f}\n")  # fmt: skip
    first_batch = args.batch_sizes[0]
    print(f"| variant | batch | beams | wall s | lines/s | x plain, same batch | x plain at batch {first_batch} "
          "| same text |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['batch']} | {row['beams']} | {row['wall_s']:.2f} | "
              f"{row['lines_per_s']:.1f} | {row['speedup_vs_plain']:.2f} | "
              f"{row['speedup_vs_plain_at_first_batch']:.2f} | {row['same_text_as_plain']:.1%} |")  # fmt: skip
    result = {"machine": machine, "lines": args.lines, "new_tokens": args.new_tokens, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
