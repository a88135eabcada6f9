"""Property-based tests: the readers never crash, whatever bytes arrive (hypothesis)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import chunked, decode_lines, read_file, read_records

EXPECTED = (InputError, UsageError)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Bytes that look like the hostile cases: CSV/JSON syntax, line ends, BOMs, NULs, invalid UTF-8.
hostile_bytes = st.lists(
    st.one_of(
        st.binary(max_size=20),
        st.sampled_from(
            [
                b",",
                b'"',
                b"\n",
                b"\r",
                b"\r\n",
                b"\x00",
                b"\xef\xbb\xbf",
                b"\xff\xfe",
                b"{",
                b"}",
                b'"text"',
                b":",
                b"[MASK]",
                b"\xe9",
                b"\xf0\x9f\x8d",
                b"\t",
                b" ",
            ]
        ),
        st.text(max_size=10).map(str.encode),
    ),
    max_size=40,
).map(b"".join)


@SETTINGS
@given(data=hostile_bytes, encoding=st.sampled_from(["utf-8", "latin-1", "utf-16"]))
def test_decode_lines_only_raises_input_errors(data: bytes, encoding: str) -> None:
    try:
        for lineno, line in decode_lines(io.BytesIO(data), "x", encoding):
            assert lineno >= 1 and "\n" not in line and "\x00" not in line
    except EXPECTED:
        pass


@SETTINGS
@given(
    data=hostile_bytes,
    suffix=st.sampled_from([".txt", ".csv", ".tsv", ".jsonl"]),
    column=st.sampled_from([None, "text", "label"]),
)
def test_file_readers_only_raise_input_errors(data: bytes, suffix: str, column: str | None) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"in{suffix}"
        path.write_bytes(data)
        try:
            for record in read_file(str(path), column if suffix != ".txt" else None):
                assert record.text.strip() and record.line >= 1
        except EXPECTED:
            pass


@SETTINGS
@given(data=hostile_bytes)
def test_stdin_reader_only_raises_input_errors(data: bytes) -> None:
    try:
        records = list(read_records(stdin=io.BytesIO(data), stdin_is_tty=False))
    except EXPECTED:
        return
    assert [r.index for r in records] == list(range(len(records)))


@SETTINGS
@given(
    lines=st.lists(
        st.text(
            alphabet=st.characters(
                exclude_characters="\r\n\x00\x85\u2028\u2029\x0b\x0c\x1c\x1d\x1e", exclude_categories=["Cs"]
            ),
            max_size=30,
        ),
        max_size=30,
    )
)
def test_lines_round_trip(lines: list[str]) -> None:
    data = "\n".join(lines).encode()
    records = list(read_records(stdin=io.BytesIO(data), stdin_is_tty=False))
    expected = [line for line in lines if line.strip()]
    if expected and expected[0].startswith("\ufeff"):
        expected[0] = expected[0][1:]  # a leading BOM is dropped by design
        expected = [line for line in expected if line.strip()]
    assert [r.text for r in records] == expected


@SETTINGS
@given(items=st.lists(st.integers(), max_size=200), size=st.integers(min_value=1, max_value=50))
def test_chunked_preserves_everything_in_order(items: list[int], size: int) -> None:
    groups = list(chunked(iter(items), size))
    assert [x for g in groups for x in g] == items
    assert all(1 <= len(g) <= size for g in groups)
