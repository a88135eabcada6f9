"""Error types, exit codes, and the one place that turns failures into a message and a status.

Nothing here imports torch or transformers: the mapping below recognises their exceptions by
class name, so that reporting an error never pays for (or fails on) a heavy import.
"""

from __future__ import annotations

import errno
import os
import sys
from enum import IntEnum

from llmtool.io.console import say


class ExitCode(IntEnum):
    """Documented exit statuses (README, "Exit codes")."""

    OK = 0
    FAILURE = 1  # a runtime failure: out of memory, disk full, a bug
    USAGE = 2  # bad flags or bad input data
    MODEL_UNAVAILABLE = 3  # the model cannot be found, downloaded or loaded
    BROKEN_PIPE = 141  # the reader of stdout went away (128 + SIGPIPE), as for any Unix filter
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
    TERMINATED = 143  # SIGTERM (128 + SIGTERM)


class LlmtoolError(Exception):
    """An expected failure with a one-line message for the user."""

    exit_code: int = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(LlmtoolError):
    """Bad flags or flag combinations."""

    exit_code = ExitCode.USAGE


class InputError(LlmtoolError):
    """Bad input data. The message starts with ``file:line:column:`` when those are known."""

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source, self.line, self.column = source, line, column
        self.reason = message
        super().__init__(location(source, line, column) + message)


class ModelError(LlmtoolError):
    """The model cannot be found, downloaded or loaded."""

    exit_code = ExitCode.MODEL_UNAVAILABLE


class MissingHeadError(ModelError):
    """The checkpoint lacks weights of the head a task needs (see ``models.load_model(require_head=...)``)."""


class Terminated(BaseException):
    """Raised by the SIGTERM handler so that training can checkpoint and clean up like on Ctrl-C."""


def location(source: str | None, line: int | None = None, column: int | None = None) -> str:
    """``file:line:column: `` (the parts that are known), the prefix compilers and linters use."""
    parts = [p for p in (source, line, column) if p is not None]
    return ":".join(str(p) for p in parts) + ": " if parts else ""


def debug_enabled() -> bool:
    return os.environ.get("LLMTOOL_DEBUG", "").strip() not in ("", "0", "false", "no")


def _class_names(exc: BaseException) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__}


_OOM_HINT = (
    "out of memory on the device; lower --batch-size (and raise --grad-accum to keep the "
    "effective batch when training), shorten --max-length, or use --dtype bfloat16"
)


def describe(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit status for a known failure, or None for an unexpected one.

    Ordered from the most specific to the most general, like the hf CLI's error table.
    """
    names = _class_names(exc)
    if isinstance(exc, LlmtoolError):
        return str(exc), int(exc.exit_code)
    if "torch.OutOfMemoryError" in names or "torch.cuda.OutOfMemoryError" in names:
        return _OOM_HINT, ExitCode.FAILURE
    if isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc)):
        return _OOM_HINT.replace("on the device", f"({_allocation(str(exc))})"), ExitCode.FAILURE
    if isinstance(exc, MemoryError):
        return "out of memory; " + _OOM_HINT.split("; ", 1)[1], ExitCode.FAILURE
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            where = f" writing {exc.filename}" if exc.filename else ""
            return f"no space left on device{where}", ExitCode.FAILURE
        if exc.errno == errno.EROFS:
            return f"read-only file system: {exc.filename or exc}", ExitCode.FAILURE
        if exc.errno in (errno.EACCES, errno.EPERM):
            return f"permission denied: {exc.filename or exc}", ExitCode.FAILURE
        if isinstance(exc, FileNotFoundError) and exc.filename:
            return f"{exc.filename}: no such file or directory", ExitCode.USAGE
        if isinstance(exc, IsADirectoryError) and exc.filename:
            return f"{exc.filename}: is a directory", ExitCode.USAGE
    return None


def _allocation(message: str) -> str:
    """'tried to allocate 480000000 bytes' -> '480 MB could not be allocated'."""
    import re

    found = re.search(r"allocate (\d+) bytes", message)
    return f"{int(found.group(1)) / 1e6:,.0f} MB could not be allocated" if found else "an allocation failed"


def report(exc: BaseException) -> int:
    """Print what went wrong to stderr and return the exit status for it.

    Known failures get one ``llmtool: error: ...`` line; unexpected ones keep their traceback,
    since they are bugs. ``LLMTOOL_DEBUG=1`` shows the traceback for everything.
    """
    if isinstance(exc, KeyboardInterrupt):
        say("interrupted")
        return ExitCode.INTERRUPTED
    if isinstance(exc, Terminated):
        say("terminated")
        return ExitCode.TERMINATED
    known = describe(exc)
    if debug_enabled() or known is None:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if known is None:
        say(f"error: unexpected {type(exc).__name__}: {exc} (this is a bug; please report it)")
        return ExitCode.FAILURE
    message, code = known
    say(f"error: {one_line(message)}")
    return code


def one_line(message: str) -> str:
    """Messages from libraries span lines; the contract is one line."""
    return " ".join(message.split())
