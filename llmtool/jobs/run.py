"""Running a job (``--output-dir``): check the directory's manifest, then run this worker's shard, or
hand every unfinished chunk to Ray (:mod:`llmtool.jobs.ray_executor`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from llmtool.errors import UsageError
from llmtool.io.console import Console
from llmtool.io.formats import Formatter, OutputFormat
from llmtool.jobs import manifest as manifests
from llmtool.jobs import parts
from llmtool.jobs.inputs import Read, describe, expand
from llmtool.jobs.local import device_list, plan, run_processes
from llmtool.jobs.shard import select
from llmtool.jobs.worker import EXECUTORS, NO_JOB, JobOptions, JobSpec, Task, Worker

__all__ = ["NO_JOB", "JobOptions", "run_job"]


def run_job(job: JobOptions, read: Read, task: Task, fmt: OutputFormat, formatter: Formatter, console: Console) -> None:
    """Run the chunks of ``job`` this worker owns (or, with Ray, every unfinished chunk) into --output-dir."""
    if job.output_dir is None:
        raise UsageError("a job needs --output-dir")
    if job.input is None:
        raise UsageError("--output-dir needs --input FILE or a glob (a job reads files, not TEXT or stdin)")
    if job.executor not in EXECUTORS:
        raise UsageError(f"unknown --executor {job.executor!r}; use {'|'.join(EXECUTORS)}")
    if job.executor == "ray" and job.shard is not None:
        raise UsageError("--shard does not go with --executor ray (Ray hands every unfinished chunk to its actors)")
    if job.chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    if fmt not in ("text", "jsonl", "tsv"):
        raise UsageError(f"--format {fmt} does not go with --output-dir; use text, jsonl or tsv")
    shard = select(job.shard)  # a bad --shard or launcher variable is an error before DIR is touched
    if job.executor == "ray" and device_list(job.device):
        raise UsageError(
            "a device list (--device cuda:0,1) is for --executor local; Ray places actors by --gpus-per-worker"
        )
    if job.executor == "ray":
        from llmtool.jobs.ray_executor import import_ray

        import_ray()  # without the extra: one line, and nothing written
    paths = expand(job.input)
    folder = Path(job.output_dir)
    m = job.model
    model = manifests.model_identity(
        m.get("model") or "", m.get("revision"), m.get("engine") or "", m.get("quantize") or ""
    )
    head = parts.header(fmt, formatter)
    manifest = manifests.build(job.command, job.settings, model, describe(paths), job.chunk_size, fmt, head)
    manifests.ensure(folder, manifest)
    counted = parts.read_count(folder)
    spec = JobSpec(folder, paths, read, task, job.chunk_size, fmt, formatter, counted["files"] if counted else None)
    if job.executor == "ray":
        from llmtool.jobs.ray_executor import run_on_ray

        run_on_ray(spec, job, console)
        return
    if (job.workers or 1) > 1 or device_list(job.device):
        run_processes(plan(shard, job.workers or 1, job.device, sys.argv[1:], os.environ))
        return
    worker = Worker(spec)
    try:
        written, skipped = worker.run_shard(shard, console)
    finally:
        worker.close()
    console.info(f"shard {shard}: wrote {written} part(s), {skipped} already done ({folder})")
