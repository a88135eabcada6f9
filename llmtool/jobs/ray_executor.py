"""``--executor ray``: every unfinished chunk of a job, run by a pool of Ray actors.

Each actor (:class:`ChunkActor`) builds one :class:`llmtool.jobs.run.Worker`, so it loads the model
once and writes parts through the same protocol as any worker: a chunk's part appears whole or not at
all, so Ray's retries are safe. An actor that dies (killed, out of memory, its node lost) is restarted
by Ray and the chunk it held is run again (``max_restarts``, ``max_task_retries``); the temporary
file it left is removed first. An error in the data (a bad line, exit 2) is not retried: it fails the
job with its one line, as in a plain run.

The driver (the ``llmtool`` process) counts the records, then hands the actors chunk numbers, in
order, as each becomes free (``ActorPool``); results never pass through the object store (an actor
writes its part itself and answers with a count), and a local cluster started here gets a small object
store. ``RAY_ADDRESS`` (or ``ray start --head`` beforehand) joins an existing cluster instead; the job
directory must then be on storage every node can write.

Ray is imported only here, only for ``--executor ray``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from llmtool.errors import LlmtoolError, UsageError
from llmtool.io.console import Console
from llmtool.jobs import parts
from llmtool.jobs.inputs import ChunkReader
from llmtool.jobs.worker import JobOptions, JobSpec, Worker

OBJECT_STORE_BYTES = 256 * 1024 * 1024  # a local cluster's object store: only chunk numbers and counts cross it
RETRIES = 3  # restarts of a dead actor, and runs of the chunk it held


class ChunkActor:
    """One Ray actor: a worker that keeps its model and its input reader between chunks."""

    def __init__(self, spec: JobSpec) -> None:
        self.worker = Worker(spec)

    def run(self, chunk: int) -> tuple[int, int, int]:
        """(chunk, records written or -1 when its part existed, this process's id)."""
        return chunk, self.worker.run_chunk(chunk), os.getpid()


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'llmtool[ray]'") from None
    return ray


def run_on_ray(spec: JobSpec, job: JobOptions, console: Console) -> None:
    """Run every chunk of the job that has no part on ``workers`` actors."""
    ray = import_ray()
    workers = job.workers or 2
    reader = ChunkReader(spec.paths, spec.read, spec.chunk_size, spec.file_counts)
    total = reader.count()
    parts.write_count(spec.folder, total, spec.chunk_size, reader.file_counts)
    spec = dataclasses.replace(spec, file_counts=reader.file_counts)  # actors skip files without their chunk
    chunks = -(-total // spec.chunk_size)
    todo = [c for c in range(chunks) if not parts.is_done(spec.folder, c, spec.fmt)]
    console.info(f"ray: {len(todo)} of {chunks} chunk(s) to run on {workers} actor(s)")
    if not todo:
        return
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS") or None
        local: dict[str, Any] = {}
        if address is None:
            needed = workers * job.cpus_per_worker
            local = {
                "num_cpus": max(os.cpu_count() or 1, int(-(-needed // 1))),
                "object_store_memory": OBJECT_STORE_BYTES,
            }
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=True,
            **local,
        )
    try:
        actor = ray.remote(
            num_cpus=job.cpus_per_worker,
            num_gpus=job.gpus_per_worker,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )(ChunkActor)
        pool = ray.util.ActorPool([actor.remote(spec) for _ in range(min(workers, len(todo)))])
        written = 0
        try:
            for chunk, count, pid in pool.map_unordered(lambda a, c: a.run.remote(c), todo):
                written += count >= 0
                console.info(f"chunk {chunk}: {max(count, 0)} records (actor pid {pid})")
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, LlmtoolError):
                raise cause from None
            raise
        console.info(f"ray: wrote {written} part(s) ({spec.folder})")
    finally:
        if started:
            ray.shutdown()
