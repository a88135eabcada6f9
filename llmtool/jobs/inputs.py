"""A job's input: one or more files (a glob), read in order as one sequence of records, cut into chunks.

Chunk c holds records [cN, (c+1)N) of that sequence (blank lines do not count, as in a plain run), so
every record keeps one global index however the job is sharded. Nothing holds the whole input: a
reader walks the files forward, parsing the records of chunks it skips only to count them, and hands
on the records of one chunk at a time.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from llmtool.errors import InputError, UsageError

Item = Any  # an input record of the command (llmtool.io.inputs.Record, tasks.classify.Example, ...)
Read = Callable[[str], Iterable[Item]]  # one file's records, as the command reads --input FILE


def expand(spec: str) -> list[str]:
    """The files of ``--input``: the file itself when it exists, else the files the glob matches, sorted."""
    if spec == "-":
        raise UsageError("--output-dir needs --input FILE or a glob; a job cannot resume from stdin")
    if os.path.exists(spec):
        return [spec]
    matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
    if not matches:
        raise InputError("no such file, and no file matches it as a glob", source=spec)
    return matches


def describe(paths: list[str]) -> list[dict[str, object]]:
    """Name, size and modification time of each input, for the manifest."""
    described: list[dict[str, object]] = []
    for path in paths:
        st = os.stat(path)
        described.append({"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return described


class ChunkReader:
    """Chunks of the input in increasing order, read forward once; asking for an earlier chunk reopens
    the input (a Ray actor that gets chunk 7 after chunk 9).

    With ``file_counts`` (the records of each file, from ``count.json`` once a worker has read the
    whole input) a file that holds no wanted chunk is skipped without being read."""

    def __init__(self, paths: list[str], read: Read, size: int, file_counts: list[int] | None = None) -> None:
        self.paths, self.read, self.size = paths, read, size
        self.total: int | None = None  # records in the input, once read to the end
        self.file_counts: list[int] = []  # records of each file passed so far
        self.known = file_counts if file_counts is not None and len(file_counts) == len(paths) else None
        self._wanted: Callable[[int], bool] = lambda chunk: True
        self._open()

    def _open(self) -> None:
        self._items = self._records()
        self._next: Item | None = None
        self._seen = 0  # records taken from self._items, or skipped with their file
        self.file_counts = []

    def _records(self) -> Iterator[Item]:
        index = 0
        for number, path in enumerate(self.paths):
            known = self.known[number] if self.known is not None else None
            if known is not None and not self._holds_wanted(index, known):
                index += known
                self._seen += known
                self.file_counts.append(known)
                continue
            start = index
            for item in self.read(path):
                yield item if item.index == index else dataclasses.replace(item, index=index)
                index += 1
            self.file_counts.append(index - start)

    def _holds_wanted(self, start: int, count: int) -> bool:
        """Whether records [start, start + count) hold a record of a wanted chunk."""
        return count > 0 and any(
            self._wanted(c) for c in range(start // self.size, (start + count - 1) // self.size + 1)
        )

    def _take(self) -> Item | None:
        if self._next is not None:
            item, self._next = self._next, None
            return item
        item = next(self._items, None)
        if item is None:
            self.total = self._seen
        else:
            self._seen += 1
        return item

    def chunks(self, wanted: Callable[[int], bool]) -> Iterator[tuple[int, list[Item]]]:
        """(chunk, its records) for each wanted chunk, to the end of the input (the rest only counted)."""
        self._wanted = wanted
        while True:
            item = self._take()
            if item is None:
                return
            chunk = item.index // self.size
            if not wanted(chunk):
                continue
            group = [item]
            while (nxt := self._take()) is not None and nxt.index // self.size == chunk:
                group.append(nxt)
            self._next = nxt
            yield chunk, group

    def chunk(self, number: int) -> list[Item]:
        """The records of one chunk (none past the end)."""
        upcoming = self._next.index if self._next is not None else self._seen
        if upcoming > number * self.size:
            self._open()
        for _, group in self.chunks(lambda c: c == number):
            return group
        return []

    def count(self) -> int:
        """Read to the end; the number of records."""
        for _ in self.chunks(lambda c: False):
            pass  # with known file counts, nothing is read
        assert self.total is not None
        return self.total
