"""The benchmark rows of issue 5: each runs llmtool and its baseline side by side.

A row function takes the run's :class:`~bench.context.Context` and returns a
:class:`~bench.context.RowResult`: the measured variants, derived figures (lines/s, tokens/s),
and checks of the goals. A goal missed is a finding, never an error: the harness exits 0
whatever the numbers.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import assets
from bench.context import Check, Context, RowResult, failures, median, ratio, variants_json
from bench.harness import Measured, Sample, Stats, Variant, alternate

# ---------------------------------------------------------------------------- row 1


def row_startup(ctx: Context) -> RowResult:
    result = RowResult(
        "1",
        "Start-up",
        "llmtool --help under 0.3 s, at least 10x faster than transformers --help",
    )
    variants = [
        Variant("python -c pass", "python -c pass", lambda: ctx.run([ctx.python, "-c", "pass"])),
        Variant("llmtool --help", "llmtool --help", lambda: ctx.run([ctx.llmtool, "--help"])),
        Variant("transformers --help", "transformers --help", lambda: ctx.run([*_transformers_cli(), "--help"])),
    ]
    measured = alternate(variants, ctx.scale.startup_reps, ctx.scale.warmup, ctx.log)
    failures(measured, result)
    result.variants = variants_json(measured)
    python, llmtool, transformers = (median(m) for m in measured)
    result.checks = [
        Check.at_most("llmtool --help wall time", llmtool, 0.3, " s"),
        Check.at_least("transformers --help / llmtool --help", ratio(transformers, llmtool), 10),
    ]
    result.notes.append(f"Python's own start-up is {python:.3f} s of that.")
    return result


def _transformers_cli() -> list[str]:
    """The ``transformers`` console script of this interpreter's installation."""
    for folder in (Path(sys.executable).parent, Path(sys.base_prefix) / "bin"):
        script = folder / "transformers"
        if script.exists():
            return [sys.executable, str(script)]
    return [sys.executable, "-c", "import sys; from transformers.cli.transformers import main; sys.exit(main())"]


# ---------------------------------------------------------------------------- row 2


FIRST_MASK = "The capital of France is [MASK]."
FIRST_PROMPT = "Once upon a time"


def row_first_result(ctx: Context) -> RowResult:
    result = RowResult(
        "2",
        "Time to first result",
        "one fill-mask and one 20-token generation through the CLI (CTranslate2 engine, model converted) "
        ">= 3x faster than a plain pipeline(...) script",
    )
    bert, gpt2 = ctx.bert(), ctx.gpt2()
    for model in (bert, gpt2):
        ctx.convert(model)
    tokens = str(ctx.scale.first_tokens)
    dev = ctx.device_args()
    fill = [ctx.llmtool, "fill-mask", FIRST_MASK, "-m", str(bert), *dev]
    gen = [ctx.llmtool, "generate", FIRST_PROMPT, "-t", tokens, "--greedy", "-m", str(gpt2), *dev]
    variants = [
        Variant("llmtool fill-mask", f'llmtool fill-mask "{FIRST_MASK}" -m {ctx.show(bert)}', lambda: ctx.run(fill)),
        Variant(
            "llmtool fill-mask --engine torch",
            f'llmtool fill-mask "{FIRST_MASK}" -m {ctx.show(bert)} --engine torch',
            lambda: ctx.run([*fill, "--engine", "torch"]),
        ),
        Variant(
            "pipeline fill-mask script",
            f'python bench/baselines/first_fill_mask.py {ctx.show(bert)} "{FIRST_MASK}"',
            lambda: ctx.run(ctx.baseline("first_fill_mask.py", str(bert), FIRST_MASK, ctx.device)),
        ),
        Variant(
            "llmtool generate",
            f'llmtool generate "{FIRST_PROMPT}" -t {tokens} --greedy -m {ctx.show(gpt2)}',
            lambda: ctx.run(gen),
        ),
        Variant(
            "llmtool generate --engine torch",
            f'llmtool generate "{FIRST_PROMPT}" -t {tokens} --greedy -m {ctx.show(gpt2)} --engine torch',
            lambda: ctx.run([*gen, "--engine", "torch"]),
        ),
        Variant(
            "pipeline generate script",
            f'python bench/baselines/first_generate.py {ctx.show(gpt2)} "{FIRST_PROMPT}"',
            lambda: ctx.run(ctx.baseline("first_generate.py", str(gpt2), FIRST_PROMPT, ctx.device)),
        ),
    ]
    measured = alternate(variants, ctx.scale.reps, ctx.scale.warmup, ctx.log)
    failures(measured, result)
    result.variants = variants_json(measured)
    fill_ct2, fill_torch, fill_base, gen_ct2, gen_torch, gen_base = (median(m) for m in measured)
    result.checks = [
        Check.at_least("fill-mask: pipeline script / llmtool", ratio(fill_base, fill_ct2), 3),
        Check.at_least("generate: pipeline script / llmtool", ratio(gen_base, gen_ct2), 3),
    ]
    result.notes.append(
        f"The torch engine (--engine torch) takes {ratio(fill_torch, fill_base) or 0:.2f}x (fill-mask) and "
        f"{ratio(gen_torch, gen_base) or 0:.2f}x (generate) of the scripts' time: both pay for importing torch."
    )
    return result


# ---------------------------------------------------------------------------- row 3


def row_fill_mask(ctx: Context) -> RowResult:
    s = ctx.scale
    result = RowResult(
        "3",
        "fill-mask throughput",
        f"{s.fill_lines} piped lines of 5-60 words: >= 1.3x the best pipeline batch_size, "
        ">= 5x the one-at-a-time pipeline",
    )
    bert = ctx.bert()
    lines = assets.mask_lines(ctx.assets.sentences, s.fill_lines)
    data = ctx.lines("fill.txt", lines)
    few = ctx.lines("fill-few.txt", lines[: s.one_at_a_time_lines])
    warm = ctx.lines("fill-warm.txt", lines[: s.warm_lines])
    sweep = ctx.lines("fill-sweep.txt", lines[: s.sweep_lines])
    dev = ctx.device_args()

    def pipe(batch: int | None, stdin: bytes) -> Callable[[], Sample]:
        args = ["--one-at-a-time"] if batch is None else ["--batch-size", str(batch)]
        return lambda: ctx.run(ctx.baseline("fill_mask_pipeline.py", str(bert), *args, *dev), stdin, True)

    # The baseline's best batch size, found on a sample of the same lines.
    ctx.log(f"    batch-size sweep on {s.sweep_lines} lines")
    if s.warmup:
        pipe(s.sweep_sizes[0], warm)()
    sweep_rates: dict[int, float] = {}
    for batch in s.sweep_sizes:
        sample = pipe(batch, sweep)()
        sweep_rates[batch] = s.sweep_lines / sample.wall_s if sample.returncode == 0 else 0.0
        result.table.append({"pipeline batch_size": batch, "lines/s": round(sweep_rates[batch], 2)})
        ctx.log(f"    pipeline batch_size={batch}: {sweep_rates[batch]:.2f} lines/s")
    best = max(sweep_rates, key=lambda b: sweep_rates[b])
    ctx.pipeline_batch = best

    llmtool_cmd = [ctx.llmtool, "fill-mask", "-m", str(bert), *dev]
    variants = [
        Variant(
            "llmtool fill-mask",
            f"llmtool fill-mask -m {ctx.show(bert)} < {s.fill_lines} lines",
            lambda: ctx.run(llmtool_cmd, data, True),
            lambda: ctx.run(llmtool_cmd, warm),
        ),
        Variant(
            f"pipeline batch_size={best}",
            f"python bench/baselines/fill_mask_pipeline.py {ctx.show(bert)} --batch-size {best} < {s.fill_lines} lines",
            pipe(best, data),
            pipe(best, warm),
        ),
        Variant(
            "pipeline one at a time",
            f"python bench/baselines/fill_mask_pipeline.py {ctx.show(bert)} --one-at-a-time "
            f"< first {s.one_at_a_time_lines} lines",
            pipe(None, few),
            pipe(None, warm),
        ),
    ]
    measured = alternate(variants, s.reps, s.warmup, ctx.log)
    failed = failures(measured, result)
    counts = [s.fill_lines, s.fill_lines, s.one_at_a_time_lines]
    result.variants = variants_json(measured, {m.name: (n, "lines") for m, n in zip(measured, counts, strict=True)})
    rates = [n / median(m) for m, n in zip(measured, counts, strict=True)]
    result.checks = [
        Check.at_least(f"llmtool lines/s / pipeline(batch_size={best})", None if failed else rates[0] / rates[1], 1.3),
        Check.at_least("llmtool lines/s / one-at-a-time pipeline", None if failed else rates[0] / rates[2], 5),
    ]
    agree = _agreement(measured[0].samples[-1].stdout, measured[1].samples[-1].stdout)
    if agree is not None:
        result.notes.append(f"llmtool and the pipeline print the same top prediction on {agree:.1%} of the lines.")
    result.notes.append(
        "Wall times are end to end (process start to exit, model load included) with the lines piped in; "
        f"the one-at-a-time pipeline runs the first {s.one_at_a_time_lines} of the same lines and is "
        "compared by rate (lines/s)."
    )
    return result


def _agreement(a: str, b: str, rel: float = 1e-4) -> float | None:
    """Share of output lines that agree: the same text, every number within ``rel`` (relative)."""
    la, lb = a.splitlines(), b.splitlines()
    if not la or len(la) != len(lb):
        return None
    return sum(_same_line(x, y, rel) for x, y in zip(la, lb, strict=True)) / len(la)


def _same_line(x: str, y: str, rel: float) -> bool:
    fx, fy = x.split("\t"), y.split("\t")
    if len(fx) != len(fy):
        return False
    for u, v in zip(fx, fy, strict=True):
        if u == v:
            continue
        try:
            p, q = float(u), float(v)
        except ValueError:
            return False
        if abs(p - q) > rel * max(1.0, abs(p), abs(q)):
            return False
    return True


# ---------------------------------------------------------------------------- row 4


def row_generate_one(ctx: Context) -> RowResult:
    s = ctx.scale
    result = RowResult(
        "4",
        "Generation, batch 1",
        f"greedy, {s.gen1_tokens} new tokens, gpt2 shape: >= 1.0x model.generate and >= 70% of the "
        "memory-bandwidth bound",
    )
    gpt2 = ctx.gpt2()
    argv = [
        ctx.python,
        "-m",
        "bench.inproc",
        str(gpt2),
        "--tokens",
        str(s.gen1_tokens),
        "--reps",
        str(s.gen1_reps),
        "--warmup",
        str(s.warmup),
        "--device",
        ctx.device,
    ]
    sample = ctx.run(argv, keep_stdout=True)
    if sample.returncode != 0:
        result.skipped = f"the in-process worker failed: {' '.join(sample.stderr_tail.split()[-40:])}"
        return result
    data = json.loads(sample.stdout.strip().splitlines()[-1])
    bytes_per_token = data["weight_bytes_per_token"] + data["kv_cache_bytes_per_token"]
    bound = data["bandwidth_bytes_per_s"] / bytes_per_token
    for name, times in data["times_s"].items():
        stats = Stats.of(times)
        tokens = data["new_tokens"][name]
        result.variants.append(
            {
                "name": name,
                "command": f"python -m bench.inproc {ctx.show(gpt2)} --tokens {s.gen1_tokens} ({name})",
                "wall_s": asdict(stats),
                "units": tokens,
                "unit": "tokens",
                "rate_per_s": tokens / stats.median,
            }
        )
    rates = {v["name"]: v["rate_per_s"] for v in result.variants}
    ours, theirs = rates["llmtool torch"], rates["model.generate"]
    ct2, int8 = rates.get("llmtool ctranslate2"), rates.get("llmtool ctranslate2 int8")
    result.checks = [
        Check.at_least("llmtool torch tokens/s / model.generate tokens/s", ours / theirs, 1.0),
        Check.at_least("llmtool torch tokens/s / bandwidth bound", ours / bound, 0.7, ""),
        Check.at_least("CTranslate2 float32 tokens/s / model.generate", None if ct2 is None else ct2 / theirs, 1.6),
        Check.at_least("CTranslate2 int8 tokens/s / model.generate", None if int8 is None else int8 / theirs, 2.5),
    ]
    result.table.append(
        {
            "weights read per token (MB)": round(data["weight_bytes_per_token"] / 1e6, 1),
            "KV cache read per token, mean (MB)": round(data["kv_cache_bytes_per_token"] / 1e6, 2),
            "sustained read bandwidth (GB/s)": round(data["bandwidth_bytes_per_s"] / 1e9, 2),
            "bound (tokens/s)": round(bound, 1),
            "llmtool torch (tokens/s)": round(ours, 1),
            "CTranslate2 float32 (tokens/s)": round(ct2 or 0, 1),
            "CTranslate2 int8 (tokens/s)": round(int8 or 0, 1),
            "model.generate (tokens/s)": round(theirs, 1),
        }
    )
    result.notes.append(
        "Measured inside one process (bench/inproc.py), each side with its own copy of the weights, "
        f"alternating, after a warm-up; times include tokenising and decoding the {data['prompt_tokens']}-token "
        f"prompt. Threads: {data['threads']}. The bound is the best read bandwidth measured over a buffer as "
        "large as the weights, divided by the bytes a decode step must read (weights + mean KV cache)."
    )
    if len(set(data["new_tokens"].values())) != 1:
        result.notes.append(f"The sides generated different numbers of tokens: {data['new_tokens']}.")
    if "same_tokens" in data:
        result.notes.append(f"Greedy tokens identical to model.generate's: {data['same_tokens']}.")
    return result


# ---------------------------------------------------------------------------- row 5


def row_generate_many(ctx: Context) -> RowResult:
    s = ctx.scale
    result = RowResult(
        "5",
        "Generation, piped prompts",
        f"{s.gen_prompts} piped prompts x {s.gen_tokens} new tokens: >= 4x the one-at-a-time model.generate loop",
    )
    gpt2 = ctx.gpt2()
    prompts = assets.prompt_lines(ctx.assets.prompts, s.gen_prompts)
    data = ctx.lines("prompts.txt", prompts)
    warm = ctx.lines("prompts-warm.txt", prompts[:2])
    dev = ctx.device_args()
    ctx.convert(gpt2)
    ours = [ctx.llmtool, "generate", "--greedy", "-m", str(gpt2), *dev]
    torch_engine = [*ours, "--engine", "torch"]
    theirs = ctx.baseline("generate_loop.py", str(gpt2), *dev)
    variants = [
        Variant(
            "llmtool generate",
            f"llmtool generate --greedy -t {s.gen_tokens} -m {ctx.show(gpt2)} < {s.gen_prompts} prompts",
            lambda: ctx.run([*ours, "-t", str(s.gen_tokens)], data, True),
            lambda: ctx.run([*ours, "-t", "4"], warm),
        ),
        Variant(
            "llmtool generate --engine torch",
            f"llmtool generate --greedy -t {s.gen_tokens} -m {ctx.show(gpt2)} --engine torch < {s.gen_prompts} prompts",
            lambda: ctx.run([*torch_engine, "-t", str(s.gen_tokens)], data, True),
            lambda: ctx.run([*torch_engine, "-t", "4"], warm),
        ),
        Variant(
            "model.generate loop",
            f"python bench/baselines/generate_loop.py {ctx.show(gpt2)} --max-new-tokens {s.gen_tokens} "
            f"< {s.gen_prompts} prompts",
            lambda: ctx.run([*theirs, "--max-new-tokens", str(s.gen_tokens)], data, True),
            lambda: ctx.run([*theirs, "--max-new-tokens", "4"], warm),
        ),
    ]
    measured = alternate(variants, s.reps, s.warmup, ctx.log)
    failed = failures(measured, result)
    result.variants = variants_json(measured, {m.name: (s.gen_prompts * s.gen_tokens, "tokens") for m in measured})
    speedup = None if failed else median(measured[2]) / median(measured[0])
    result.checks = [
        Check.at_least("loop wall time / llmtool wall time", speedup, 4),
        Check.at_least(
            "torch engine wall time / CTranslate2 engine wall time", ratio(median(measured[1]), median(measured[0])), 1
        ),
    ]
    agree = _agreement(measured[0].samples[-1].stdout, measured[2].samples[-1].stdout)
    if agree is not None:
        result.notes.append(f"Outputs identical for {agree:.0%} of the prompts (greedy; batching pads on the left).")
    same = _agreement(measured[0].samples[-1].stdout, measured[1].samples[-1].stdout)
    if same is not None:
        result.notes.append(f"The two engines print the same text for {same:.0%} of the prompts.")
    result.notes.append("Wall times are end to end, model load included; llmtool runs with its default --batch-size.")
    return result


# ---------------------------------------------------------------------------- row 6


def row_finetune(ctx: Context) -> RowResult:
    s = ctx.scale
    result = RowResult(
        "6",
        "Fine-tuning",
        f"llmtool finetune --task classify vs a Trainer script, {s.finetune_rows} CSV rows, small BERT: "
        ">= 0.97x samples/s, <= 1.1x peak RSS; and time to the first step",
    )
    probe = ctx.run([ctx.llmtool, "finetune", "--help"])
    if probe.returncode != 0:
        result.skipped = "`llmtool finetune` is not available in this build (issue 3, branch finetune)"
        return result
    bert = ctx.bert("small")
    csv_path = _finetune_csv(ctx, s.finetune_rows)
    common = ["--epochs", "1", "--batch-size", "16", "--max-length", "64", "--seed", "0", "--lr", "5e-5"]

    dev = ["--device", ctx.device] if ctx.device != "cpu" else []
    llmtool_argv = [ctx.llmtool, "finetune", str(csv_path), "--task", "classify", "-m", str(bert), *common, *dev]
    trainer_argv = [*ctx.baseline("finetune_trainer.py", str(csv_path), str(bert)), *common, *dev]

    def ours(out: str, *extra: str) -> Callable[[], Sample]:
        return _in_fresh_folder(ctx, ctx.work / out, [*llmtool_argv, "--overwrite", *extra])

    def theirs(out: str, *extra: str) -> Callable[[], Sample]:
        return _in_fresh_folder(ctx, ctx.work / out, [*trainer_argv, *extra])

    first_step = alternate(
        [
            Variant(
                "llmtool finetune --max-steps 1",
                "llmtool finetune ... --max-steps 1",
                ours("ft-l1", "--max-steps", "1"),
            ),
            Variant(
                "Trainer script --max-steps 1",
                "finetune_trainer.py ... --max-steps 1",
                theirs("ft-t1", "--max-steps", "1"),
            ),
        ],
        s.reps,
        s.warmup,  # the warm-up fills the bytecode and dataset caches for the full runs too
        ctx.log,
    )
    full = alternate(
        [
            Variant(
                "llmtool finetune",
                f"llmtool finetune {ctx.show(csv_path)} --task classify -m {ctx.show(bert)} " + " ".join(common),
                ours("ft-l"),
            ),
            Variant(
                "Trainer script",
                f"python bench/baselines/finetune_trainer.py {ctx.show(csv_path)} {ctx.show(bert)} " + " ".join(common),
                theirs("ft-t"),
            ),
        ],
        s.reps,
        0,
        ctx.log,
    )
    failed = failures([*first_step, *full], result)
    train_rows = int(s.finetune_rows * 0.9)  # both hold out 10% for validation
    result.variants = variants_json(full, {m.name: (train_rows, "samples") for m in full}) + variants_json(first_step)
    if not failed:
        speed = median(full[1]) / median(full[0])
        memory = median(full[0], "peak_rss_mb") / median(full[1], "peak_rss_mb")
        # Training time alone: the full run minus the 1-step run (start-up, loading, one step).
        train_ours, train_theirs = (median(f) - median(o) for f, o in zip(full, first_step, strict=True))
        steady = ratio(train_theirs, train_ours) if min(train_ours, train_theirs) > 0 else None
        result.checks = [
            Check.at_least("llmtool samples/s / Trainer samples/s (end to end)", speed, 0.97),
            Check.at_least("the same, setup subtracted (full run - 1-step run)", steady, 0.97),
            Check.at_most("llmtool peak RSS / Trainer peak RSS", memory, 1.1),
            Check.at_most(
                "time to first step: llmtool / Trainer (wall of a --max-steps 1 run)",
                ratio(median(first_step[0]), median(first_step[1])),
                1.0,
            ),
        ]
    return result


def _in_fresh_folder(ctx: Context, folder: Path, argv: list[str]) -> Callable[[], Sample]:
    """A run that writes its model to ``folder``, emptied first (each repetition trains afresh)."""

    def run() -> Sample:
        shutil.rmtree(folder, ignore_errors=True)
        return ctx.run([*argv, "--output", str(folder)])

    return run


def _finetune_csv(ctx: Context, rows: int) -> Path:
    import csv

    path = ctx.work / "inputs" / "finetune.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    source = assets.SHARED_DATA / "classification" / "sst2" / "train.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sentence", "label"])
        if source.is_file():
            with source.open(encoding="utf-8", newline="") as src:
                for i, row in enumerate(csv.DictReader(src)):
                    if i >= rows:
                        break
                    writer.writerow([row["sentence"], row["label"]])
        else:
            for i, sentence in enumerate(ctx.assets.sentences[:rows]):
                writer.writerow([sentence, i % 2])
    return path


# ---------------------------------------------------------------------------- row 7


def row_streaming(ctx: Context) -> RowResult:
    s = ctx.scale
    small, large = s.stream_lines
    size = ctx.size or "tiny"
    result = RowResult(
        "7",
        "Streaming memory",
        f"peak RSS of fill-mask on {large:,} piped lines <= 1.1x that on {small:,}",
    )
    bert = ctx.bert("tiny")
    lines = assets.mask_lines(ctx.assets.sentences, large, seed=1)
    big = ctx.lines("stream-large.txt", lines)
    few = ctx.lines("stream-small.txt", lines[:small])
    argv = [ctx.llmtool, "fill-mask", "-m", str(bert), *ctx.device_args()]
    variants = [
        Variant(
            f"llmtool fill-mask, {small:,} lines",
            f"llmtool fill-mask -m {ctx.show(bert)} < {small} lines",
            lambda: ctx.run(argv, few),
        ),
        Variant(
            f"llmtool fill-mask, {large:,} lines",
            f"llmtool fill-mask -m {ctx.show(bert)} < {large} lines",
            lambda: ctx.run(argv, big),
        ),
    ]
    measured = alternate(variants, min(s.reps, 2), 0, ctx.log)
    failed = failures(measured, result)
    result.variants = variants_json(
        measured, {m.name: (n, "lines") for m, n in zip(measured, (small, large), strict=True)}
    )
    growth = None if failed else median(measured[1], "peak_rss_mb") / median(measured[0], "peak_rss_mb")
    result.checks = [Check.at_most(f"peak RSS, {large:,} lines / {small:,} lines", growth, 1.1)]
    for m in measured:
        lines_out = m.samples[-1].stdout_lines
        result.notes.append(f"{m.name}: {lines_out:,} lines out.")
    result.notes.append(
        f"The {size} BERT keeps the run short; its small footprint makes any growth with input size more visible."
    )
    return result


# ---------------------------------------------------------------------------- row 8


def row_scaling(ctx: Context) -> RowResult:
    s = ctx.scale
    result = RowResult(
        "8",
        "Scaling",
        "how each side's cost grows with input (1x, 10x) and model size (tiny, small, base)",
    )
    batch = ctx.pipeline_batch or 16
    dev = ctx.device_args()
    fill_lines = assets.mask_lines(ctx.assets.sentences, s.scale_lines[1], seed=2)
    prompts = assets.prompt_lines(ctx.assets.prompts, s.scale_prompts[1], seed=2)
    tokens = str(s.scale_tokens)
    for size in [ctx.size] if ctx.size else list(assets.SIZES):
        bert, gpt2 = ctx.assets.bert[size], ctx.assets.gpt2[size]
        for i, n in enumerate(s.scale_lines):
            data = ctx.lines(f"scale-fill-{n}.txt", fill_lines[:n])
            ours = [ctx.llmtool, "fill-mask", "-m", str(bert), *dev]
            theirs = ctx.baseline("fill_mask_pipeline.py", str(bert), "--batch-size", str(batch), *dev)
            pair = alternate(_pair(ctx, ours, theirs, data), 1, 1 if i == 0 else 0, ctx.log)
            result.table.append(_scale_row("fill-mask", size, _params(bert), n, "lines", pair))
        for i, n in enumerate(s.scale_prompts):
            data = ctx.lines(f"scale-gen-{n}.txt", prompts[:n])
            ours = [ctx.llmtool, "generate", "--greedy", "-t", tokens, "-m", str(gpt2), *dev]
            theirs = ctx.baseline("generate_loop.py", str(gpt2), "--max-new-tokens", tokens, *dev)
            pair = alternate(_pair(ctx, ours, theirs, data), 1, 1 if i == 0 else 0, ctx.log)
            result.table.append(_scale_row("generate", size, _params(gpt2), n, "prompts", pair))
    _growth(result)
    result.notes.append(
        f"One run per cell after a warm-up per model; wall time end to end. Baselines: fill-mask pipeline with "
        f"batch_size={batch}; generate: the one-at-a-time model.generate loop, {tokens} new tokens per prompt."
    )
    return result


def _pair(ctx: Context, ours: list[str], theirs: list[str], data: bytes) -> list[Variant]:
    return [
        Variant("llmtool", " ".join(ours), lambda: ctx.run(ours, data)),
        Variant("baseline", " ".join(theirs), lambda: ctx.run(theirs, data)),
    ]


def _params(folder: Path) -> int:
    from safetensors import safe_open

    total = 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not a dict
                shape = f.get_slice(key).get_shape()
                total += _prod(shape)
    return total


def _prod(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


def _scale_row(task: str, size: str, params: int, n: int, unit: str, measured: list[Measured]) -> dict[str, Any]:
    ours, theirs = (m.samples[0] for m in measured)
    ok = ours.returncode == 0 and theirs.returncode == 0
    return {
        "task": task,
        "model": f"{size} ({params / 1e6:.1f}M)",
        "inputs": f"{n} {unit}",
        "llmtool s": round(ours.wall_s, 2),
        "baseline s": round(theirs.wall_s, 2),
        "speed-up": round(theirs.wall_s / ours.wall_s, 2) if ok else None,
        "llmtool ms per input": round(1000 * ours.wall_s / n, 1),
        "llmtool peak RSS MB": round(ours.peak_rss_mb),
        "ok": ok,
    }


def _growth(result: RowResult) -> None:
    """Add how much longer the 10x input took than the 1x, per task and size."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in result.table:
        by_key.setdefault((row["task"], row["model"]), []).append(row)
    for (task, model), rows in by_key.items():
        if len(rows) == 2:
            a, b = rows
            result.notes.append(
                f"{task}, {model}: 10x the input took {b['llmtool s'] / a['llmtool s']:.1f}x as long with llmtool, "
                f"{b['baseline s'] / a['baseline s']:.1f}x with the baseline."
            )


# ---------------------------------------------------------------------------- row 9


def row_engines(ctx: Context) -> RowResult:
    s = ctx.scale
    result = RowResult(
        "9",
        "The two engines on piped input",
        f"fill-mask and classify on {s.fill_lines} lines, score on {s.fill_lines // 4} lines: the CTranslate2 "
        "engine against the torch engine (>= 1x) and the plain baselines",
    )
    bert, gpt2 = ctx.bert(), ctx.gpt2()
    classifier = assets.build_bert_classifier(ctx.work.parent / "models" / f"bert-classifier-{ctx.size or 'base'}")
    for model in (bert, gpt2, classifier):
        ctx.convert(model)
    n = s.fill_lines  # row 3's lines; score (a forward pass per line in the baseline) on a quarter of them
    lines = assets.mask_lines(ctx.assets.sentences, n)
    masked = ctx.lines("engines-fill.txt", lines)
    plain = ctx.lines("engines-plain.txt", [line.replace("[MASK]", "it") for line in lines])
    short = ctx.lines("engines-score.txt", [line.replace("[MASK]", "it") for line in lines[: n // 4]])
    warm = ctx.lines("engines-warm.txt", lines[: s.warm_lines])
    dev = ctx.device_args()
    batch = str(ctx.pipeline_batch or 8)

    def cli(*args: str) -> list[str]:
        return [ctx.llmtool, *args, *dev]

    jobs = [
        ("fill-mask", cli("fill-mask", "-m", str(bert)), masked, n),
        ("classify", cli("classify", "-m", str(classifier)), plain, n),
        ("score", cli("score", "-m", str(gpt2)), short, n // 4),
    ]
    baselines = {
        "fill-mask": ctx.baseline("fill_mask_pipeline.py", str(bert), "--batch-size", batch, *dev),
        "classify": ctx.baseline("classify_pipeline.py", str(classifier), "--batch-size", batch, *dev),
        "score": ctx.baseline("score_loop.py", str(gpt2), *dev),
    }
    variants: list[Variant] = []
    counts: dict[str, tuple[int, str]] = {}
    for name, argv, data, n in jobs:
        for engine in ("ctranslate2", "torch"):
            command = [*argv, "--engine", engine]
            variants.append(
                Variant(
                    f"llmtool {name} --engine {engine}",
                    f"{' '.join(ctx.show(Path(a)) if '/' in a else a for a in command[1:])} < {n} lines",
                    lambda command=command, data=data: ctx.run(command, data, True),
                    lambda command=command: ctx.run(command, warm if "score" not in command else short[:200]),
                )
            )
            counts[variants[-1].name] = (n, "lines")
        variants.append(
            Variant(
                f"{name} baseline",
                f"python bench/baselines/{Path(baselines[name][1]).name} ... < {n} lines",
                lambda argv=baselines[name], data=data: ctx.run(argv, data, True),
                lambda argv=baselines[name]: ctx.run(
                    argv, warm.replace(b"[MASK]", b"it") if "fill" not in argv[1] else warm
                ),
            )
        )
        counts[variants[-1].name] = (n, "lines")
    measured = alternate(variants, s.reps, s.warmup, ctx.log)
    failures(measured, result)
    result.variants = variants_json(measured, counts)
    times = [median(m) for m in measured]
    for i, (name, *_rest) in enumerate(jobs):
        ct2, torch_engine, base = times[3 * i : 3 * i + 3]
        result.checks.append(
            Check.at_least(f"{name}: torch engine time / CTranslate2 time", ratio(torch_engine, ct2), 1)
        )
        result.table.append(
            {
                "task": name,
                "CTranslate2 (s)": round(ct2, 2),
                "torch engine (s)": round(torch_engine, 2),
                "baseline (s)": round(base, 2),
                "baseline / CTranslate2": round(ratio(base, ct2) or 0, 2),
            }
        )
        same = _agreement(measured[3 * i].samples[-1].stdout, measured[3 * i + 1].samples[-1].stdout)
        if same is not None:
            result.notes.append(f"{name}: the two engines print the same line (numbers within a relative 1e-4) "
                                f"for {same:.1%} of the inputs.")  # fmt: skip
    result.notes.append(
        f"End to end, model load included. Baselines: pipeline(batch_size={batch}) for fill-mask and classify, "
        "a forward pass per line (the Transformers perplexity recipe) for score."
    )
    return result


# ---------------------------------------------------------------------------- row 10


def row_conversion(ctx: Context) -> RowResult:
    result = RowResult(
        "10",
        "CTranslate2 conversion and cold start",
        "what converting costs (time, disk) per model, and where a converted model's first generation spends its time",
    )
    models = {"bert": ctx.bert(), "gpt2": ctx.gpt2()}
    cache = Path(ctx.env()["LLMTOOL_CACHE"])
    for quantize in ("none", "int8"):
        for model in models.values():
            ctx.run([ctx.llmtool, "cache", "rm", str(model), "-q"])  # removes both quantizations
            sample = ctx.convert(model, quantize)
            entry = Path(sample.stdout.strip().splitlines()[-1]) if sample.returncode == 0 else None
            size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file()) if entry else 0
            weights = sum(f.stat().st_size for f in model.glob("*.safetensors"))
            result.table.append(
                {
                    "model": ctx.show(model),
                    "quantization": "float32" if quantize == "none" else "int8",
                    "conversion (s)": round(sample.wall_s, 1),
                    "weights (MB)": round(weights / 1e6, 1),
                    "cache entry (MB)": round(size / 1e6, 1),
                }
            )
    ctx.convert(models["gpt2"])
    probe = [
        ctx.python,
        "-c",
        "import json, sys, time; t0 = time.perf_counter()\n"
        "import llmtool.engines.choice\nfrom llmtool.engines.ct2.convert import ensure_entry\n"
        "from llmtool.engines.ct2.decoder import load_decoder\n"
        "from llmtool.engines.ct2.tokenizer import load_tokenizer\n"
        "import ctranslate2, numpy, tokenizers\nt1 = time.perf_counter()\n"
        f"entry = ensure_entry({str(models['gpt2'])!r}, 'float32')\n"
        "tok = load_tokenizer(entry); dec = load_decoder(entry, 'cpu', 'float32'); t2 = time.perf_counter()\n"
        f"ids = tok({FIRST_PROMPT!r})['input_ids']\n"
        "out = dec.generate([ids], max_new_tokens=1, greedy=True); t3 = time.perf_counter()\n"
        f"out = dec.generate([ids], max_new_tokens={ctx.scale.first_tokens}, greedy=True); t4 = time.perf_counter()\n"
        "print(json.dumps({'import': t1 - t0, 'load': t2 - t1, 'first token': t3 - t2, "
        f"'{ctx.scale.first_tokens} tokens': t4 - t3, 'torch imported': 'torch' in sys.modules}}))",
    ]
    runs = [ctx.run(probe, keep_stdout=True) for _ in range(max(1, ctx.scale.reps))]
    parsed = [json.loads(r.stdout.strip().splitlines()[-1]) for r in runs if r.returncode == 0]
    if parsed:
        row = {k: median_of([p[k] for p in parsed]) for k in parsed[0] if k != "torch imported"}
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in row.items())
        result.notes.append(
            f"Cold start of a converted {ctx.show(models['gpt2'])} (median of {len(parsed)} fresh processes): "
            f"{parts}; torch imported: {parsed[0]['torch imported']}. "
            f"Conversion runs CTranslate2's converter (which loads the model with Transformers) into {ctx.show(cache)}."
        )
    return result


def median_of(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


ROWS: dict[str, Callable[[Context], RowResult]] = {
    "1": row_startup,
    "2": row_first_result,
    "3": row_fill_mask,
    "4": row_generate_one,
    "5": row_generate_many,
    "6": row_finetune,
    "7": row_streaming,
    "8": row_scaling,
    "9": row_engines,
    "10": row_conversion,
}
