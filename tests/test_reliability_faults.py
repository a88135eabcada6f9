"""Faults while running: out of memory, a full disk for output."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import cli_env, llmtool_executable


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_out_of_memory_is_an_actionable_one_line_error(tiny_gpt2: Path) -> None:
    """An address-space limit makes a huge batch fail to allocate, as a small GPU would."""
    proc = subprocess.run(
        [
            "prlimit",
            f"--as={2500 * 1024 * 1024}",
            llmtool_executable(),
            "generate",
            "hi",
            "-m",
            str(tiny_gpt2),
            "-n",
            "300000",
            "-t",
            "1",
            "--greedy",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("llmtool: error: out of memory (")
    assert "lower --batch-size" in proc.stderr and "--grad-accum" in proc.stderr
    assert proc.stderr.count("\n") == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_stdout_on_a_full_disk(tiny_bert: Path) -> None:
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [llmtool_executable(), "fill-mask", "the [MASK] .", "-m", str(tiny_bert)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(),
            timeout=300,
            check=False,
        )
    assert proc.returncode == 1
    assert proc.stderr.startswith("llmtool: error: no space left on device")
    assert "Traceback" not in proc.stderr
