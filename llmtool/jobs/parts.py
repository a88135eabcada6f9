"""The job directory on disk: one part file per finished chunk, written so that a part that exists is whole.

Layout of DIR::

    manifest.json             what the job is (llmtool.jobs.manifest), written once
    count.json                records and chunks in the input, written by the first worker that read it all
    part-000000.jsonl         chunk 0's records, exactly as the plain run prints them (no TSV header)
    part-000003.failed        why chunk 3 failed (one line); removed when the part is written
    .part-000004.jsonl.tmp-HOST-PID   chunk 4 in the making (a killed worker's is removed on rerun)

A part is written to its temporary name, flushed, fsynced and renamed: rename is atomic, so a reader
sees no part or a whole one, and a worker killed at any moment leaves at most a temporary file. Part
names are fixed by the chunk number (never random), so a rerun can neither duplicate nor lose a chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from llmtool.io.formats import Formatter, OutputFormat, write_records

EXTENSIONS: dict[str, str] = {"text": "txt", "jsonl": "jsonl", "tsv": "tsv", "csv": "csv"}
COUNT_FILE = "count.json"


def part_name(chunk: int, fmt: str) -> str:
    return f"part-{chunk:06d}.{EXTENSIONS[fmt]}"


def failed_name(chunk: int) -> str:
    return f"part-{chunk:06d}.failed"


def chunk_of(name: str) -> int | None:
    """The chunk number of a part (or failure marker) file name; None for other files."""
    if not name.startswith("part-"):
        return None
    digits = name[5:].split(".", 1)[0]
    return int(digits) if digits.isdigit() else None


def header(fmt: OutputFormat, formatter: Formatter) -> str:
    """What the plain run prints before the first record (the TSV header), once per job."""
    import io

    buffer = io.StringIO()
    write_records([], fmt, formatter, out=buffer)
    return buffer.getvalue()


class _AfterHeader:
    """A text stream that drops the first ``skip`` characters written to it (write_records' header)."""

    def __init__(self, stream: IO[str], skip: int) -> None:
        self.stream, self.skip = stream, skip

    def write(self, text: str) -> int:
        if self.skip:
            dropped = min(self.skip, len(text))
            self.skip -= dropped
            text = text[dropped:]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_temporaries(folder: Path, chunk: int) -> None:
    """Remove what a killed worker left of ``chunk`` (only the chunk's owner ever writes it)."""
    for path in folder.glob(f".part-{chunk:06d}.*.tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def write_part(
    folder: Path, chunk: int, results: Iterable[dict[str, Any]], fmt: OutputFormat, formatter: Formatter
) -> int:
    """Write one chunk's records as its part (through a temporary name); return how many."""
    final = folder / part_name(chunk, fmt)
    tmp = folder / f".{final.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as stream:
            out: Any = _AfterHeader(stream, len(header(fmt, formatter)))
            written = write_records(results, fmt, formatter, out=out)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    with contextlib.suppress(FileNotFoundError):
        (folder / failed_name(chunk)).unlink()
    fsync_dir(folder)
    return written


def mark_failed(folder: Path, chunk: int, message: str) -> None:
    """Leave why ``chunk`` failed, for ``llmtool job status`` (a rerun tries the chunk again)."""
    path = folder / failed_name(chunk)
    tmp = folder / f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}"
    tmp.write_text(" ".join(message.split()) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def is_done(folder: Path, chunk: int, fmt: str) -> bool:
    return (folder / part_name(chunk, fmt)).is_file()


def write_count(folder: Path, records: int, chunk_size: int, files: list[int]) -> None:
    """Record how many records and chunks the input has, and each file's records (every worker that
    reads it all writes the same; later readers skip files that hold none of their chunks)."""
    chunks = -(-records // chunk_size)
    tmp = folder / f".{COUNT_FILE}.tmp-{socket.gethostname()}-{os.getpid()}"
    tmp.write_text(json.dumps({"records": records, "chunks": chunks, "files": files}) + "\n", encoding="utf-8")
    os.replace(tmp, folder / COUNT_FILE)


def read_count(folder: Path) -> dict[str, Any] | None:
    """``{"records", "chunks", "files"}`` once a worker has read the whole input, else None."""
    try:
        data = json.loads((folder / COUNT_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return {"records": int(data["records"]), "chunks": int(data["chunks"]), "files": list(data.get("files", []))}


def listing(folder: Path, fmt: str) -> tuple[set[int], dict[int, str], list[str]]:
    """(done chunks, failed chunks with their reason, temporary files) in ``folder``."""
    done: set[int] = set()
    failed: dict[int, str] = {}
    temporaries: list[str] = []
    suffix = "." + EXTENSIONS[fmt]
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith(".part-") and ".tmp-" in name:
            temporaries.append(name)
            continue
        chunk = chunk_of(name)
        if chunk is None:
            continue
        if name.endswith(suffix):
            done.add(chunk)
        elif name.endswith(".failed"):
            failed[chunk] = Path(entry.path).read_text(encoding="utf-8").strip()
    return done, {c: r for c, r in failed.items() if c not in done}, sorted(temporaries)


def merged(folder: Path, fmt: str, chunks: int, head: str) -> Iterator[bytes]:
    """The job's output: the header, then every part in chunk order."""
    if head:
        yield head.encode("utf-8")
    for chunk in range(chunks):
        with open(folder / part_name(chunk, fmt), "rb") as part:
            while block := part.read(1 << 20):
                yield block
