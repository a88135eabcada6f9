"""What every benchmark row shares: how much work to do, the run's context, and result types."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import assets
from bench.harness import Measured, Sample, run_process

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
    load_average: list[float] = field(default_factory=list)  # 1/5/15-minute load when the row started
    run: dict[str, Any] | None = None  # date, git, command: set when re-measured after the page's run (--update)

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
        env["LLMTOOL_CACHE"] = str(self.work.parent / "llmtool-cache")  # converted models, kept across runs
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

    def convert(self, model: Path, quantize: str = "none") -> Sample:
        """Convert ``model`` for the CTranslate2 engine ahead of a row (timed; a no-op once converted)."""
        return self.run([self.llmtool, "cache", "add", str(model), "--quantize", quantize, "-q"], keep_stdout=True)

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


def median(m: Measured, attr: str = "wall_s") -> float:
    return m.stat(attr).median


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def variants_json(measured: Sequence[Measured], per: dict[str, tuple[int, str]] | None = None) -> list[dict[str, Any]]:
    """Each variant's statistics, with a rate (``units/s``) when ``per`` says how many units it did."""
    out = []
    for m in measured:
        row = m.to_json()
        if per and m.name in per:
            n, unit = per[m.name]
            row["units"] = n
            row["unit"] = unit
            row["rate_per_s"] = n / median(m)
        out.append(row)
    return out


def failures(measured: Sequence[Measured], result: RowResult) -> bool:
    """Note failed runs; True when any variant failed (its figures are then meaningless)."""
    bad = False
    for m in measured:
        failed = m.failed()
        if failed is not None:
            bad = True
            tail = " ".join(failed.stderr_tail.split()[-40:])
            result.notes.append(f"{m.name} exited {failed.returncode}: ...{tail}")
    return bad
