"""The benchmark rows of issue 5: each runs llmtool and its baseline side by side.

A row function takes the run's :class:`Context` and returns a :class:`RowResult`: the measured
variants, derived figures (lines/s, tokens/s), and checks of the goals. A goal missed is a
finding, never an error: the harness exits 0 whatever the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import assets
from bench.harness import Measured, Sample, Stats, Variant, alternate, run_process

BASELINES = Path(__file__).resolve().parent / "baselines"


# ---------------------------------------------------------------------------- sizes of the work


@dataclass(frozen=True)
class Scale:
    """How much work each row does; ``FULL`` is what issue 5 asks for, ``QUICK`` a smoke run."""

    reps: int  # measured repetitions per variant
    startup_reps: int  # row 1's repetitions (each run is cheap, the medians need more of them)
    warmup: int  # warm-up runs per variant (on a small input)
    warm_lines: int  # lines (or prompts) in a warm-up run
    fill_lines: int  # row 3: piped lines for llmtool and the batched pipeline
    one_at_a_time_lines: int  # row 3: lines for the one-at-a-time pipeline (its rate is flat in N)
    sweep_lines: int  # row 3: lines per run of the batch-size sweep
    sweep_sizes: tuple[int, ...]  # row 3: pipeline batch sizes tried
    gen1_tokens: int  # row 4: new tokens, batch 1
    gen1_reps: int  # row 4: in-process repetitions
    gen_prompts: int  # row 5: piped prompts
    gen_tokens: int  # row 5: new tokens per prompt
    first_tokens: int  # row 2: new tokens of the first generation
    finetune_rows: int  # row 6: CSV rows
    stream_lines: tuple[int, int]  # row 7: small and large input
    scale_lines: tuple[int, int]  # row 8: fill-mask lines, 1x and 10x
    scale_prompts: tuple[int, int]  # row 8: prompts, 1x and 10x
    scale_tokens: int  # row 8: new tokens per prompt


FULL = Scale(
    reps=3,
    startup_reps=10,
    warmup=1,
    warm_lines=16,
    fill_lines=2000,
    one_at_a_time_lines=500,
    sweep_lines=256,
    sweep_sizes=(1, 4, 8, 16, 32, 64),
    gen1_tokens=128,
    gen1_reps=5,
    gen_prompts=32,
    gen_tokens=64,
    first_tokens=20,
    finetune_rows=2000,
    stream_lines=(1000, 100_000),
    scale_lines=(100, 1000),
    scale_prompts=(4, 40),
    scale_tokens=32,
)

QUICK = Scale(
    reps=1,
    startup_reps=3,
    warmup=1,
    warm_lines=4,
    fill_lines=64,
    one_at_a_time_lines=32,
    sweep_lines=32,
    sweep_sizes=(16,),
    gen1_tokens=16,
    gen1_reps=2,
    gen_prompts=8,
    gen_tokens=8,
    first_tokens=20,
    finetune_rows=200,
    stream_lines=(100, 5000),
    scale_lines=(10, 100),
    scale_prompts=(2, 8),
    scale_tokens=8,
)


# ---------------------------------------------------------------------------- results


@dataclass
class Check:
    """One goal of a row: a measured figure against its target."""

    what: str
    value: float | None
    goal: str  # e.g. ">= 1.3" or "< 0.3 s"
    met: bool | None  # None when it could not be measured

    @classmethod
    def at_least(cls, what: str, value: float | None, target: float, unit: str = "x") -> Check:
        return cls(what, value, f">= {target:g}{unit}", None if value is None else value >= target)

    @classmethod
    def at_most(cls, what: str, value: float | None, target: float, unit: str = "x") -> Check:
        return cls(what, value, f"<= {target:g}{unit}", None if value is None else value <= target)


@dataclass
class RowResult:
    id: str
    title: str
    goal: str
    variants: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    table: list[dict[str, Any]] = field(default_factory=list)  # extra rows: a sweep, a scaling table
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0  # how long the row took to run

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- context


@dataclass
class Context:
    """Everything the rows share: the scale, the models, where to put things, how to run things."""

    scale: Scale
    assets: assets.Assets
    work: Path  # bench/out/<run>: inputs and outputs of this run
    device: str  # cpu or cuda
    size: str | None = None  # force this model size on every row (a smoke run uses "tiny")
    log: Callable[[str], None] = print
    pipeline_batch: int | None = None  # the best batch size found by row 3, reused by row 8

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def llmtool(self) -> str:
        """The console script installed beside this interpreter: the one a user runs."""
        beside = Path(sys.executable).parent / "llmtool"
        return str(beside) if beside.exists() else shutil.which("llmtool") or "llmtool"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMTOOL_")}
        env["HF_HUB_OFFLINE"] = "1"  # everything is local; no side may touch the network
        # Bytecode caching as on a usual install (some sandboxes turn it off), in a folder of our
        # own: otherwise both sides recompile parts of transformers on every start.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(self.work.parent / "pycache")
        env.pop("PYTHONUNBUFFERED", None)  # both sides get the ordinary block-buffered pipes
        # bench/ is not an installed package: the in-process worker finds it through the path.
        env["PYTHONPATH"] = os.pathsep.join([str(assets.BENCH_DIR.parent), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        return env

    def bert(self, size: str = "base") -> Path:
        return self.assets.bert[self.size or size]

    def gpt2(self, size: str = "base") -> Path:
        return self.assets.gpt2[self.size or size]

    def run(self, argv: Sequence[str], stdin: bytes | None = None, keep_stdout: bool = False) -> Sample:
        return run_process(argv, stdin, env=self.env(), keep_stdout=keep_stdout)

    def device_args(self) -> list[str]:
        return ["--device", self.device]

    def baseline(self, script: str, *args: str) -> list[str]:
        return [self.python, str(BASELINES / script), *args]

    def lines(self, name: str, lines: list[str]) -> bytes:
        """The bytes piped in; also saved under the run folder, to reproduce by hand."""
        path = assets.write_lines(self.work / "inputs" / name, lines)
        return path.read_bytes()

    def show(self, path: Path) -> str:
        """A path as shown in the results: relative to the repository when inside it."""
        try:
            return str(path.relative_to(assets.BENCH_DIR.parent))
        except ValueError:
            return str(path)


def _median(m: Measured, attr: str = "wall_s") -> float:
    return m.stat(attr).median


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _variants_json(measured: Sequence[Measured], per: dict[str, tuple[int, str]] | None = None) -> list[dict[str, Any]]:
    """Each variant's statistics, with a rate (``units/s``) when ``per`` says how many units it did."""
    out = []
    for m in measured:
        row = m.to_json()
        if per and m.name in per:
            n, unit = per[m.name]
            row["units"] = n
            row["unit"] = unit
            row["rate_per_s"] = n / _median(m)
        out.append(row)
    return out


def _failures(measured: Sequence[Measured], result: RowResult) -> bool:
    """Note failed runs; True when any variant failed (its figures are then meaningless)."""
    bad = False
    for m in measured:
        failed = m.failed()
        if failed is not None:
            bad = True
            tail = " ".join(failed.stderr_tail.split()[-40:])
            result.notes.append(f"{m.name} exited {failed.returncode}: ...{tail}")
    return bad


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
    _failures(measured, result)
    result.variants = _variants_json(measured)
    python, llmtool, transformers = (_median(m) for m in measured)
    result.checks = [
        Check.at_most("llmtool --help wall time", llmtool, 0.3, " s"),
        Check.at_least("transformers --help / llmtool --help", _ratio(transformers, llmtool), 10),
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
        "one fill-mask and one 20-token generation through the CLI in <= 0.7x the wall time of a "
        "plain pipeline(...) script",
    )
    bert, gpt2 = ctx.bert(), ctx.gpt2()
    tokens = str(ctx.scale.first_tokens)
    dev = ctx.device_args()
    variants = [
        Variant(
            "llmtool fill-mask",
            f'llmtool fill-mask "{FIRST_MASK}" -m {ctx.show(bert)}',
            lambda: ctx.run([ctx.llmtool, "fill-mask", FIRST_MASK, "-m", str(bert), *dev]),
        ),
        Variant(
            "pipeline fill-mask script",
            f'python bench/baselines/first_fill_mask.py {ctx.show(bert)} "{FIRST_MASK}"',
            lambda: ctx.run(ctx.baseline("first_fill_mask.py", str(bert), FIRST_MASK, ctx.device)),
        ),
        Variant(
            "llmtool generate",
            f'llmtool generate "{FIRST_PROMPT}" -t {tokens} --greedy -m {ctx.show(gpt2)}',
            lambda: ctx.run([ctx.llmtool, "generate", FIRST_PROMPT, "-t", tokens, "--greedy", "-m", str(gpt2), *dev]),
        ),
        Variant(
            "pipeline generate script",
            f'python bench/baselines/first_generate.py {ctx.show(gpt2)} "{FIRST_PROMPT}"',
            lambda: ctx.run(ctx.baseline("first_generate.py", str(gpt2), FIRST_PROMPT, ctx.device)),
        ),
    ]
    measured = alternate(variants, ctx.scale.reps, ctx.scale.warmup, ctx.log)
    _failures(measured, result)
    result.variants = _variants_json(measured)
    fill, fill_base, gen, gen_base = (_median(m) for m in measured)
    result.checks = [
        Check.at_most("fill-mask: llmtool / pipeline script", _ratio(fill, fill_base), 0.7),
        Check.at_most("generate: llmtool / pipeline script", _ratio(gen, gen_base), 0.7),
    ]
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
    failed = _failures(measured, result)
    counts = [s.fill_lines, s.fill_lines, s.one_at_a_time_lines]
    result.variants = _variants_json(measured, {m.name: (n, "lines") for m, n in zip(measured, counts, strict=True)})
    rates = [n / _median(m) for m, n in zip(measured, counts, strict=True)]
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


def _agreement(a: str, b: str) -> float | None:
    la, lb = a.splitlines(), b.splitlines()
    if not la or len(la) != len(lb):
        return None
    return sum(x == y for x, y in zip(la, lb, strict=True)) / len(la)


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
    ours, theirs = (v["rate_per_s"] for v in result.variants)
    result.checks = [
        Check.at_least("llmtool tokens/s / model.generate tokens/s", ours / theirs, 1.0),
        Check.at_least("llmtool tokens/s / bandwidth bound", ours / bound, 0.7, ""),
    ]
    result.table.append(
        {
            "weights read per token (MB)": round(data["weight_bytes_per_token"] / 1e6, 1),
            "KV cache read per token, mean (MB)": round(data["kv_cache_bytes_per_token"] / 1e6, 2),
            "sustained read bandwidth (GB/s)": round(data["bandwidth_bytes_per_s"] / 1e9, 2),
            "bound (tokens/s)": round(bound, 1),
            "llmtool (tokens/s)": round(ours, 1),
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
        result.notes.append(f"The two sides generated different numbers of tokens: {data['new_tokens']}.")
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
    ours = [ctx.llmtool, "generate", "--greedy", "-m", str(gpt2), *dev]
    theirs = ctx.baseline("generate_loop.py", str(gpt2), *dev)
    variants = [
        Variant(
            "llmtool generate",
            f"llmtool generate --greedy -t {s.gen_tokens} -m {ctx.show(gpt2)} < {s.gen_prompts} prompts",
            lambda: ctx.run([*ours, "-t", str(s.gen_tokens)], data, True),
            lambda: ctx.run([*ours, "-t", "4"], warm),
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
    failed = _failures(measured, result)
    result.variants = _variants_json(measured, {m.name: (s.gen_prompts * s.gen_tokens, "tokens") for m in measured})
    ratio = None if failed else _median(measured[1]) / _median(measured[0])
    result.checks = [Check.at_least("loop wall time / llmtool wall time", ratio, 4)]
    agree = _agreement(measured[0].samples[-1].stdout, measured[1].samples[-1].stdout)
    if agree is not None:
        result.notes.append(f"Outputs identical for {agree:.0%} of the prompts (greedy; batching pads on the left).")
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

    def ours(out: str, *extra: str) -> Callable[[], Sample]:
        argv = [ctx.llmtool, "finetune", str(csv_path), "--task", "classify", "-m", str(bert), "--output"]
        folder = ctx.work / out
        return lambda: _fresh(folder) or ctx.run([*argv, str(folder), "--overwrite", *common, *extra, *_ft_dev(ctx)])

    def theirs(out: str, *extra: str) -> Callable[[], Sample]:
        argv = ctx.baseline("finetune_trainer.py", str(csv_path), str(bert), "--output")
        folder = ctx.work / out
        return lambda: _fresh(folder) or ctx.run([*argv, str(folder), *common, *extra, *_ft_dev(ctx)])

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
        0,
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
    failed = _failures([*first_step, *full], result)
    train_rows = int(s.finetune_rows * 0.9)  # both hold out 10% for validation
    result.variants = _variants_json(full, {m.name: (train_rows, "samples") for m in full}) + _variants_json(first_step)
    if not failed:
        speed = _median(full[1]) / _median(full[0])
        memory = _median(full[0], "peak_rss_mb") / _median(full[1], "peak_rss_mb")
        steady = _ratio(_median(full[1]) - _median(first_step[1]), _median(full[0]) - _median(first_step[0]))
        result.checks = [
            Check.at_least("llmtool samples/s / Trainer samples/s (end to end)", speed, 0.97),
            Check.at_least("the same, setup subtracted (full run - 1-step run)", steady, 0.97),
            Check.at_most("llmtool peak RSS / Trainer peak RSS", memory, 1.1),
            Check.at_most(
                "time to first step: llmtool / Trainer (wall of a --max-steps 1 run)",
                _ratio(_median(first_step[0]), _median(first_step[1])),
                1.0,
            ),
        ]
    return result


def _fresh(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _ft_dev(ctx: Context) -> list[str]:
    return ["--device", ctx.device] if ctx.device != "cpu" else []


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
    failed = _failures(measured, result)
    result.variants = _variants_json(
        measured, {m.name: (n, "lines") for m, n in zip(measured, (small, large), strict=True)}
    )
    ratio = None if failed else _median(measured[1], "peak_rss_mb") / _median(measured[0], "peak_rss_mb")
    result.checks = [Check.at_most(f"peak RSS, {large:,} lines / {small:,} lines", ratio, 1.1)]
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
    sizes = [ctx.size] if ctx.size else list(assets.SIZES)
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
    for size in sizes:
        bert, gpt2 = ctx.assets.bert[size], ctx.assets.gpt2[size]
        params_bert, params_gpt2 = _params(bert), _params(gpt2)
        for n in s.scale_lines:
            data = ctx.lines(f"scale-fill-{n}.txt", fill_lines[:n])
            pair = [
                Variant(
                    "llmtool", "", lambda d=data, b=bert: ctx.run([ctx.llmtool, "fill-mask", "-m", str(b), *dev], d)
                ),
                Variant(
                    "baseline",
                    "",
                    lambda d=data, b=bert: ctx.run(
                        ctx.baseline("fill_mask_pipeline.py", str(b), "--batch-size", str(batch), *dev), d
                    ),
                ),
            ]
            warm = 1 if n == s.scale_lines[0] else 0
            result.table.append(
                _scale_row("fill-mask", size, params_bert, n, "lines", alternate(pair, 1, warm, ctx.log))
            )
        for n in s.scale_prompts:
            data = ctx.lines(f"scale-gen-{n}.txt", prompts[:n])
            pair = [
                Variant(
                    "llmtool",
                    "",
                    lambda d=data, g=gpt2: ctx.run(
                        [ctx.llmtool, "generate", "--greedy", "-t", tokens, "-m", str(g), *dev], d
                    ),
                ),
                Variant(
                    "baseline",
                    "",
                    lambda d=data, g=gpt2: ctx.run(
                        ctx.baseline("generate_loop.py", str(g), "--max-new-tokens", tokens, *dev), d
                    ),
                ),
            ]
            warm = 1 if n == s.scale_prompts[0] else 0
            result.table.append(
                _scale_row("generate", size, params_gpt2, n, "prompts", alternate(pair, 1, warm, ctx.log))
            )
    _growth(result)
    result.notes.append(
        f"One run per cell after a warm-up per model; wall time end to end. Baselines: fill-mask pipeline with "
        f"batch_size={batch}; generate: the one-at-a-time model.generate loop, {tokens} new tokens per prompt."
    )
    return result


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


ROWS: dict[str, Callable[[Context], RowResult]] = {
    "1": row_startup,
    "2": row_first_result,
    "3": row_fill_mask,
    "4": row_generate_one,
    "5": row_generate_many,
    "6": row_finetune,
    "7": row_streaming,
    "8": row_scaling,
}
