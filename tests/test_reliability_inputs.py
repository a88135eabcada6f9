"""Every malformed input in tests/malformed.py: its exit code, one line naming the fault, no traceback.

The corpus runs through the CLI's ``main()`` in-process (one torch import for all of it); the
stdin and flag cases run the installed command in subprocesses with real pipes.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import invoke, run_cli
from malformed import CASES, Case


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


def check(proc: subprocess.CompletedProcess[str], case: Case, source: str) -> None:
    assert proc.returncode == case.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    if case.exit_code == 0:
        assert "error" not in proc.stderr
    else:
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert proc.stderr.startswith(f"llmtool: error: {source}{case.message}"), proc.stderr
    if case.outputs is not None:
        assert proc.stdout.count("\n") == case.outputs
    if case.outputs == 0:
        assert proc.stderr == "llmtool: warning: no input records (the input was empty or only blank lines)\n"


def test_mask_less_line_in_the_middle_of_a_long_stdin_stream(tiny_bert: Path) -> None:
    good = "the [MASK] of france .\n"
    proc = run_cli(["fill-mask", "-m", str(tiny_bert)], input=good * 5000 + "no mask\n" + good * 5000)
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
