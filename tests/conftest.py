"""Shared fixtures: tiny local models, and a runner for the installed ``llmtool`` command."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from subprocess import CompletedProcess

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import clirunner
import tiny_models

# A CI runner, or `pytest &` in a script, may start the tests with SIGINT ignored. Children inherit
# an ignored signal, and llmtool rightly keeps ignoring it, so the Ctrl-C tests would test nothing:
# the children start with the default disposition instead (start_cli(ignore=...) tests the other case).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Several workers share the CPUs: in-process torch gets one thread each, like the subprocesses.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# ../shared/data beside the repository; LLMTOOL_SHARED_DATA points elsewhere (e.g. from a git worktree).
SHARED_DATA = Path(
    os.environ.get("LLMTOOL_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)


def llmtool_executable() -> str:
    """The console script installed beside this interpreter (the one a user runs)."""
    beside = Path(sys.executable).parent / "llmtool"
    if beside.exists():
        return str(beside)
    found = shutil.which("llmtool")
    if found is None:
        pytest.fail("the llmtool command is not installed; run: pip install -e '.[test]'")
    return found


# The engine the CLI runs under in tests that do not choose one. Most tests were written for (and
# compare exactly with) Transformers, so they pin the torch engine; test_engines.py compares the two,
# and modules that must hold on both engines set ENGINE to "auto" per test (see ``engine`` fixtures).
ENGINE = os.environ.get("LLMTOOL_TEST_ENGINE", "torch")
# Converted models (the CTranslate2 engine's cache) of the CLI runs and of in-process API calls alike.
TEST_CACHE = str(Path(os.environ.get("LLMTOOL_TEST_HF_HOME", "/tmp/llmtool-test-hf-home")) / "llmtool")
os.environ.setdefault("LLMTOOL_CACHE", TEST_CACHE)


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMTOOL_", "HF_", "TRANSFORMERS_"))}
    env.update({"HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "120"})
    env["LLMTOOL_ENGINE"] = ENGINE
    env["LLMTOOL_CACHE"] = TEST_CACHE
    # Tiny models gain nothing from threads, and on a busy 2-core machine two threads per process
    # made them many times slower (measured 63 s vs 3 s for one scoring job).
    env.setdefault("OMP_NUM_THREADS", "1")
    env["HF_HOME"] = os.environ.get("LLMTOOL_TEST_HF_HOME", str(Path("/tmp/llmtool-test-hf-home")))
    env.update(extra)
    return env


# The CLI runs in this process (tests/clirunner.py) under the environment a child gets from
# cli_env(). Libraries read some variables once, when imported (huggingface_hub: HF_HOME,
# HF_HUB_OFFLINE; transformers: TRANSFORMERS_*): this process takes the children's values now,
# before any of them is imported, so that both see the same. A run whose env differs in such a
# variable from what this process started with gets a subprocess (clirunner.faithful_in_process).
for _name in [n for n in os.environ if n.startswith(("HF_", "TRANSFORMERS_"))]:
    del os.environ[_name]
os.environ.update({k: v for k, v in cli_env().items() if not clirunner.read_at_call_time(k)})
STARTED_WITH = dict(os.environ)
# A library imported before this file (by a pytest plugin) may have read other values: then, and
# when LLMTOOL_TEST_IN_PROCESS=0, every run is a subprocess.
IN_PROCESS = os.environ.get("LLMTOOL_TEST_IN_PROCESS", "1") != "0" and not any(
    m in sys.modules for m in ("torch", "transformers", "huggingface_hub", "datasets", "accelerate")
)
RUNNER_LOG = os.environ.get("LLMTOOL_TEST_RUNNER_LOG")


def run_cli(
    args: Sequence[str],
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    cwd: str | Path | None = None,
    *,
    subprocess: bool = False,
    stdin_isatty: bool = False,
    stdout_isatty: bool = False,
    stderr_isatty: bool = False,
) -> CompletedProcess[str]:
    """Run ``llmtool ARGS`` with ``env`` (default: ``cli_env()``); stdin is at EOF unless given.

    It runs in this process (see tests/clirunner.py: the environment, streams, signals and library
    state are those of a fresh process, and restored after) unless ``subprocess`` asks for a real
    one, with real pipes (signals, broken pipes, import-time checks, hangs), or ``env`` sets a
    variable that only a new process would honour (see ``clirunner.faithful_in_process``).
    ``timeout`` applies to a subprocess. LLMTOOL_TEST_IN_PROCESS=0 makes every run a subprocess.
    The ``*_isatty`` flags make a stream claim to be a terminal (in-process only: a subprocess has pipes).
    """
    env = env or cli_env()
    blockers = clirunner.faithful_in_process(env, STARTED_WITH)
    in_process = not subprocess and IN_PROCESS and not blockers
    if RUNNER_LOG:  # which runs went where, and why: LLMTOOL_TEST_RUNNER_LOG=FILE
        with open(RUNNER_LOG, "a", encoding="utf-8") as log:
            how = "in-process" if in_process else "subprocess " + ("(asked)" if subprocess else ",".join(blockers))
            log.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '?')}\t{how}\t{' '.join(args)[:80]}\n")
    ttys = {"stdin_isatty": stdin_isatty, "stdout_isatty": stdout_isatty, "stderr_isatty": stderr_isatty}
    if in_process:
        return clirunner.run(args, input, env, child=child_streams(), cwd=cwd, **ttys)
    if any(ttys.values()):
        pytest.fail(f"a subprocess has pipes, not terminals: {ttys} needs an in-process run ({blockers})")
    return run_cli_subprocess(args, input, env, timeout, cwd)


def run_cli_subprocess(
    args: Sequence[str],
    input: str | bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    cwd: str | Path | None = None,
) -> CompletedProcess[str]:
    """Run ``llmtool ARGS`` in a real subprocess with real pipes; stdin is at EOF unless given."""
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(
        [llmtool_executable(), *args],
        input=data if data is not None else b"",
        capture_output=True,
        env=env or cli_env(),
        timeout=timeout,
        cwd=cwd,
        check=False,
    )
    return CompletedProcess(
        proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace")
    )


@functools.cache
def child_streams() -> clirunner.ChildStreams:
    """How a child process's streams and warnings are set up (asked of one child, once)."""
    return clirunner.probe_child(cli_env())


def ignoring(signals: Sequence[int]) -> Callable[[], None] | None:
    """A ``preexec_fn`` that starts the child with ``signals`` ignored, as a shell script starts its
    background jobs (``cmd &``) with SIGINT ignored; None when there are none."""
    if not signals:
        return None

    def preexec() -> None:
        for sig in signals:
            signal.signal(sig, signal.SIG_IGN)

    return preexec


def start_cli(
    args: Sequence[str], env: dict[str, str] | None = None, ignore: Sequence[int] = ()
) -> subprocess.Popen[str]:
    """The installed ``llmtool`` in the background: stdin closed, stdout and stderr piped (text);
    ``ignore``: signals it starts with ignored."""
    return subprocess.Popen(
        [llmtool_executable(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env if env is not None else cli_env(),
        text=True,
        preexec_fn=ignoring(ignore),
    )


def read_stderr_until(proc: subprocess.Popen[str], marker: str) -> list[str]:
    """The stderr lines of ``proc`` up to and including the first that holds ``marker``."""
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            break
    return seen


def interrupt_after_first_epoch(
    args: Sequence[str], sig: int, env: dict[str, str] | None = None, timeout: float = 300, ignore: Sequence[int] = ()
) -> tuple[int, str]:
    """Start a training run, wait for its first evaluation line (at the end of an epoch: the first,
    or a later one when short epochs are evaluated every few, see llmtool.training.plan), let it train on
    briefly (into the next epoch), then send ``sig``; its exit status and whole stderr."""
    import time

    proc = start_cli(args, env, ignore)
    seen = read_stderr_until(proc, ": validation ")
    time.sleep(0.3)
    proc.send_signal(sig)
    _, rest = proc.communicate(timeout=timeout)
    return proc.returncode, "".join(seen) + rest


def invoke(args: Sequence[str]) -> CompletedProcess[str]:
    """Run the CLI's ``main()`` in this process always (see ``run_cli``), for wide input corpora
    where a subprocess per case would spend its time importing torch."""
    return clirunner.run(args, None, cli_env(), child=child_streams())


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_bert(models_dir: Path) -> Path:
    return tiny_models.build_bert(models_dir / "bert")


@pytest.fixture(scope="session")
def tiny_roberta(models_dir: Path) -> Path:
    return tiny_models.build_roberta(models_dir / "roberta")


@pytest.fixture(scope="session")
def tiny_gpt2(models_dir: Path) -> Path:
    return tiny_models.build_gpt2(models_dir / "gpt2")


@pytest.fixture(scope="session")
def tiny_chat_gpt2(models_dir: Path) -> Path:
    return tiny_models.build_gpt2(models_dir / "gpt2-chat", chat_template=True)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA
