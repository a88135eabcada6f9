"""A job's worker: the chunks it is given that have no part yet, each written as its part.

The command's own task runs unchanged: :class:`TaskStream` feeds it the records of one chunk after
another through a queue, so the model loads once per worker (per Ray actor) and the task's batching,
ordering and error handling are the plain run's. Each chunk's records come back in input order, one
output record per input, and go to the chunk's part (:func:`llmtool.jobs.parts.write_part`).

Sampling seeds never depend on the sharding: generate seeds each output sequence from (--seed, the
prompt, the sequence number) and fill-mask has no sampling, so a record's output is the same whatever
worker, chunk or batch it falls in (see docs/large-jobs.md).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtool.io.console import Console
from llmtool.io.formats import Formatter, OutputFormat
from llmtool.jobs import parts
from llmtool.jobs.inputs import ChunkReader, Item, Read
from llmtool.jobs.shard import Shard

Task = Callable[[Iterable[Item]], Iterable[dict[str, Any]]]
EXECUTORS = ("local", "ray")
DEFAULT_CHUNK_SIZE = 10_000


@dataclass(frozen=True)
class JobOptions:
    """The job flags every inference command takes (llmtool.cli.jobs adds them)."""

    output_dir: str | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    shard: str | None = None
    executor: str = "local"
    workers: int | None = None  # local: worker processes on this machine (default 1); ray: actors (default 2)
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    command: str = ""  # the command's name
    settings: dict[str, Any] = field(default_factory=dict)  # its flags that decide the output
    model: dict[str, str | None] = field(default_factory=dict)  # model, revision, engine, quantize
    input: str | None = None  # --input: a file or a glob
    device: str | None = None  # --device (a list, cuda:0,1, starts one worker process per device)

    @property
    def active(self) -> bool:
        return self.output_dir is not None


NO_JOB = JobOptions()


@dataclass
class JobSpec:
    """Everything a worker needs to run chunks (it travels to Ray actors, so it holds no open files)."""

    folder: Path
    paths: list[str]
    read: Read
    task: Task
    chunk_size: int
    fmt: OutputFormat
    formatter: Formatter
    file_counts: list[int] | None = None  # records of each input file, once counted (count.json)


class TaskStream:
    """The command's task, started once, fed one chunk at a time; it gives back one record per input."""

    _END = object()

    def __init__(self, task: Task) -> None:
        self.task = task
        self.inbox: queue.Queue[Any] = queue.Queue()
        self.results: Iterator[dict[str, Any]] | None = None
        self.lock = threading.Lock()

    def _items(self) -> Iterator[Item]:
        while (item := self.inbox.get()) is not self._END:
            yield item

    def process(self, items: list[Item]) -> Iterator[dict[str, Any]]:
        if self.results is None:
            self.results = iter(self.task(self._items()))
        for item in items:
            self.inbox.put(item)
        for item in items:
            record = next(self.results, None)
            if record is None:
                raise RuntimeError("the task gave fewer records than it was given inputs")
            if isinstance(record.get("index"), int) and record["index"] != item.index:
                raise RuntimeError(f"the task gave record {record['index']} for input {item.index}")
            yield record

    def close(self) -> None:
        self.inbox.put(self._END)


class Worker:
    """Runs chunks of one job: reads them forward, feeds the task, writes the parts."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.reader = ChunkReader(spec.paths, spec.read, spec.chunk_size, spec.file_counts)
        self.stream = TaskStream(spec.task)

    def done(self, chunk: int) -> bool:
        return parts.is_done(self.spec.folder, chunk, self.spec.fmt)

    def write(self, chunk: int, items: list[Item]) -> int:
        """Write ``chunk``'s part (a failure leaves a marker with its reason, then goes on up)."""
        spec = self.spec
        parts.remove_temporaries(spec.folder, chunk)
        try:
            return parts.write_part(spec.folder, chunk, self.stream.process(items), spec.fmt, spec.formatter)
        except BaseException as exc:
            if isinstance(exc, Exception):
                parts.mark_failed(spec.folder, chunk, str(exc) or type(exc).__name__)
            raise

    def run_chunk(self, chunk: int) -> int:
        """One chunk, by number (Ray); -1 when its part already exists."""
        if self.done(chunk):
            return -1
        items = self.reader.chunk(chunk)
        return self.write(chunk, items) if items else 0

    def run_shard(self, shard: Shard, console: Console) -> tuple[int, int]:
        """Every chunk of ``shard`` without a part, in order; (chunks written, chunks already done)."""
        written = skipped = 0
        for chunk, items in self.reader.chunks(shard.owns):
            if self.done(chunk):
                skipped += 1
                continue
            count = self.write(chunk, items)
            written += 1
            console.info(f"chunk {chunk}: {count} records -> {parts.part_name(chunk, self.spec.fmt)}")
        if self.reader.total == 0:
            console.warn("no input records (the input was empty or only blank lines)")
        if self.reader.total is not None:
            parts.write_count(self.spec.folder, self.reader.total, self.spec.chunk_size, self.reader.file_counts)
        return written, skipped

    def close(self) -> None:
        self.stream.close()
