"""Every malformed input in tests/malformed.py: its exit code, one line naming the fault, no traceback.

The corpus runs through the CLI's ``main()`` in-process (one torch import for all of it), as do
the flag cases; the long stdin stream runs the installed command in a subprocess with real pipes.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import pytest
import tiny_models
from conftest import invoke, run_cli
from malformed import BAD, CASES, Case


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("malformed")
    for case in CASES:
        (folder / case.name).write_bytes(case.content())
    return folder


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input(case: Case, corpus: Path, tiny_bert: Path) -> None:
    path = corpus / case.name
    proc = invoke(["fill-mask", "--input", str(path), "-m", str(tiny_bert), *case.args])
    check(proc, case, str(path))


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> Path:
    return tiny_models.build_bert_classifier(models_dir / "classifier-malformed")


READER_CASES = [c for c in CASES if not c.fill_mask_only]
# classify keeps one output row per input row (its CSV output appends columns to each row), so an
# empty text cell is an error rather than skipped; it names its column option --text-column.
CLASSIFY_OUTCOMES = {
    "empty-cells.csv": (BAD, ":2: empty text in column 'text'"),
    "ambiguous-columns.csv": (BAD, ":1: which column is the text? pass --text-column"),
}


@pytest.mark.parametrize("command", ["generate", "classify", "score"])
@pytest.mark.parametrize("case", READER_CASES, ids=[c.name for c in READER_CASES])
def test_malformed_input_in_the_other_commands(
    command: str, case: Case, corpus: Path, tiny_gpt2: Path, classifier: Path
) -> None:
    """The same files through the other text commands: the same exit code and message; one JSON
    record out per text record in."""
    path = corpus / case.name
    model, extra = {
        "generate": (tiny_gpt2, ["-t", "1", "--greedy"]),
        "classify": (classifier, []),
        "score": (tiny_gpt2, []),
    }[command]
    proc = invoke([command, "--input", str(path), "-m", str(model), "--format", "jsonl", *extra, *case.args])
    records = case.records if case.records is not None else case.outputs
    if command == "classify" and case.name in CLASSIFY_OUTCOMES:
        code, message = CLASSIFY_OUTCOMES[case.name]
        case, records = dataclasses.replace(case, exit_code=code, message=message), None
    check(proc, case, str(path), outputs=records)
    if proc.returncode == 0:
        assert all(isinstance(json.loads(line), dict) for line in proc.stdout.splitlines())


def check(proc: subprocess.CompletedProcess[str], case: Case, source: str, outputs: int | None = -1) -> None:
    if outputs == -1:
        outputs = case.outputs
    assert proc.returncode == case.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    if case.exit_code == 0:
        assert "error" not in proc.stderr
    else:
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"llmtool: error: {source}{case.message}"), proc.stderr
    if outputs is not None:
        assert proc.stdout.count("\n") == outputs, proc.stdout[:2000]
    if outputs == 0:
        assert proc.stderr == "llmtool: warning: no input records (the input was empty or only blank lines)\n"


def test_mask_less_line_in_the_middle_of_a_long_stdin_stream(tiny_bert: Path) -> None:
    good = "the [MASK] of france .\n"
    stream = good * 5000 + "no mask\n" + good * 5000
    proc = run_cli(["fill-mask", "-m", str(tiny_bert)], input=stream, subprocess=True)  # a real pipe, still full
    assert proc.returncode == 2
    assert proc.stdout.count("\n") == 5000  # everything before the bad line was answered
    assert proc.stderr == "llmtool: error: <stdin>:5001: no [MASK] in this line\n"


def test_output_preserves_unusual_text(tiny_bert: Path, corpus: Path) -> None:
    for name in ("emoji.txt", "right-to-left.txt", "control-chars.txt"):
        text = (corpus / name).read_text(encoding="utf-8").rstrip("\n")
        out = invoke(["fill-mask", "--input", str(corpus / name), "-m", str(tiny_bert)]).stdout.rstrip("\n")
        prefix, _, suffix = text.partition("[MASK]")
        assert out.startswith(prefix) and out.endswith(suffix), (text, out)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "/nonexistent/file.txt"], r"/nonexistent/file.txt: no such file$"),
        (["--input", "/tmp"], r"/tmp: is a directory, not a file$"),
        (["--input", "x.txt", "--column", "c"], r"x.txt: no such file$"),
        (["", "-m", "m"], r"<argument>: TEXT is empty$"),
        (["a [MASK]", "--format", "xml"], r"unknown --format 'xml'; use text, jsonl or tsv$"),
        (["a [MASK]", "--batch-size", "0"], r"Invalid value for '--batch-size' / '-b'"),
        (["a [MASK]", "--targets", " , "], r"--targets is empty$"),
    ],
)
def test_bad_flags_fail_before_any_model_loads(args: list[str], message: str) -> None:
    proc = run_cli(["fill-mask", *args], env=None)
    assert proc.returncode == 2
    assert re.search(message, proc.stderr.strip()), proc.stderr
    assert proc.stderr.count("\n") == 1


# next-sentence reads pairs: A<TAB>B lines (text, stdin, JSON Lines) or two CSV/TSV columns.
PAIR_CASES: list[tuple[str, bytes, int, str, int | None]] = [
    ("empty.txt", b"", 0, "", 0),
    ("crlf.txt", b"the dog\tthe cat\r\nit ran\tit sat\r\n", 0, "", 2),
    ("bom.txt", b"\xef\xbb\xbfthe dog\tthe cat\n", 0, "", 1),
    ("blank-lines.txt", b"\nthe dog\tthe cat\n\n\n", 0, "", 1),
    ("text.jsonl", b'{"text": "the dog\\tthe cat"}\n', 0, "", 1),
    ("header.tsv", b"first\tsecond\nthe dog\tthe cat\n", 0, "", 1),
    ("no-tab.txt", b"the dog\tthe cat\nno tab here\n", 2, ":2: expected A<TAB>B, found no tab", None),
    ("three-fields.txt", b"a\tb\tc\n", 2, ":1: expected A<TAB>B, found 3 tab-separated fields", None),
    ("empty-second.txt", b"the dog\t \n", 2, ":1: empty second sentence", None),
    ("latin1.txt", b"a\tcaf\xe9\n", 2, ":1:6: not valid utf-8 (byte 0xe9)", None),
    ("nul.txt", b"a\tb\x00\n", 2, ":1:4: contains a NUL byte", None),
    ("utf16.txt", "a\tb\n".encode("utf-16"), 2, ":1:1: looks like UTF-16", None),
    ("invalid.jsonl", b'{"text": "a\\tb"\n', 2, ":1:16: invalid JSON", None),
    ("one-column.csv", b"text\nhello\n", 2, ":1: need two text columns, found 1", None),
    ("ragged.csv", b"a,b\nx,y,z\n", 2, ":2: 3 fields, but the header has 2", None),
    ("empty-cell.csv", b"a,b\nx,\n", 2, ":2: empty text in column 'b'", None),
    ("unclosed-quote.csv", b'a,b\n"x,y\n', 2, ":2: bad CSV: unclosed quote", None),
    ("empty.csv", b"", 2, ": empty file (no header row)", None),
]


@pytest.fixture(scope="module")
def nsp_model(models_dir: Path) -> Path:
    return tiny_models.build_bert_pretraining(models_dir / "bert-pretraining-malformed", steps=1)


@pytest.mark.parametrize(("name", "data", "code", "message", "outputs"), PAIR_CASES, ids=[c[0] for c in PAIR_CASES])
def test_malformed_pairs_in_next_sentence(
    name: str, data: bytes, code: int, message: str, outputs: int | None, tmp_path: Path, nsp_model: Path
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    proc = invoke(["next-sentence", "--input", str(path), "-m", str(nsp_model), "--format", "jsonl"])
    check(proc, Case(name, lambda: data, code, message, outputs), str(path))
