"""Timing machinery: run a command with real pipes, measure it, alternate variants, summarise.

Every measured run is a child process. Its wall time is taken around the whole process (start
to exit), its CPU time and peak resident memory come from the kernel (``wait4``'s rusage for
that child alone, read by ``bench.launch``), and the time to its first byte of stdout is noted
too. Variants of one row
run in alternation (A B C, C B A, ...), after warm-up runs, so that drift in the machine's load
falls on all of them alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_ROOT = Path(__file__).resolve().parent.parent  # where `bench` imports from


@dataclass
class Sample:
    """One run of one command."""

    wall_s: float  # start to exit
    cpu_s: float  # user + system time of the child
    peak_rss_mb: float  # the child's maximum resident set size
    first_output_s: float | None  # start to the first byte on stdout (None: no output)
    returncode: int
    stdout: str = field(repr=False, default="")  # kept only when asked for (verification)
    stdout_lines: int = 0
    stderr_tail: str = field(repr=False, default="")


def run_process(
    argv: Sequence[str],
    stdin_data: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
    keep_stdout: bool = False,
    cwd: str | None = None,
) -> Sample:
    """Run ``argv`` with ``stdin_data`` written into a real pipe; measure it.

    The data is written by a thread while the command runs, as ``cat file | cmd`` would, so a
    command that streams can start before all input has arrived. The command runs under
    ``bench.launch``, which times it and reads its resource use (see there why).
    """
    report_r, report_w = os.pipe()
    launcher = [sys.executable, "-m", "bench.launch", str(report_w), *argv]
    launch_env = dict(env if env is not None else os.environ)
    launch_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_ROOT), launch_env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        launcher,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=launch_env,
        cwd=cwd,
        pass_fds=(report_w,),
        start_new_session=True,  # a timeout kills the command too, not just the launcher
    )
    os.close(report_w)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_chunks: list[bytes] = []
    report_chunks: list[bytes] = []
    threads = [
        threading.Thread(target=_feed, args=(proc.stdin, stdin_data or b""), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, stderr_chunks), daemon=True),
        threading.Thread(target=_read_all, args=(report_r, report_chunks), daemon=True),
    ]
    for t in threads:
        t.start()
    timer = threading.Timer(timeout, _kill_group, args=(proc.pid,))
    timer.start()
    first: float | None = None
    out_chunks: list[bytes] = []
    newlines = 0
    try:
        while chunk := proc.stdout.read1(1 << 16):  # type: ignore[attr-defined]
            if first is None:
                first = time.perf_counter()
            newlines += chunk.count(b"\n")
            if keep_stdout:
                out_chunks.append(chunk)
        proc.wait()
    finally:
        timer.cancel()
    for t in threads:
        t.join(timeout=10)
    proc.stdout.close()
    stderr = b"".join(stderr_chunks)[-4000:].decode("utf-8", "replace")
    try:
        report = json.loads(b"".join(report_chunks))
    except ValueError:  # the launcher died (killed on timeout): only the outer figures are known
        report = {"returncode": proc.returncode or 1}
    if "error" in report:
        raise OSError(f"cannot run {argv[0]}: {report['error']}")
    start = report.get("start", 0.0)
    return Sample(
        wall_s=report.get("wall_s", float("nan")),
        cpu_s=report.get("cpu_s", float("nan")),
        peak_rss_mb=report.get("peak_rss_kib", 0) / 1024,  # Linux reports KiB
        first_output_s=None if first is None else first - start,
        returncode=report["returncode"],
        stdout=b"".join(out_chunks).decode("utf-8", "replace"),
        stdout_lines=newlines,
        stderr_tail=stderr,
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _read_all(fd: int, chunks: list[bytes]) -> None:
    with os.fdopen(fd, "rb") as f:
        chunks.append(f.read())


def _feed(pipe: Any, data: bytes) -> None:
    try:
        view = memoryview(data)
        for i in range(0, len(view), 1 << 16):
            pipe.write(view[i : i + (1 << 16)])
        pipe.close()
    except (BrokenPipeError, OSError):  # the child stopped reading; its exit status tells why
        pass


def _drain(pipe: Any, chunks: list[bytes]) -> None:
    while chunk := pipe.read1(1 << 16):
        chunks.append(chunk)
        if len(chunks) > 64:  # keep the tail only
            del chunks[:32]


# ---------------------------------------------------------------------------- statistics


@dataclass
class Stats:
    """Median and spread of one quantity over the measured repetitions."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        vals = sorted(values)
        if len(vals) >= 4:
            q1, _, q3 = statistics.quantiles(vals, n=4, method="inclusive")
        else:  # too few for quartiles: the range is the honest spread
            q1, q3 = vals[0], vals[-1]
        return cls(statistics.median(vals), q1, q3, vals[0], vals[-1], len(vals))

    def spread(self) -> str:
        """``min-max`` for few samples, the interquartile range for more."""
        if self.n >= 4:
            return f"IQR {_fmt(self.q1)}-{_fmt(self.q3)}"
        return f"{_fmt(self.min)}-{_fmt(self.max)}" if self.n > 1 else "n=1"


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 100 else f"{x:.0f}"


# ---------------------------------------------------------------------------- variants


@dataclass
class Variant:
    """One side of a comparison: a name, the command as shown in the results, and how to run it."""

    name: str
    command: str
    run: Callable[[], Sample]
    warmup: Callable[[], Sample] | None = None  # a cheaper run that warms caches (default: run)


@dataclass
class Measured:
    name: str
    command: str
    samples: list[Sample]

    def stat(self, attr: str) -> Stats:
        return Stats.of([getattr(s, attr) for s in self.samples])

    def failed(self) -> Sample | None:
        return next((s for s in self.samples if s.returncode != 0), None)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "command": self.command}
        for attr in ("wall_s", "cpu_s", "peak_rss_mb"):
            out[attr] = asdict(self.stat(attr))
        firsts = [s.first_output_s for s in self.samples if s.first_output_s is not None]
        if firsts:
            out["first_output_s"] = asdict(Stats.of(firsts))
        out["returncodes"] = [s.returncode for s in self.samples]
        failed = self.failed()
        if failed is not None:
            out["stderr_tail"] = failed.stderr_tail[-600:]
        return out


def alternate(variants: Sequence[Variant], reps: int, warmup: int, log: Callable[[str], None]) -> list[Measured]:
    """Warm each variant up, then run them in alternating order ``reps`` times each."""
    for _ in range(warmup):
        for v in variants:
            sample = (v.warmup or v.run)()
            log(f"    warm-up {v.name}: {sample.wall_s:.2f} s (exit {sample.returncode})")
    measured = [Measured(v.name, v.command, []) for v in variants]
    order = list(range(len(variants)))
    for rep in range(reps):
        for i in order if rep % 2 == 0 else reversed(order):
            sample = variants[i].run()
            measured[i].samples.append(sample)
            log(
                f"    {variants[i].name}: {sample.wall_s:.2f} s wall, {sample.cpu_s:.2f} s cpu, "
                f"{sample.peak_rss_mb:.0f} MB (exit {sample.returncode})"
            )
    return measured


def log_stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
