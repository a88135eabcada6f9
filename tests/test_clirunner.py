"""The in-process runner (tests/clirunner.py) gives what a subprocess gives, and leaves this process as it was."""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

import clirunner
import conftest
from conftest import cli_env, run_cli, run_cli_subprocess


def test_in_process_and_subprocess_runs_agree(tiny_bert: Path) -> None:
    cases: list[tuple[list[str], str | bytes | None]] = [
        (["fill-mask", "--no-such-flag"], None),
        (["fill-mask", "-m", str(tiny_bert), "--json"], "a [MASK] day\n\nthe [MASK] .\n"),
        (["fill-mask", "-m", str(tiny_bert)], "fine [MASK]\nno mask\n"),
        (["fill-mask", "-m", str(tiny_bert)], b"caf\xe9 [MASK]\n"),  # not UTF-8
    ]
    for args, data in cases:
        here, there = run_cli(args, input=data), run_cli_subprocess(args, input=data)
        assert (here.returncode, here.stdout, here.stderr) == (there.returncode, there.stdout, there.stderr), args


def test_a_run_leaves_environment_signals_cwd_streams_and_warnings_as_they_were(
    tiny_bert: Path, tmp_path: Path
) -> None:
    env, cwd, streams = dict(os.environ), os.getcwd(), (sys.stdin, sys.stdout, sys.stderr)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    filters, exit_now = list(warnings.filters), os._exit
    result = run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_bert), "--verbose"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert dict(os.environ) == env
    assert os.getcwd() == cwd
    assert (sys.stdin, sys.stdout, sys.stderr) == streams
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    assert list(warnings.filters) == filters
    assert os._exit is exit_now


def test_environment_only_a_new_process_honours_makes_a_subprocess() -> None:
    started = conftest.STARTED_WITH
    assert clirunner.faithful_in_process(cli_env(), started) == []
    assert clirunner.faithful_in_process(cli_env(LLMTOOL_FORMAT="tsv", NO_COLOR="1"), started) == []
    assert clirunner.faithful_in_process(cli_env(HF_HOME="/elsewhere"), started) == ["HF_HOME"]
    assert clirunner.faithful_in_process(cli_env(PYTHONPATH="/x"), started) == ["PYTHONPATH"]


def test_terminal_flags_reach_the_command(tiny_bert: Path) -> None:
    piped = run_cli(["fill-mask", "-m", str(tiny_bert)])
    assert piped.returncode == 0 and "no input records" in piped.stderr
    terminal = run_cli(["fill-mask", "-m", str(tiny_bert)], stdin_isatty=True)
    assert terminal.returncode == 2
    assert "stdin is a terminal" in terminal.stderr
