"""stderr, for people: :func:`say`, the one function that writes an ``llmtool: ...`` line, and the
:class:`Console` that shows warnings always and progress only on a terminal (imports nothing of llmtool's)."""

from __future__ import annotations

import os
import sys
from typing import IO, Any

PREFIX = "llmtool: "


def say(line: str, stream: IO[str] | None = None, *, before: str = "") -> None:
    """Write ``llmtool: LINE`` and flush; a closed stream (the reader gone) is not an error.

    ``stream`` defaults to the current ``sys.stderr`` (read at call time, so tests that redirect it
    see the line); ``before`` goes ahead of the prefix (a newline off a terminal's ``^C``)."""
    out = stream if stream is not None else sys.stderr
    try:
        out.write(f"{before}{PREFIX}{line}\n")
        out.flush()
    except (OSError, ValueError, AttributeError):  # stderr closed: nothing more can be said
        pass


# --------------------------------------------------------------------------- messages and progress for people


class Console:
    """Side information for people, on stderr: warnings always, progress only on a terminal."""

    def __init__(self, quiet: bool = False, verbose: bool = False, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.interactive = not quiet and _stream_isatty(self.stream)

    def warn(self, message: str) -> None:
        say(f"warning: {message}", self.stream)

    def info(self, message: str) -> None:
        if not self.quiet:
            say(message, self.stream)

    def progress(self, description: str, total: float | None = None) -> ProgressHandle:
        """A Rich progress bar on a terminal; a no-op otherwise (pipes and CI stay clean)."""
        if not self.interactive:
            return ProgressHandle(None, None)
        from rich.console import Console as RichConsole
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = RichConsole(file=self.stream, no_color="NO_COLOR" in os.environ)
        columns: list[Any] = [SpinnerColumn(), TextColumn("[progress.description]{task.description}")]
        if total is not None:
            columns += [BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
        else:
            columns += [TextColumn("{task.completed:.0f}")]
        columns += [TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
        bar = Progress(*columns, console=console, transient=True)
        bar.start()
        return ProgressHandle(bar, bar.add_task(description, total=total, status=""))


class ProgressHandle:
    def __init__(self, bar: Any, task: Any) -> None:
        self.bar, self.task = bar, task

    def advance(self, n: float = 1, status: str | None = None) -> None:
        if self.bar is not None:
            kwargs = {"status": status} if status is not None else {}
            self.bar.update(self.task, advance=n, **kwargs)

    def update(self, completed: float | None = None, total: float | None = None, status: str | None = None) -> None:
        if self.bar is not None:
            kwargs: dict[str, Any] = {}
            if completed is not None:
                kwargs["completed"] = completed
            if total is not None:
                kwargs["total"] = total
            if status is not None:
                kwargs["status"] = status
            self.bar.update(self.task, **kwargs)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> ProgressHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _stream_isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (ValueError, OSError, AttributeError):
        return False


def stdout_isatty() -> bool:
    return sys.stdout is not None and _stream_isatty(sys.stdout)
