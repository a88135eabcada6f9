"""Several worker processes on one machine, without a launcher: ``--workers K`` (CPU) or a device list
(``--device cuda:0,1``: one process per GPU).

The process started by the user becomes a supervisor: it starts K copies of its own command line, each
with ``--shard`` set to one part of its own shard (worker I of N splits into I + N*j of N*K, j < K, so
it combines with a launcher's shard), ``--workers 1``, and for a device list ``--device cuda`` with
``CUDA_VISIBLE_DEVICES`` naming one device. Each copy is an ordinary worker (the job protocol makes
them independent); the supervisor waits for all of them and exits with the first failing one's status
(its message is the worker's own line). CPU workers get ``OMP_NUM_THREADS`` = cores / K unless set.

CTranslate2 could also replicate one model over several devices in one process (its ``device_index``
list), but only batches submitted concurrently would use the replicas, and the inference loop submits
one at a time; a process per device uses every device with no change to the engines.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence

import typer

from llmtool.errors import UsageError
from llmtool.jobs.shard import Shard

DEVICE_LIST = re.compile(r"cuda:(\d+(?:,\d+)+)")


def device_list(device: str | None) -> list[str] | None:
    """``cuda:0,1`` -> ["0", "1"]; None for one device (``cuda``, ``cuda:1``, ``cpu``, ``auto``)."""
    match = DEVICE_LIST.fullmatch((device or "").strip().lower())
    return match.group(1).split(",") if match else None


def plan(
    shard: Shard, workers: int, device: str | None, argv: Sequence[str], environ: Mapping[str, str]
) -> list[tuple[list[str], dict[str, str]]]:
    """The (command line, environment) of each worker process."""
    devices = device_list(device)
    count = len(devices) if devices else workers
    if devices and workers not in (1, len(devices)):
        raise UsageError(f"--device {device} starts one worker per device; --workers {workers} disagrees")
    threads = str(max(1, (os.cpu_count() or 1) // count))
    planned = []
    for j in range(count):
        child = Shard(shard.index + shard.count * j, shard.count * count)
        env = dict(environ)
        args = [sys.executable, "-m", "llmtool", *argv, "--shard", str(child), "--workers", "1"]
        if devices:
            env["CUDA_VISIBLE_DEVICES"] = devices[j]
            args += ["--device", "cuda"]
        else:
            env.setdefault("OMP_NUM_THREADS", threads)
        planned.append((args, env))
    return planned


def run_processes(planned: list[tuple[list[str], dict[str, str]]]) -> None:
    """Start every worker, wait for all; exit with the first failure's status."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for args, env in planned:
            procs.append(subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL))
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [c for c in codes if c != 0]
    if failed:
        code = failed[0]
        raise typer.Exit(code if code > 0 else 128 - code)  # killed by signal S: 128 + S, as a shell says
