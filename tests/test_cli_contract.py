"""The shell contract, driven through the installed ``llmtool`` in real subprocesses."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import cli_env, llmtool_executable, run_cli

HEAVY = ("torch", "transformers", "datasets", "accelerate", "tokenizers")


@pytest.mark.parametrize("args", [["--help"], ["fill-mask", "--help"], ["generate", "--help"], ["version"]])
def test_help_imports_no_heavy_library(args: list[str]) -> None:
    """`--help` must stay fast: the real console script, traced with -X importtime."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", llmtool_executable(), *args],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
    assert "Usage" in proc.stdout or args == ["version"]


def test_no_arguments_prints_help_to_stdout() -> None:
    proc = run_cli([])
    assert "fill-mask" in proc.stdout and "generate" in proc.stdout


def test_terminal_stdin_without_input_is_a_usage_error_not_a_hang(tiny_bert: Path) -> None:
    leader, follower = pty.openpty()
    try:
        start = time.monotonic()
        proc = subprocess.run(
            [llmtool_executable(), "fill-mask", "-m", str(tiny_bert)],
            stdin=follower,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
            check=False,
        )
    finally:
        os.close(leader)
        os.close(follower)
    assert proc.returncode == 2
    assert time.monotonic() - start < 30
    assert proc.stdout == ""
    assert proc.stderr.startswith("llmtool: error: no input") and proc.stderr.count("\n") == 1


def test_unknown_option_is_one_line_usage_error() -> None:
    proc = run_cli(["fill-mask", "--no-such-flag", "x [MASK]"])
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("llmtool: error: No such option: --no-such-flag")
    assert "llmtool fill-mask --help" in proc.stderr


def test_text_and_input_together_is_usage_error(tiny_bert: Path, tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_text("a [MASK]\n")
    proc = run_cli(["fill-mask", "x [MASK]", "--input", str(f), "-m", str(tiny_bert)])
    assert proc.returncode == 2
    assert proc.stderr == "llmtool: error: give either TEXT or --input, not both\n"


def test_offline_uncached_model_fails_fast_with_exit_3() -> None:
    for args, env in (
        (["fill-mask", "a [MASK]", "--offline"], cli_env()),
        (["generate", "hello"], cli_env(HF_HUB_OFFLINE="1")),
    ):
        start = time.monotonic()
        proc = run_cli(args, env=env)
        assert proc.returncode == 3, proc.stderr
        assert time.monotonic() - start < 20
        assert proc.stderr.count("\n") == 1
        assert "is not in the local cache" in proc.stderr and "offline mode is on" in proc.stderr
        assert "hf download" in proc.stderr


def test_unreachable_hub_fails_fast_with_exit_3() -> None:
    env = cli_env(HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on the discard port
    env.pop("HF_HUB_OFFLINE")
    start = time.monotonic()
    proc = run_cli(["fill-mask", "a [MASK]", "-m", "someone/uncached-model"], env=env)
    assert proc.returncode == 3
    assert time.monotonic() - start < 20
    assert "cannot be reached" in proc.stderr and proc.stderr.count("\n") == 1


def test_missing_local_model_folder(tmp_path: Path) -> None:
    proc = run_cli(["fill-mask", "a [MASK]", "-m", str(tmp_path / "nope")])
    assert proc.returncode == 3
    assert proc.stderr == f"llmtool: error: model folder {tmp_path / 'nope'} does not exist\n"


def test_pickled_weights_are_refused_unless_allowed(tiny_bert: Path, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in tiny_bert.iterdir():
        if f.suffix != ".safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    torch.save(load_file(str(tiny_bert / "model.safetensors")), folder / "pytorch_model.bin")
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert "pytorch_model.bin: pickled weights can run arbitrary code" in proc.stderr
    assert "--allow-pickle" in proc.stderr
    allowed = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder), "--allow-pickle"])
    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout == run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_bert)]).stdout


def test_head_closing_the_pipe_exits_quietly(tiny_bert: Path) -> None:
    lines = "".join(f"line {i} is the [MASK] .\n" for i in range(3000))
    proc = subprocess.run(
        [
            "bash",
            "-c",
            f'"{llmtool_executable()}" fill-mask -m "{tiny_bert}" | head -n 1; echo "status=${{PIPESTATUS[0]}}" >&2',
        ],
        input=lines,
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
        check=False,
    )
    assert proc.stdout.count("\n") == 1
    assert proc.stdout.startswith("line 0 is the ")
    assert "Traceback" not in proc.stderr and "Broken" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] in ("status=141", "status=0")


def test_stdin_streams_before_eof(tiny_bert: Path) -> None:
    """The first result arrives while stdin is still open: records are written as batches finish."""
    proc = subprocess.Popen(
        [llmtool_executable(), "fill-mask", "-m", str(tiny_bert), "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(b"the [MASK] of france .\n")
        proc.stdin.flush()
        first = proc.stdout.readline()  # would block forever if output waited for EOF
        assert json.loads(first)["index"] == 0
        proc.stdin.write(b"the [MASK] of italy .\n")
        proc.stdin.close()
        second = proc.stdout.readline()
        assert json.loads(second)["index"] == 1
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def test_debug_env_shows_traceback(tiny_bert: Path) -> None:
    quiet = run_cli(["fill-mask", "no mask here", "-m", str(tiny_bert)])
    loud = run_cli(["fill-mask", "no mask here", "-m", str(tiny_bert)], env=cli_env(LLMTOOL_DEBUG="1"))
    assert quiet.returncode == loud.returncode == 2
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr
    assert loud.stderr.rstrip().endswith(quiet.stderr.rstrip())


def generating_after_one_prompt(tiny_gpt2: Path, ignore: Sequence[int] = ()) -> subprocess.Popen[bytes]:
    """``llmtool generate`` reading a pipe that stays open, after its first result (model loaded)."""
    from conftest import ignoring

    proc = subprocess.Popen(
        [llmtool_executable(), "generate", "-m", str(tiny_gpt2), "-t", "5", "--greedy"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        preexec_fn=ignoring(ignore),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"once upon a time\n")
    proc.stdin.flush()
    assert proc.stdout.readline()  # the model is loaded and working; stdin stays open
    return proc


def test_sigint_exits_130(tiny_gpt2: Path) -> None:
    import signal

    proc = generating_after_one_prompt(tiny_gpt2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert proc.stderr is not None
    assert proc.stderr.read().decode().strip() == "llmtool: interrupted"


def test_sigint_ignored_since_start_stays_ignored(tiny_gpt2: Path) -> None:
    """A script's background job (`llmtool ... &`) starts with SIGINT ignored, so that Ctrl-C at the
    terminal does not reach it: llmtool keeps ignoring it and goes on."""
    import signal

    proc = generating_after_one_prompt(tiny_gpt2, ignore=[signal.SIGINT])
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(b"the king\n", timeout=60)
    assert proc.returncode == 0, err
    assert len(out.splitlines()) == 1 and not err  # the second prompt's result


def test_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "llmtool", "version"], capture_output=True, text=True, env=cli_env(), check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == __import__("llmtool").__version__


def test_device_and_dtype_flags(tiny_bert: Path) -> None:
    fp32 = run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_bert), "--device", "cpu", "--json"])
    bf16 = run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_bert), "--dtype", "bfloat16", "--json"])
    assert fp32.returncode == bf16.returncode == 0, bf16.stderr
    top32 = json.loads(fp32.stdout)["masks"][0]["predictions"][0]
    top16 = json.loads(bf16.stdout)["masks"][0]["predictions"][0]
    assert top16["score"] == pytest.approx(top32["score"], rel=0.05)  # bf16 keeps ~3 significant digits
    import torch

    if not torch.cuda.is_available():
        no_gpu = run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_bert), "--device", "cuda"])
        assert no_gpu.returncode == 2
        assert no_gpu.stderr == "llmtool: error: --device cuda: no CUDA GPU is available here (try --device cpu)\n"
    fp16 = run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_bert), "--device", "cpu", "--dtype", "float16"])
    assert fp16.returncode == 2 and "float16 is not supported on the CPU" in fp16.stderr
    bad = run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_bert), "--device", "tpu"])
    assert bad.returncode == 2 and "--device" in bad.stderr
