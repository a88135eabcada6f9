"""What every command body shares: one line and a documented status for any failure, and writing records.

The command modules import this, never :mod:`llmtool.cli` itself (which imports them to register them).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import typer

from llmtool.errors import ExitCode, report
from llmtool.io.console import Console
from llmtool.io.formats import Formatter, OutputFormat

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Run a command body; turn every failure into one line on stderr and a documented status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BrokenPipeError:
            silence_stdout()
            raise typer.Exit(ExitCode.BROKEN_PIPE) from None
        except BaseException as exc:  # every failure gets reported, Ctrl-C and SIGTERM included
            raise typer.Exit(report(exc)) from None

    return wrapper  # type: ignore[return-value]


def silence_stdout() -> None:
    """After the reader of stdout has gone, make the interpreter's final flush a no-op."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def write(results: Iterable[dict[str, Any]], output: OutputFormat, formatter: Formatter, console: Console) -> None:
    """Records to stdout in the chosen format, with a progress count on a terminal."""
    from llmtool.io.formats import write_records

    with console.progress("records") as bar:

        def counted() -> Any:
            for result in results:
                yield result
                bar.advance()

        written = write_records(counted(), output, formatter)
    if written == 0 and not console.quiet:
        console.warn("no input records (the input was empty or only blank lines)")
