"""Run ``llmtool ARGS`` inside the test process, the way a fresh subprocess would see it.

A subprocess per CLI call pays for importing torch and transformers (seconds on a small machine);
most tests only look at a command's exit status, stdout and stderr. :func:`run` calls
``llmtool.cli.main(argv)`` here instead, in the spirit of httpie's ``Environment`` and Click's
``CliRunner``, and puts the process back as it found it afterwards:

- the environment: ``os.environ`` becomes exactly ``env`` (as ``conftest.cli_env`` builds it), then
  the previous one comes back, variables llmtool set itself (``TERM``, ``TRANSFORMERS_VERBOSITY``,
  ``HF_HUB_DISABLE_PROGRESS_BARS``, ``HF_DATASETS_DISABLE_PROGRESS_BARS``, ...) included;
- the streams: stdin is a binary buffer holding ``input`` (at EOF when none is given, like the
  empty pipe the subprocess runner gives), behind a text wrapper, as ``sys.stdin``/``sys.stdin.buffer``
  are in a process; stdout and stderr are text wrappers over bytes with the encoding and error
  handlers a child process gets (asked of one once per session); each stream's ``isatty`` is set by
  the caller; logging handlers that wrote to the old stderr write to the new one for the run;
- the exit: ``main``'s return value, a ``SystemExit``'s code, or 1 and a traceback for an uncaught
  exception, as the interpreter would; ``os._exit`` (main's way out while a reader thread still
  blocks on stdin) raises instead of ending the test process;
- signals: every handler (main installs one for SIGTERM, training ones for SIGINT and SIGTERM) is
  reset to a fresh interpreter's before the run and restored after;
- ``sys.argv``, the working directory;
- library state: warnings (a fresh interpreter's filters, shown on stderr rather than recorded by
  pytest, and the "once" registries cleared), the levels of existing loggers, progress-bar switches
  of transformers, huggingface_hub and datasets, torch's thread count (from ``OMP_NUM_THREADS``, which
  torch reads only when it starts), deterministic-algorithm flag, default dtype and grad mode, the
  random generators of ``random``, numpy and torch (freshly seeded for the run, as a new process is),
  and accelerate's ``AcceleratorState``/``PartialState``/``GradientState`` singletons (Trainer's).

Some things only a real process shows; :func:`faithful_in_process` names the variables that force
one: those that libraries read when they are imported (``HF_HOME``, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``...)
or the interpreter reads when it starts (``PYTHONPATH``, ``LC_ALL``...), when they differ from what this
process started with. ``conftest.run_cli`` then uses a subprocess, as it does when asked to
(``subprocess=True``): signals, broken pipes, import-time checks, torchrun and hang checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Variables read when a command runs, not when a library is imported: these may differ from the
# test process's own without a subprocess. Every other variable must be the same in both.
CALL_TIME_PREFIXES = ("LLMTOOL_",)
CALL_TIME_VARIABLES = frozenset(
    {
        "NO_COLOR",  # rich, per Console
        "TERM",  # rich, per Console; main() sets it under NO_COLOR
        "COLUMNS",  # rich and click, per call
        "LINES",
        "PYTHONUNBUFFERED",  # the captured streams write through anyway
        "OMP_NUM_THREADS",  # applied with torch.set_num_threads for the run (torch reads it at start)
        "PYTEST_CURRENT_TEST",  # pytest's own, changes per test phase
        # Set in this process after it started, by torch on import and by llmtool's Python API
        # (models.prepare_environment, with setdefault): a child inherits them with the same values.
        "TORCHINDUCTOR_CACHE_DIR",
        "TOKENIZERS_PARALLELISM",  # read by tokenizers when it would fork
        "ONEDNN_PRIMITIVE_CACHE_CAPACITY",  # oneDNN's kernel cache: memory, not results
        "KMP_DUPLICATE_LIB_OK",  # by sklearn and threadpoolctl on import: Intel OpenMP's duplicate-library check
        "KMP_INIT_AT_FORK",  # by sklearn and joblib on import (sentence-transformers imports sklearn)
    }
)


class ProcessExit(BaseException):
    """``os._exit(code)`` called during an in-process run."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class ChildStreams:
    """How a child process's standard streams are set up (encoding and error handlers), and a fresh
    interpreter's warning filters: asked of one real child, once."""

    encoding: str
    stdin_errors: str
    stdout_errors: str
    stderr_errors: str
    warning_filters: tuple[tuple[Any, ...], ...]


_PROBE = """
import json, re, sys, warnings
def part(value):  # a filter's message or module: None, an exact string, or a regular expression
    return ["re", value.pattern, value.flags] if isinstance(value, re.Pattern) else value
filters = [[a, part(m), c.__module__, c.__qualname__, part(mod), n] for a, m, c, mod, n in warnings.filters]
print(json.dumps([sys.stdout.encoding, sys.stdin.errors, sys.stdout.errors, sys.stderr.errors, filters]))
"""


def _part(value: Any) -> Any:
    return re.compile(value[1], value[2]) if isinstance(value, list) else value


def probe_child(env: Mapping[str, str]) -> ChildStreams:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], env=dict(env), capture_output=True, text=True, check=True
    ).stdout
    encoding, stdin_errors, stdout_errors, stderr_errors, raw = json.loads(out)
    filters = []
    for action, message, cat_module, cat_name, module, lineno in raw:
        category: Any = sys.modules[cat_module]
        for name in cat_name.split("."):
            category = getattr(category, name)
        filters.append((action, _part(message), category, _part(module), lineno))
    return ChildStreams(encoding, stdin_errors, stdout_errors, stderr_errors, tuple(filters))


def faithful_in_process(env: Mapping[str, str], started_with: Mapping[str, str]) -> list[str]:
    """The variables of ``env`` that an in-process run could not honour (empty: it can run here):
    those, not read at call time, whose value differs from the one this process started with."""
    names = sorted(set(env) | set(started_with))
    return [n for n in names if not read_at_call_time(n) and env.get(n) != started_with.get(n)]


def read_at_call_time(name: str) -> bool:
    """Whether ``name`` is read when a command runs (may differ between runs in one process)."""
    return name.startswith(CALL_TIME_PREFIXES) or name in CALL_TIME_VARIABLES


class _Binary(io.BufferedReader):
    def __init__(self, data: bytes, tty: bool) -> None:
        super().__init__(io.BytesIO(data))
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class _Text(io.TextIOWrapper):
    def __init__(self, buffer: Any, encoding: str, errors: str, tty: bool, write_through: bool = False) -> None:
        super().__init__(buffer, encoding=encoding, errors=errors, write_through=write_through)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


class _Sink(io.BufferedWriter):
    """The bytes written to stdout or stderr, kept after the text wrapper over them is closed."""

    def __init__(self, tty: bool) -> None:
        self.raw_bytes = io.BytesIO()
        super().__init__(self.raw_bytes)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty

    def close(self) -> None:  # a closed stdout (as after a broken pipe) keeps what it had
        with contextlib.suppress(ValueError):
            self.flush()


def _fresh_signals() -> dict[int, Any]:
    """Every handler this process has now; SIGINT and SIGTERM set as a fresh interpreter has them."""
    saved: dict[int, Any] = {}
    for sig in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            handler = signal.getsignal(sig)
            if handler is not None:
                saved[sig] = handler
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return saved


def _restore_signals(saved: dict[int, Any]) -> None:
    for sig, handler in saved.items():
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            if signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)


def _reset_accelerate() -> None:
    """Forget accelerate's process-wide singletons (a fresh process has none)."""
    state = sys.modules.get("accelerate.state")
    if state is None:
        return
    state.AcceleratorState._reset_state(reset_partial_state=True)
    state.PartialState._reset_state()
    state.GradientState._reset_state()


@contextlib.contextmanager
def _library_state(env: Mapping[str, str]) -> Iterator[None]:
    """Save the libraries' process-wide switches, give the run a fresh process's, restore them."""
    saved_random = random.getstate()
    numpy = sys.modules.get("numpy")
    saved_numpy = numpy.random.get_state() if numpy is not None else None
    torch = sys.modules.get("torch")
    torch_state: dict[str, Any] = {}
    if torch is not None:
        torch_state = {
            "rng": torch.get_rng_state(),
            "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn": torch.is_deterministic_algorithms_warn_only_enabled(),
            "dtype": torch.get_default_dtype(),
            "grad": torch.is_grad_enabled(),
            "matmul": torch.get_float32_matmul_precision(),
        }
        threads = env.get("OMP_NUM_THREADS", "").strip()
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))
        torch.seed()  # a new process starts from a random seed
    random.seed()
    if numpy is not None:
        numpy.random.seed()
    loggers = {
        name: (logger.level, logger.disabled)
        for name, logger in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
        if isinstance(logger, logging.Logger)
    }
    progress = _progress_switches()
    _reset_accelerate()
    try:
        yield
    finally:
        _reset_accelerate()
        _set_progress_switches(progress)
        for name, (level, disabled) in loggers.items():
            logger = logging.getLogger(name or None)
            if logger.level != level:  # setLevel clears every logger's cache: only when needed
                logger.setLevel(level)
            logger.disabled = disabled
        random.setstate(saved_random)
        if numpy is not None and saved_numpy is not None:
            numpy.random.set_state(saved_numpy)
        torch = sys.modules.get("torch")
        if torch is not None and torch_state:
            torch.set_rng_state(torch_state["rng"])
            torch.set_num_threads(torch_state["threads"])
            torch.use_deterministic_algorithms(
                torch_state["deterministic"], warn_only=torch_state["deterministic_warn"]
            )
            torch.set_default_dtype(torch_state["dtype"])
            torch.set_grad_enabled(torch_state["grad"])
            torch.set_float32_matmul_precision(torch_state["matmul"])


def _progress_switches() -> dict[str, Any]:
    switches: dict[str, Any] = {}
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        switches["transformers"] = hf_logging.is_progress_bar_enabled()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        switches["huggingface_hub"] = dict(sys.modules[disable_progress_bars.__module__].progress_bar_states)
    if "datasets" in sys.modules:
        from datasets.utils import logging as ds_logging

        switches["datasets"] = ds_logging.is_progress_bar_enabled()
    return switches


def _set_progress_switches(switches: dict[str, Any]) -> None:
    """Put back the switches saved by :func:`_progress_switches` (of libraries imported before the run:
    one imported during it keeps the state it was imported in, as in a process)."""
    if "transformers" in switches:
        from transformers.utils import logging as hf_logging

        (hf_logging.enable_progress_bar if switches["transformers"] else hf_logging.disable_progress_bar)()
    if "huggingface_hub" in switches:
        from huggingface_hub.utils import disable_progress_bars

        states = sys.modules[disable_progress_bars.__module__].progress_bar_states
        states.clear()
        states.update(switches["huggingface_hub"])
    if "datasets" in switches:
        from datasets.utils import logging as ds_logging

        with warnings.catch_warnings():  # "cannot enable": HF_DATASETS_DISABLE_PROGRESS_BARS was set at import
            warnings.simplefilter("ignore")
            (ds_logging.enable_progress_bar if switches["datasets"] else ds_logging.disable_progress_bar)()


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _warnings(filters: Sequence[tuple[Any, ...]]) -> Iterator[None]:
    """A fresh interpreter's filters, and warnings written to (the current) sys.stderr."""
    with warnings.catch_warnings():  # entering clears the "once" registries; leaving restores all
        warnings.resetwarnings()
        warnings.filters[:] = list(filters)  # type: ignore[index]

        def show(msg: warnings.WarningMessage) -> None:
            text = warnings.formatwarning(msg.message, msg.category, msg.filename, msg.lineno, msg.line)
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.write(text)

        # pytest records warnings (catch_warnings(record=True) swaps the module's message sink);
        # a process writes them to stderr: put such a sink back for the run.
        setattr(warnings, "_showwarnmsg_impl", show)  # noqa: B010
        yield


@contextlib.contextmanager
def _log_handlers_to(stream: io.TextIOBase, old: Sequence[object]) -> Iterator[None]:
    """Handlers bound to the old stderr (transformers binds its own when first imported) write to
    ``stream`` for the run."""
    moved = []
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and any(handler.stream is s for s in old):
                with contextlib.suppress(AttributeError):  # logging.lastResort follows sys.stderr itself
                    previous = handler.stream
                    handler.stream = stream
                    moved.append((handler, previous))
    try:
        yield
    finally:
        for handler, previous in moved:
            handler.stream = previous


@dataclass
class Result:
    """What a finished command left: like ``subprocess.CompletedProcess[str]``."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(
    args: Sequence[str],
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    *,
    child: ChildStreams,
    stdin_isatty: bool = False,
    stdout_isatty: bool = False,
    stderr_isatty: bool = False,
    cwd: str | Path | None = None,
    program: str = "llmtool",
) -> subprocess.CompletedProcess[str]:
    """``llmtool ARGS`` in this process (see the module's docstring for what it restores)."""
    data = input.encode() if isinstance(input, str) else (input or b"")
    env = dict(os.environ) if env is None else dict(env)
    stdin = _Text(_Binary(data, stdin_isatty), child.encoding, child.stdin_errors, stdin_isatty)
    out_sink, err_sink = _Sink(stdout_isatty), _Sink(stderr_isatty)
    stdout = _Text(out_sink, child.encoding, child.stdout_errors, stdout_isatty, write_through=True)
    stderr = _Text(err_sink, child.encoding, child.stderr_errors, stderr_isatty, write_through=True)
    saved_streams = (sys.stdin, sys.stdout, sys.stderr)
    saved_argv, saved_cwd, saved_exit = sys.argv, os.getcwd(), os._exit
    saved_signals = _fresh_signals()

    def exit_now(code: int) -> None:
        raise ProcessExit(code)

    code = 0
    try:
        with (
            _environment(env),
            _library_state(env),
            _warnings(child.warning_filters),
            _log_handlers_to(stderr, [saved_streams[2], sys.__stderr__]),
        ):
            sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
            sys.argv = [program, *args]
            os._exit = exit_now  # type: ignore[assignment]
            if cwd is not None:
                os.chdir(cwd)
            try:
                from llmtool.cli import main

                code = main(list(args))
            except ProcessExit as exc:
                code = exc.code
            except SystemExit as exc:
                code = _exit_status(exc.code, stderr)
            except BaseException:
                traceback.print_exc(file=stderr)
                code = 1
            finally:
                for stream in (stdout, stderr):
                    with contextlib.suppress(OSError, ValueError):
                        stream.flush()
    finally:
        os._exit = saved_exit
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        _restore_signals(saved_signals)
    out = out_sink.raw_bytes.getvalue().decode("utf-8", "replace")
    err = err_sink.raw_bytes.getvalue().decode("utf-8", "replace")
    return subprocess.CompletedProcess([program, *args], code, out, err)


def _exit_status(value: object, stderr: io.TextIOBase) -> int:
    """The status the interpreter exits with for ``SystemExit(value)``."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    stderr.write(f"{value}\n")
    return 1
