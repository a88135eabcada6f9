"""Where translation time goes, decoding only: ``python -m bench.translate_decode [--lines 256]``.

bench/translate.py times whole processes; this one times only the decoding loop, in one process, of the
same OPUS-MT-shaped Marian (random weights, 32 new tokens for every sentence, the same token ids in):

- CTranslate2's ``Translator.translate_batch`` at float32, with the GEMM backend it picks on this CPU
  (``CT2_USE_MKL`` unset) and with Intel MKL forced (``CT2_USE_MKL=1``), each in a child process
  because CTranslate2 reads the variable once;
- ``model.generate`` (torch, float32), the plain Transformers loop;

at batch sizes 16, 64 and 256. For each: seconds, milliseconds per decoding step, and the GFLOP/s that
makes (2 x the decoder's multiply-adds per new token: 6 layers of self-attention, cross-attention
queries and outputs, and the feed-forward, plus the output layer), so that the table shows whether the
work is bound by arithmetic, where no engine can be much faster than another at the same precision.
Prints a Markdown table naming the machine; writes bench/translate-decode-results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.report import cpu_model
from bench.translate import HERE, build_model, sentences

NEW_TOKENS = 32
CHILD = "bench.translate_decode"


def decoder_flops_per_token(config: dict[str, Any]) -> float:
    d, ffn, layers, vocab = config["d_model"], config["decoder_ffn_dim"], config["decoder_layers"], config["vocab_size"]
    per_layer = 4 * d * d + 2 * d * d + 2 * d * ffn  # self-attention QKVO, cross-attention Q and O, feed-forward
    return 2.0 * (layers * per_layer + d * vocab)


def time_ct2(folder: Path, ids: list[list[int]], batch: int) -> tuple[float, list[list[int]]]:
    import ctranslate2

    from llmtool.engines.ct2.cache import entries_dir, entry_key

    entry = entries_dir() / entry_key(folder, "float32") / "model"
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    pieces = {i: p for p, i in vocab.items()}
    translator = ctranslate2.Translator(str(entry), device="cpu", compute_type="float32", intra_threads=2)
    tokens = [[pieces[i] for i in row] for row in ids]
    options = {"beam_size": 1, "max_decoding_length": NEW_TOKENS, "max_input_length": 0, "end_token": [pieces[0]]}
    translator.translate_batch(tokens[:batch], **options)  # warm-up
    start = time.perf_counter()
    out = []
    for s in range(0, len(tokens), batch):
        out += [r.hypotheses[0] for r in translator.translate_batch(tokens[s : s + batch], **options)]
    return time.perf_counter() - start, [[vocab[p] for p in row] for row in out]


def time_torch(folder: Path, lines: list[str], batch: int) -> tuple[float, list[list[int]]]:
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    options = {"num_beams": 1, "max_new_tokens": NEW_TOKENS, "do_sample": False, "forced_eos_token_id": None}
    out = []
    with torch.inference_mode():
        model.generate(**tokenizer(lines[:batch], return_tensors="pt", padding=True), **options)  # warm-up
        start = time.perf_counter()
        for s in range(0, len(lines), batch):
            rows = model.generate(**tokenizer(lines[s : s + batch], return_tensors="pt", padding=True), **options)
            dropped = {model.config.pad_token_id, model.config.eos_token_id}  # CTranslate2 returns neither
            out += [[t for t in row.tolist()[1:] if t not in dropped] for row in rows]
    return time.perf_counter() - start, out


def child(args: argparse.Namespace) -> None:
    from transformers import AutoTokenizer

    lines = sentences(args.lines)
    if args.engine == "torch":
        seconds, out = time_torch(args.model, lines, args.batch)
    else:
        ids = [list(row) for row in AutoTokenizer.from_pretrained(args.model)(lines)["input_ids"]]
        seconds, out = time_ct2(args.model, ids, args.batch)
    print(json.dumps({"seconds": seconds, "outputs": out}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=256)
    parser.add_argument("--model", type=Path, default=HERE / "out" / "opus-mt-shaped-marian")
    parser.add_argument("--out", type=Path, default=HERE / "translate-decode-results.json")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        child(args)
        return
    model = build_model(args.model)
    llmtool = str(Path(sys.executable).parent / "llmtool")
    subprocess.run([llmtool, "cache", "add", str(model)], check=True, capture_output=True)
    config = json.loads((model / "config.json").read_text(encoding="utf-8"))
    flops = decoder_flops_per_token(config)
    variants = {
        "ctranslate2, its own choice of GEMM": ("ct2", {}),
        "ctranslate2, CT2_USE_MKL=1": ("ct2", {"CT2_USE_MKL": "1"}),
        "torch model.generate": ("torch", {}),
    }
    rows: list[dict[str, Any]] = []
    for batch in (16, 64, 256):
        reference: list[list[int]] | None = None
        for name, (engine, extra) in variants.items():
            argv = [sys.executable, "-m", CHILD, "--engine", engine, "--batch", str(batch), "--lines", str(args.lines)]
            env = {k: v for k, v in os.environ.items() if k != "CT2_USE_MKL"} | extra
            proc = subprocess.run([*argv, "--model", str(model)], capture_output=True, text=True, env=env, check=True)
            result = json.loads(proc.stdout.splitlines()[-1])
            steps = -(-args.lines // batch) * NEW_TOKENS
            tokens = sum(len(row) for row in result["outputs"])
            reference = reference or result["outputs"]
            same = sum(a == b for a, b in zip(result["outputs"], reference, strict=True)) / args.lines
            rows.append({"variant": name, "batch": batch, "seconds": round(result["seconds"], 2),
                         "ms_per_step": round(1000 * result["seconds"] / steps, 1),
                         "gflops": round(tokens * flops / result["seconds"] / 1e9, 1),
                         "same_tokens_as_first": round(same, 4)})  # fmt: skip
    machine: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average": list(os.getloadavg()),
    }
    print(f"Decoding {args.lines} sentences x {NEW_TOKENS} new tokens, greedy, float32, OPUS-MT-shaped Marian "
          f"({flops / 1e6:.0f} MFLOP per new token); {machine['cpu']}, {machine['cpus_usable']} CPUs, "
          f"load {machine['load_average'][0]:.2f}\n")  # fmt: skip
    print("| variant | batch | decoding s | ms per step | GFLOP/s | same tokens as the first row |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['batch']} | {r['seconds']:.2f} | {r['ms_per_step']:.1f} | {r['gflops']:.1f} | "
              f"{r['same_tokens_as_first']:.1%} |")  # fmt: skip
    args.out.write_text(json.dumps({"machine": machine, "lines": args.lines, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
