"""The ``llmtool`` command line: parse, check the cheap things, call a task module's single entry.

The package stays light: ``llmtool --help`` imports neither torch nor transformers (a test checks),
nothing here loads a model, and task modules are imported inside the command that needs them.

- one module per command (``llmtool.cli.fill_mask``, ...) or group of commands (``llmtool.cli.training``:
  finetune, merge, pretrain, corpus), registered here in the order of :mod:`llmtool.tasks.registry`;
- :mod:`llmtool.cli.options`: every flag, its default and help read from :mod:`llmtool.settings`;
- :mod:`llmtool.cli.common`: what every command body shares (errors to one line, writing records).

Each command's ``--help`` ends with its docs page (``Docs: docs/commands/<command>.md``).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
from typing import Annotated, Any

import typer

from llmtool import __version__
from llmtool.cli.common import silence_stdout
from llmtool.errors import ExitCode, Terminated, report
from llmtool.io.console import say
from llmtool.tasks.registry import COMMANDS, Command

app = typer.Typer(
    name="llmtool",
    help="A small, fast, Unix-native command line over Hugging Face Transformers.\n\n"
    "Data goes to stdout, everything else to stderr. Input: a TEXT argument, --input FILE, or "
    "lines piped on stdin. Exit codes: 0 ok, 1 failure, 2 usage or bad input, 3 model unavailable, "
    "130 interrupted.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(entry: Command) -> None:
    """Add a command (a function) or a group of commands (a Typer app) to ``app``, its help ending
    with its docs page. Only the command modules are imported: they import no torch."""
    module, attribute = entry.cli.split(":")
    target = getattr(importlib.import_module(module), attribute)
    epilog = f"Docs: {entry.docs}"
    if isinstance(target, typer.Typer):
        for sub in target.registered_commands:
            sub.epilog = sub.epilog or epilog
        app.add_typer(target, name=entry.name, epilog=epilog)
    else:
        if entry.jobs:
            from llmtool.cli.job import with_job_options

            target = with_job_options(target, entry.name)
        app.command(entry.name, epilog=epilog)(target)


for _entry in COMMANDS:
    register(_entry)

__all__ = ["app", "main", "register"]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", help="Print llmtool's version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    """A small, fast, Unix-native command line over Hugging Face Transformers."""


# ---------------------------------------------------------------------------- entry point


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    # A signal this process was started ignoring stays ignored (Unix practice: a script's
    # background jobs ignore SIGINT); Python itself leaves an ignored SIGINT alone.
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _on_sigterm)
    if "NO_COLOR" in os.environ:
        os.environ.setdefault("TERM", "dumb")
    try:
        result = app(args=argv, prog_name="llmtool", standalone_mode=False)
    except BrokenPipeError:
        silence_stdout()
        return _finish(ExitCode.BROKEN_PIPE)
    except (typer.Abort, KeyboardInterrupt, Terminated) as exc:  # a signal while parsing the command line
        return _finish(report(exc if not isinstance(exc, typer.Abort) else KeyboardInterrupt()))
    except Exception as exc:  # usage errors raised by the parser
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:  # bare `llmtool`: the help, on stdout
            sys.stdout.write(ctx.get_help() + "\n")
            return _finish(ExitCode.USAGE)
        message = getattr(exc, "format_message", None)
        if message is None or not hasattr(exc, "exit_code"):
            return _finish(report(exc))
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        say(f"error: {' '.join(message().split())}{_from_environment(exc)}{hint}")
        return _finish(int(exc.exit_code))
    return _finish(int(result) if isinstance(result, int) else ExitCode.OK)


def _from_environment(exc: Exception) -> str:
    """The note " (from VARIABLE=value)" when the bad value came from an environment variable, not a flag."""
    ctx, param = getattr(exc, "ctx", None), getattr(exc, "param", None)
    if ctx is None or param is None or not getattr(param, "name", None):
        return ""
    source = ctx.get_parameter_source(param.name)
    if source is None or source.name != "ENVIRONMENT":
        return ""
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
    variable = next((v for v in names if os.environ.get(v)), None)
    return f" (from the environment: {variable}={os.environ[variable]!r})" if variable else ""


def _finish(code: int) -> int:
    """Flush, and leave at once if a reader thread is still blocked on stdin.

    Interpreter shutdown would otherwise wait for that thread's lock on stdin and abort with
    "could not acquire lock" (e.g. after Ctrl-C while a pipe is still open).
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()
    if any(t.name == "llmtool-reader" and t.is_alive() for t in threading.enumerate()):
        os._exit(code)
    return code
