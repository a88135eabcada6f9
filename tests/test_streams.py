"""Unit tests for the pure input/output helpers (no model, no subprocess)."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import Formatter, chunked, decode_lines, read_records, tsv_field, write_records
from llmtool.io.tables import csv_rows


def lines(data: bytes, encoding: str = "utf-8") -> list[tuple[int, str]]:
    return list(decode_lines(io.BytesIO(data), "f.txt", encoding))


def test_line_ends_lf_crlf_cr_and_bom() -> None:
    assert lines(b"\xef\xbb\xbfa\r\nb\rc\n\nd") == [(1, "a"), (2, "b"), (3, "c"), (4, ""), (5, "d")]


def test_invalid_utf8_names_line_and_column() -> None:
    with pytest.raises(InputError) as err:
        lines("ok\nnaïve\n".encode("latin-1"))
    assert str(err.value).startswith("f.txt:2:3: not valid utf-8 (byte 0xef)")


def test_utf16_is_recognised_and_decodable() -> None:
    data = "héllo\nwörld\n".encode("utf-16")
    with pytest.raises(InputError, match="looks like UTF-16"):
        lines(data)
    assert lines(data, "utf-16") == [(1, "héllo"), (2, "wörld")]


def test_nul_byte_is_refused() -> None:
    with pytest.raises(InputError, match=r"f.txt:1:3: contains a NUL byte"):
        lines(b"ab\x00c\n")


def test_read_records_skips_blank_lines_and_keeps_line_numbers() -> None:
    records = list(read_records(stdin=io.BytesIO(b"a\n \n\nb\n"), stdin_is_tty=False))
    assert [(r.index, r.line, r.text) for r in records] == [(0, 1, "a"), (1, 4, "b")]


def test_read_records_refuses_a_terminal() -> None:
    with pytest.raises(UsageError, match="no input"):
        read_records(stdin=io.BytesIO(b""), stdin_is_tty=True)


def test_csv_rows_checks_shape(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text('\ufeff text , label\n"a, b",1\n\nc,0\n"multi\nline",1\nd\n', encoding="utf-8")
    header, rows = csv_rows(str(f))
    assert header == ["text", "label"]
    with pytest.raises(InputError) as err:
        list(rows)
    assert str(err.value) == f"{f}:7: 1 fields, but the header has 2"
    f.write_text('text,label\n"unclosed,1\n')
    with pytest.raises(InputError, match=r":2: bad CSV: unclosed quote"):
        list(csv_rows(str(f))[1])
    f.write_text("text,text\n")
    with pytest.raises(InputError, match=r":1:2: duplicate column name 'text'"):
        csv_rows(str(f))


def test_chunked_keeps_order_and_answers_a_slow_source_early() -> None:
    assert [len(c) for c in chunked(range(10), 4)] == [4, 4, 2]
    assert [x for c in chunked(range(100), 7) for x in c] == list(range(100))
    gate = threading.Event()

    def slow() -> object:
        yield 1
        gate.wait(5)
        yield 2

    it = chunked(slow(), 8, max_wait=0.05)
    start = time.monotonic()
    assert next(it) == [1]  # not held back waiting for a full group
    assert time.monotonic() - start < 2
    gate.set()
    assert next(it) == [2]


def test_chunked_raises_errors_after_the_items_before_them() -> None:
    def source() -> object:
        yield 1
        yield 2
        raise InputError("bad", source="x", line=3)

    it = chunked(source(), 10)
    assert next(it) == [1, 2]
    with pytest.raises(InputError, match="x:3: bad"):
        next(it)


def test_tsv_escapes_and_writer_formats() -> None:
    assert tsv_field("a\tb\nc\\") == "a\\tb\\nc\\\\"
    fmt = Formatter(text=lambda r: r["t"], tsv_header=("i", "t"), tsv_rows=lambda r: [[r["i"], r["t"]]])
    out = io.StringIO()
    assert write_records([{"i": 0, "t": "é"}], "jsonl", fmt, out) == 1
    assert out.getvalue() == '{"i": 0, "t": "é"}\n'
    out = io.StringIO()
    write_records([{"i": 0, "t": "x\ty"}], "tsv", fmt, out)
    assert out.getvalue() == "i\tt\n0\tx\\ty\n"
