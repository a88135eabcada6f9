"""Inputs from an argument, a file or piped stdin; records out as text, JSON Lines or TSV.

This module imports neither torch nor transformers: the CLI uses it before any model loads.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

from llmtool.errors import InputError, UsageError
from llmtool.io.console import say

STDIN = "<stdin>"
ARGUMENT = "<argument>"

OutputFormat = Literal["text", "jsonl", "tsv", "csv"]  # csv: only for commands whose Formatter has it
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Record:
    """One input record: its text and where it came from, for messages and JSON output."""

    index: int  # 0-based position among the records read (skipped blank lines do not count)
    line: int  # 1-based line (row, for CSV) in the source
    text: str
    source: str = STDIN


# --------------------------------------------------------------------------- reading


def read_records(
    text: str | None = None,
    input_path: str | None = None,
    column: str | None = None,
    *,
    encoding: str = "utf-8",
    stdin: IO[bytes] | None = None,
    stdin_is_tty: bool | None = None,
) -> Iterator[Record]:
    """Records from TEXT, else ``--input FILE``, else piped stdin (``-`` means stdin).

    Blank lines are skipped. A terminal on stdin with no other input is a usage error, never a
    wait. Reading is lazy: records come as lines arrive, so a long stdin streams.
    """
    if text is not None and input_path is not None:
        raise UsageError("give either TEXT or --input, not both")
    if text is not None and text != "-":
        if not text.strip():
            raise InputError("TEXT is empty", source=ARGUMENT)
        return iter([Record(0, 1, text, ARGUMENT)])
    if input_path is not None and input_path != "-":
        # The first record is read now, before any model loads: a bad file fails in a moment.
        return _primed(read_file(input_path, column, encoding=encoding))
    if column is not None:
        raise UsageError("--column applies to --input FILE (.csv, .tsv, .jsonl), not to stdin")
    binary = stdin if stdin is not None else sys.stdin.buffer if sys.stdin is not None else None
    if binary is None:
        raise UsageError("no input: give TEXT, --input FILE, or pipe lines on stdin")
    tty = stdin_is_tty if stdin_is_tty is not None else _isatty(binary)
    if tty:
        raise UsageError("no input: give TEXT, --input FILE, or pipe lines on stdin (stdin is a terminal)")
    return records_of(decode_lines(binary, STDIN, encoding), STDIN)


def _primed(records: Iterator[Record]) -> Iterator[Record]:
    """The same records, with the first one already read (so its errors are raised here)."""
    for first in records:
        return itertools.chain([first], records)
    return iter(())


def read_file(path: str, column: str | None = None, *, encoding: str = "utf-8") -> Iterator[Record]:
    """Records from a ``.txt`` (a line each), ``.jsonl`` (a field) or ``.csv``/``.tsv`` (a column)."""
    check_readable(path)
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _jsonl_records(path, column or "text", encoding)
    if suffix in (".csv", ".tsv"):
        from llmtool.io.tables import column_records

        return column_records(path, column, encoding)
    if column is not None:
        raise UsageError(f"--column applies to .csv, .tsv and .jsonl input, not {path}")
    return records_of(decode_lines(open_binary(path), path, encoding), path)


def check_readable(path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise InputError("no such file", source=path)
    if p.is_dir():
        raise InputError("is a directory, not a file", source=path)
    if not os.access(p, os.R_OK):
        raise InputError("permission denied", source=path)


def open_binary(path: str) -> IO[bytes]:
    return open(path, "rb")


def _isatty(stream: IO[bytes]) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError):
        return False


def decode_lines(binary: IO[bytes], source: str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line, without its line end (LF, CRLF or a lone CR).

    Decoding is strict: a byte that is not valid in ``encoding`` is an error naming the line and
    column, rather than a silent replacement character in the model's input. A UTF-8 byte-order
    mark at the start is dropped. NUL bytes are refused (they are never text).
    """
    if encoding.replace("-", "").replace("_", "").lower().startswith(("utf16", "utf32")):
        yield from _decode_wide(binary, source, encoding)
        return
    lineno = 0
    try:
        for raw in _split_lines(binary):
            lineno += 1
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf") and encoding.replace("-", "").lower() == "utf8":
                raw = raw[3:]
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as exc:
                if lineno == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
                    raise InputError(
                        "looks like UTF-16 (it starts with a UTF-16 byte-order mark); pass "
                        "--encoding utf-16 or convert it with iconv -f utf-16 -t utf-8",
                        source=source,
                        line=1,
                        column=1,
                    ) from None
                column = len(raw[: exc.start].decode(encoding, errors="replace")) + 1
                raise InputError(
                    f"not valid {encoding} (byte 0x{raw[exc.start]:02x}); {encoding_hint(raw)}",
                    source=source,
                    line=lineno,
                    column=column,
                ) from None
            if "\x00" in line:
                raise InputError(
                    "contains a NUL byte; is this a binary file?",
                    source=source,
                    line=lineno,
                    column=line.index("\x00") + 1,
                )
            yield lineno, line
    finally:
        if binary is not getattr(sys.stdin, "buffer", None):
            binary.close()


def encoding_hint(raw: bytes) -> str:
    """What to do about bytes that did not decode: name the likely encoding when the bytes read as
    Chinese in GBK/GB18030 (every non-ASCII character a CJK one, made of two high bytes, as GB2312's
    are), else the usual suspect for Western text (latin-1)."""
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        text = ""
    wide = [c for c in text if ord(c) > 0x7F]
    if wide and all(_cjk(c) and all(b >= 0x80 for b in c.encode("gb18030")) for c in wide):
        return "it looks like Chinese in GBK/GB18030: pass --encoding gb18030 (or iconv -f gb18030 -t utf-8)"
    return "convert the file (e.g. iconv -f latin1 -t utf-8) or pass --encoding (e.g. latin-1)"


def _cjk(char: str) -> bool:
    """CJK ideographs, CJK punctuation and full-width forms."""
    code = ord(char)
    return 0x3000 <= code <= 0x303F or 0x3400 <= code <= 0x9FFF or 0xF900 <= code <= 0xFAFF or 0xFF00 <= code <= 0xFFEF


def _decode_wide(binary: IO[bytes], source: str, encoding: str) -> Iterator[tuple[int, str]]:
    """UTF-16/32 cannot be split on newline bytes; decode the stream first, then split."""
    wrapper = io.TextIOWrapper(binary, encoding=encoding, errors="strict", newline=None)
    lineno = 0
    try:
        for line in wrapper:
            lineno += 1
            line = line.rstrip("\n")
            if "\x00" in line:
                raise InputError("contains a NUL character", source=source, line=lineno, column=line.index("\x00") + 1)
            yield lineno, line.lstrip("\ufeff") if lineno == 1 else line
    except UnicodeError as exc:
        raise InputError(f"not valid {encoding}: {exc}", source=source, line=lineno + 1) from None
    finally:
        if binary is not getattr(sys.stdin, "buffer", None):
            wrapper.close()


def _split_lines(binary: IO[bytes]) -> Iterator[bytes]:
    """Lines ending in LF, CRLF or a lone CR (classic Mac files); each comes as soon as it arrives."""
    for raw in binary:
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if b"\r" in raw:
            yield from raw.split(b"\r")
        else:
            yield raw


def records_of(lines: Iterable[tuple[int, str]], source: str) -> Iterator[Record]:
    index = 0
    for lineno, line in lines:
        if line.strip():
            yield Record(index, lineno, line, source)
            index += 1


def _jsonl_records(path: str, field: str, encoding: str) -> Iterator[Record]:
    index = 0
    for lineno, line in decode_lines(open_binary(path), path, encoding):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", source=path, line=lineno, column=exc.colno) from None
        if not isinstance(obj, dict):
            raise InputError(f"expected a JSON object with a {field!r} field", source=path, line=lineno)
        if field not in obj:
            raise InputError(f"no {field!r} field{suggest(field, list(obj))}", source=path, line=lineno)
        value = obj[field]
        if not isinstance(value, str):
            raise InputError(f"field {field!r} is not a string", source=path, line=lineno)
        if value.strip():
            yield Record(index, lineno, value, path)
            index += 1


def suggest(name: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` when a close match exists, for messages about a missing name."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    if not close:
        close = [c for c in choices if c.strip().lower() == name.strip().lower()]
    return f" (did you mean {close[0]!r}?)" if close else ""


def error_record(item: Any, reason: str) -> dict[str, Any]:
    """The record of an input that could not be processed (--skip-invalid): where it was, and why."""
    return {"index": item.index, "line": item.line, "input": item.text, "error": reason}


def as_records(inputs: str | Iterable[str] | Iterable[Record]) -> Iterator[Record]:
    """Records from a string, strings (an open text file's lines too: their line ends are dropped), or
    records (from :func:`llmtool.io.streams.read_records`)."""
    items: Iterable[str | Record] = [inputs] if isinstance(inputs, str) else inputs
    for index, item in enumerate(items):
        if isinstance(item, Record):
            yield item
        elif item.strip():
            yield Record(index, index + 1, item.rstrip("\r\n"), ARGUMENT)


# --------------------------------------------------------------------------- batching


class _End:
    pass


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def chunked(items: Iterable[T], size: int, max_wait: float = 0.05) -> Iterator[list[T]]:
    """Groups of up to ``size`` items, read ahead in a background thread.

    A group is handed on early when no more items arrive within ``max_wait`` seconds after its
    first one, so a trickling pipe gets prompt answers while a fast one gets full batches. The
    reader runs while the caller computes, and the queue is bounded, so memory stays flat.
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    q: queue.Queue[Any] = queue.Queue(maxsize=max(4 * size, 64))
    end = _End()

    def pump() -> None:
        try:
            for item in items:
                q.put(item)
        except BaseException as exc:  # handed to the consumer, which re-raises it in order
            q.put(_Failure(exc))
        finally:
            q.put(end)

    threading.Thread(target=pump, name="llmtool-reader", daemon=True).start()
    pending_failure: _Failure | None = None
    while True:
        first = q.get()
        if first is end:
            return
        if isinstance(first, _Failure):
            raise first.exc
        group = [first]
        deadline = time.monotonic() + max_wait
        while len(group) < size:
            remaining = deadline - time.monotonic()
            try:
                item = q.get(timeout=remaining) if remaining > 0 else q.get_nowait()
            except queue.Empty:
                break
            if item is end:
                yield group
                return
            if isinstance(item, _Failure):
                pending_failure = item
                break
            group.append(item)
        yield group
        if pending_failure is not None:
            raise pending_failure.exc


# --------------------------------------------------------------------------- writing


def tsv_field(value: object) -> str:
    """A TSV cell: tabs, newlines and backslashes escaped as ``\\t``, ``\\n``, ``\\\\``."""
    text = value if isinstance(value, str) else json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def json_line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))


@dataclass
class Formatter:
    """How one command writes its result records in each output format."""

    text: Callable[[dict[str, Any]], str | None]
    tsv_header: Sequence[str]
    tsv_rows: Callable[[dict[str, Any]], Iterable[Sequence[object]]]
    # CSV (RFC 4180 quoting), for commands that can echo tabular input back with columns added.
    csv_header: Sequence[str] | None = None
    csv_rows: Callable[[dict[str, Any]], Iterable[Sequence[object]]] | None = None


def write_records(
    results: Iterable[dict[str, Any]],
    fmt: OutputFormat,
    formatter: Formatter,
    out: IO[str] | None = None,
) -> int:
    """Write each result as soon as it comes; return how many were written.

    Output is flushed per record so that a downstream reader sees results while later input is
    still being computed.
    """
    stream = out if out is not None else sys.stdout
    count = 0
    if fmt == "tsv":
        stream.write("\t".join(formatter.tsv_header) + "\n")
    csv_writer = None
    if fmt == "csv":
        if formatter.csv_header is None or formatter.csv_rows is None:
            raise UsageError("--format csv is not available for this command; use text, jsonl or tsv")
        csv_writer = csv.writer(stream, lineterminator="\n")
        csv_writer.writerow(formatter.csv_header)
    for result in results:
        if fmt == "jsonl":
            stream.write(json_line(result) + "\n")
        elif csv_writer is not None and formatter.csv_rows is not None:
            csv_writer.writerows(formatter.csv_rows(result))
        elif fmt == "tsv":
            for row in formatter.tsv_rows(result):
                stream.write("\t".join(tsv_field(v) for v in row) + "\n")
        else:
            line = formatter.text(result)
            if line is not None:
                stream.write(line + "\n")
        stream.flush()
        count += 1
    return count


# --------------------------------------------------------------------------- stderr: messages and progress


class Console:
    """Side information for people, on stderr: warnings always, progress only on a terminal."""

    def __init__(self, quiet: bool = False, verbose: bool = False, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.interactive = not quiet and _stream_isatty(self.stream)

    def warn(self, message: str) -> None:
        say(f"warning: {message}", self.stream)

    def info(self, message: str) -> None:
        if not self.quiet:
            say(message, self.stream)

    def progress(self, description: str, total: float | None = None) -> ProgressHandle:
        """A Rich progress bar on a terminal; a no-op otherwise (pipes and CI stay clean)."""
        if not self.interactive:
            return ProgressHandle(None, None)
        from rich.console import Console as RichConsole
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = RichConsole(file=self.stream, no_color="NO_COLOR" in os.environ)
        columns: list[Any] = [SpinnerColumn(), TextColumn("[progress.description]{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        else:
            columns += [TextColumn("{task.completed:.0f}")]
        columns += [TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
        bar = Progress(*columns, console=console, transient=True)
        bar.start()
        return ProgressHandle(bar, bar.add_task(description, total=total, status=""))


class ProgressHandle:
    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def advance(self, n: float = 1, status: str | None = None) -> None:
        if self.bar is not None:
            kwargs = {"status": status} if status is not None else {}
            self.bar.update(self.task, advance=n, **kwargs)

    def update(self, completed: float | None = None, total: float | None = None, status: str | None = None) -> None:
        if self.bar is not None:
            kwargs: dict[str, Any] = {}
            if completed is not None:
                kwargs["completed"] = completed
            if total is not None:
                kwargs["total"] = total
            if status is not None:
                kwargs["status"] = status
            self.bar.update(self.task, **kwargs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> ProgressHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stream_isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError, AttributeError):
        return False


def stdout_isatty() -> bool:
    return sys.stdout is not None and _stream_isatty(sys.stdout)


def text_stream(binary: IO[bytes]) -> IO[str]:
    return io.TextIOWrapper(binary, encoding="utf-8", newline="")
