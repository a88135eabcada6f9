"""Input records: where a line came from, decoding bytes strictly, and reading ahead in batches.

The pieces every reader shares (:mod:`llmtool.io.streams` for arguments, text files, JSON Lines and
stdin; :mod:`llmtool.io.tables` for .csv/.tsv). This module imports neither torch nor transformers.
"""

from __future__ import annotations

import difflib
import io
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from llmtool.errors import InputError

STDIN = "<stdin>"
ARGUMENT = "<argument>"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Record:
    """One input record: its text and where it came from, for messages and JSON output."""

    index: int  # 0-based position among the records read (skipped blank lines do not count)
    line: int  # 1-based line (row, for CSV) in the source
    text: str
    source: str = STDIN


# --------------------------------------------------------------------------- files and bytes


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


def is_terminal(stream: IO[bytes]) -> bool:
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
