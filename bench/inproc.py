"""Row 4's measurements, inside one process: decode speed and this machine's memory bandwidth.

Run by the harness as ``python -m bench.inproc MODEL --tokens 128 ...``; prints one JSON object.
Both sides generate from the same prompt with the same weights, loaded separately: llmtool
through its own loader and ``Generator``, the baseline with ``from_pretrained`` and
``model.generate``, the way a user would write it. Calls alternate after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompt", default="It was the best of times, it was the worst of times,")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmtool.engines.torch_engine import TorchDecoder
    from llmtool.io.streams import Record
    from llmtool.models import ModelOptions, load, locate
    from llmtool.tasks.generate import GenerateOptions, Generator

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # The baseline, as a user writes it.
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    baseline: Any = AutoModelForCausalLM.from_pretrained(args.model)
    baseline.to(device)
    baseline.eval()

    def run_baseline() -> tuple[float, int]:
        start = time.perf_counter()
        inputs = tokenizer(args.prompt, return_tensors="pt").to(device)
        output = baseline.generate(
            **inputs, max_new_tokens=args.tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
        tokenizer.decode(output[0], skip_special_tokens=True)
        sync()
        produced["model.generate"] = tokenizer.decode(
            output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        return time.perf_counter() - start, int(output.shape[1] - inputs["input_ids"].shape[1])

    produced: dict[str, str] = {}  # the text each side generated

    # llmtool, as its CLI does it (fp32 on the CPU: --dtype auto).
    ltok, lmodel = load(
        AutoModelForCausalLM, locate(ModelOptions(model=args.model, device=args.device, engine="torch"))
    )
    generator = Generator(ltok, TorchDecoder(ltok, lmodel), GenerateOptions(max_new_tokens=args.tokens, greedy=True))

    def run_llmtool() -> tuple[float, int]:
        start = time.perf_counter()
        result = next(iter(generator([Record(0, 1, args.prompt)])))
        sync()
        return time.perf_counter() - start, int(result["generations"][0]["new_tokens"])

    runs: dict[str, Callable[[], tuple[float, int]]] = {"llmtool torch": run_llmtool, "model.generate": run_baseline}
    runs.update(ct2_runs(args, device.type, produced))
    for _ in range(args.warmup):
        for fn in runs.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    new_tokens: dict[str, int] = {}
    names = list(runs)
    for rep in range(args.reps):
        for name in names if rep % 2 == 0 else reversed(names):
            seconds, n = runs[name]()
            times[name].append(seconds)
            new_tokens[name] = n

    prompt_tokens = len(tokenizer(args.prompt)["input_ids"])
    weights = weight_bytes_per_token(lmodel)
    cache = kv_cache_bytes_per_token(lmodel, prompt_tokens, args.tokens)
    bandwidth = read_bandwidth(weights, device)
    same = {name: text == produced.get("model.generate") for name, text in produced.items() if "ctranslate2" in name}
    print(
        json.dumps(
            {
                "same_tokens": same,
                "times_s": times,
                "new_tokens": new_tokens,
                "prompt_tokens": prompt_tokens,
                "weight_bytes_per_token": weights,
                "kv_cache_bytes_per_token": cache,
                "bandwidth_bytes_per_s": bandwidth,
                "threads": torch.get_num_threads(),
                "device": str(device),
            }
        )
    )


def ct2_runs(args: Any, device: str, produced: dict[str, str]) -> dict[str, Callable[[], tuple[float, int]]]:
    """llmtool's CTranslate2 engine at float32 and int8, as ``llmtool generate --greedy`` runs it: the
    converted copy (converted here if it is not yet), its tokenizer, and the decoder's greedy generate."""
    from llmtool.engines.ct2.convert import ensure_entry
    from llmtool.engines.ct2.decoder import load_decoder
    from llmtool.engines.ct2.tokenizer import load_tokenizer
    from llmtool.io.streams import Record
    from llmtool.tasks.generate import GenerateOptions, Generator

    runs: dict[str, Callable[[], tuple[float, int]]] = {}
    for name, quantization in (("llmtool ctranslate2", "float32"), ("llmtool ctranslate2 int8", "int8")):
        entry = ensure_entry(args.model, quantization, allow_convert=True)
        compute = quantization if device == "cpu" else ("int8_float16" if quantization == "int8" else "float32")
        tokenizer = load_tokenizer(entry)
        decoder = load_decoder(entry, device, compute)  # as the CLI runs it
        generator = Generator(tokenizer, decoder, GenerateOptions(max_new_tokens=args.tokens, greedy=True))

        def run(generator: Any = generator, name: str = name) -> tuple[float, int]:
            start = time.perf_counter()
            result = next(iter(generator([Record(0, 1, args.prompt)])))
            produced[name] = result["generations"][0]["text"][len(args.prompt) :]
            return time.perf_counter() - start, int(result["generations"][0]["new_tokens"])

        runs[name] = run
    return runs


def weight_bytes_per_token(model: Any) -> int:
    """Bytes of weights one decode step must read: every parameter once (tied ones once), except
    the position table, of which one row is read."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    positions: Any = getattr(getattr(model, "transformer", None), "wpe", None)  # GPT-2's position table
    if positions is not None:
        w = positions.weight
        total -= (w.shape[0] - 1) * w.shape[1] * w.element_size()
    return int(total)


def kv_cache_bytes_per_token(model: Any, prompt_tokens: int, new_tokens: int) -> int:
    """Average bytes of keys and values read per decode step (they grow by one position a step)."""
    config: Any = model.config
    layers, hidden = int(config.num_hidden_layers), int(config.hidden_size)  # GPT-2 maps these to n_layer, n_embd
    element = next(model.parameters()).element_size()
    mean_positions = prompt_tokens + new_tokens / 2
    return int(layers * 2 * hidden * element * mean_positions)


def read_bandwidth(nbytes: int, device: Any, reps: int = 7) -> float:
    """The best sustained read bandwidth (bytes/s) over a buffer as large as the weights.

    Two ways of streaming it are timed, a reduction and a matrix-vector product (what a decode
    step does), and the faster one counts, so the bound it gives is the harder one to reach.
    """
    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    cols = 768
    rows = max(1, nbytes // 4 // cols)
    matrix = torch.rand(rows, cols, device=device)  # written once so every page is resident
    vector = torch.rand(cols, device=device)
    size = matrix.numel() * matrix.element_size()
    best = float("inf")
    for op in (lambda: matrix.sum(), lambda: torch.mv(matrix, vector)):
        op()
        for _ in range(reps):
            sync()
            start = time.perf_counter()
            op()
            sync()
            best = min(best, time.perf_counter() - start)
    return size / best


if __name__ == "__main__":
    main()
