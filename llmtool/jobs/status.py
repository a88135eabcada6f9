"""What ``llmtool job status`` and ``llmtool job merge`` read from a job directory."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import IO, Any

from llmtool.errors import LlmtoolError, UsageError
from llmtool.jobs import manifest as manifests
from llmtool.jobs import parts


def job_status(folder: Path) -> dict[str, Any]:
    """The job's state: its command, records and chunks (None until a worker has read the whole input),
    the chunks done, failed (with why) and missing, leftover temporary files, and whether it is complete."""
    manifest = manifests.read(folder)
    count = parts.read_count(folder)
    done, failed, temporaries = parts.listing(folder, manifest["format"])
    chunks = count["chunks"] if count is not None else None
    missing = sorted(set(range(chunks)) - done - set(failed)) if chunks is not None else None
    return {
        "directory": str(folder),
        "command": manifest["command"],
        "inputs": len(manifest["inputs"]),
        "chunk_size": manifest["chunk_size"],
        "records": count["records"] if count is not None else None,
        "chunks": chunks,
        "done": len(done),
        "failed": {str(c): failed[c] for c in sorted(failed)},
        "missing": missing,
        "temporaries": temporaries,
        "complete": chunks is not None and len(done & set(range(chunks))) == chunks,
    }


def ranges(numbers: list[int]) -> str:
    """``0-3, 7, 9-10``."""
    spans: list[str] = []
    for n in numbers:
        if spans and spans[-1].split("-")[-1] == str(n - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{n}"
        else:
            spans.append(str(n))
    return ", ".join(spans)


def status_lines(state: dict[str, Any]) -> list[str]:
    chunks = state["chunks"]
    records = "records not counted yet" if state["records"] is None else f"{state['records']} records"
    lines = [
        f"job: {state['command']} over {state['inputs']} file(s), {records}, chunks of {state['chunk_size']}",
        f"chunks: {chunks if chunks is not None else '?'}  done: {state['done']}  failed: {len(state['failed'])}  "
        f"missing: {len(state['missing']) if state['missing'] is not None else '?'}",
    ]
    lines += [f"failed: chunk {c}: {reason}" for c, reason in state["failed"].items()]
    if state["missing"]:
        lines.append(f"missing: {ranges(state['missing'])}")
    if chunks is None:
        lines.append("missing: unknown until a worker has read the whole input (one finishes its shard)")
    if state["temporaries"]:
        lines.append(f"in progress or left by a killed worker: {len(state['temporaries'])} temporary file(s)")
    folder = state["directory"]
    lines.append(f"complete: `llmtool job merge {folder}`" if state["complete"] else "not complete: rerun the job")
    return lines


def _complete(folder: Path) -> tuple[dict[str, Any], int]:
    state = job_status(folder)
    if not state["complete"]:
        missing = "?" if state["missing"] is None else len(state["missing"]) + len(state["failed"])
        raise LlmtoolError(
            f"{folder}: the job is not complete ({missing} chunk(s) without a part); see `llmtool job status {folder}`"
        )
    return manifests.read(folder), int(state["chunks"])


def merge(folder: Path, out: IO[bytes]) -> None:
    """Write the header and every part in order to ``out``."""
    manifest, chunks = _complete(folder)
    for block in parts.merged(folder, manifest["format"], chunks, manifest.get("header", "")):
        out.write(block)
    out.flush()


def merge_parquet(folder: Path, target: Path) -> None:
    """The records of a jsonl job as one Parquet file, written through a temporary name."""
    manifest, chunks = _complete(folder)
    if manifest["format"] != "jsonl":
        raise UsageError(f"--parquet needs a job run with --format jsonl (this one wrote {manifest['format']})")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--parquet needs pyarrow: pip install 'llmtool[parquet]'") from None
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    writer = None
    try:
        for chunk in range(chunks):
            with open(folder / parts.part_name(chunk, "jsonl"), encoding="utf-8") as part:
                rows = [json.loads(line) for line in part]
            if not rows:
                continue
            table = pa.Table.from_pylist(rows, schema=writer.schema if writer is not None else None)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is None:
            raise LlmtoolError(f"{folder}: the job has no records to write")
        writer.close()
        writer = None
        os.replace(tmp, target)
    finally:
        if writer is not None:
            writer.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
