"""Job mode under real launchers, with a worker killed: torchrun (2 processes, --max-restarts 1) and a
local Ray cluster (2 actors). Every index appears once in the merged output, which is the plain run's.

Both are slow (torchrun restarts a worker group; Ray starts a cluster): marked slow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, run_cli

PROMPTS = [f"prompt number {i} is about {w}" for i, w in enumerate(["cats", "dogs", "rivers", "trees"] * 20)]


def kill_a_writer(out: Path, proc: subprocess.Popen[bytes], timeout: float = 300) -> tuple[int, int]:
    """SIGKILL the process that is writing a part (its pid ends the temporary file's name) once one part
    is done; return that pid and the chunk it was writing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        done = list(out.glob("part-*.jsonl")) if out.is_dir() else []
        temporaries = [p for p in out.iterdir() if ".tmp-" in p.name and p.name.startswith(".part-")] if done else []
        for tmp in temporaries:
            pid = int(tmp.name.rsplit("-", 1)[1])
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            return pid, int(tmp.name.split("-")[1].split(".")[0])
        time.sleep(0.005)
    pytest.fail("no worker was caught writing a part")


def plain_and_job(tmp_path: Path, model: Path) -> tuple[list[str], str]:
    data = tmp_path / "prompts.txt"
    data.write_text("".join(p + "\n" for p in PROMPTS), encoding="utf-8")
    base = ["generate", "-m", str(model), "--input", str(data), "--sample", "--seed", "3", "-t", "16", "--json"]
    plain = run_cli(base)
    assert plain.returncode == 0, plain.stderr
    return base, plain.stdout


def merged(out: Path) -> str:
    proc = run_cli(["job", "merge", str(out)])
    assert proc.returncode == 0, proc.stderr
    indexes = [json.loads(line)["index"] for line in proc.stdout.splitlines()]
    assert indexes == list(range(len(PROMPTS)))
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    return proc.stdout


@pytest.mark.slow
def test_torchrun_two_workers_one_killed_restarts_and_finishes(tmp_path: Path, tiny_gpt2: Path) -> None:
    base, plain = plain_and_job(tmp_path, tiny_gpt2)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--max-restarts", "1",
        "-m", "llmtool", *base, "--output-dir", str(out), "--chunk-size", "8", "-b", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    kill_a_writer(out, proc)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    err = stderr.decode()
    assert "exitcode: -9" in err, err[-3000:]  # torchrun saw the kill, then restarted the group:
    assert re.search(r"shard \d/2: wrote \d+ part\(s\), [1-9]\d* already done", err), err[-3000:]
    assert merged(out) == plain


@pytest.mark.slow
def test_ray_two_actors_one_killed_finishes(tmp_path: Path, tiny_gpt2: Path) -> None:
    pytest.importorskip("ray")
    base, plain = plain_and_job(tmp_path, tiny_gpt2)
    out = tmp_path / "out"
    job = [*base, "--output-dir", str(out), "--chunk-size", "8", "-b", "2", "--executor", "ray", "--workers", "2"]
    from conftest import llmtool_executable

    env = cli_env(RAY_AUTH_MODE="disabled")
    proc = subprocess.Popen([llmtool_executable(), *job], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killed, chunk = kill_a_writer(out, proc)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    assert merged(out) == plain
    (line,) = [x for x in stderr.decode().splitlines() if x.startswith(f"llmtool: chunk {chunk}:")]
    assert f"(actor pid {killed})" not in line, line  # the chunk was run again, by the restarted actor
