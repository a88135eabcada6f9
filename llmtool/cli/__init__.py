"""The ``llmtool`` command line: parse, check the cheap things, call a task module's single entry.

The package stays light: ``llmtool --help`` imports neither torch nor transformers (a test checks),
nothing here loads a model, and task modules are imported inside the command that needs them.

- :mod:`llmtool.cli.options`: every flag, its default and help read from :mod:`llmtool.settings`;
- :mod:`llmtool.cli.inference`: fill-mask, generate, classify, score, evaluate, next-sentence;
- :mod:`llmtool.cli.training`: finetune, pretrain, corpus.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Annotated, Any, TypeVar

import typer

from llmtool import __version__
from llmtool.errors import ExitCode, Terminated, report
from llmtool.io.console import say
from llmtool.io.streams import Console, Formatter, OutputFormat

F = TypeVar("F", bound=Callable[..., Any])

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


def handle_errors(func: F) -> F:
    """Run a command body; turn every failure into one line on stderr and a documented status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(ExitCode.BROKEN_PIPE) from None
        except BaseException as exc:  # every failure gets reported, Ctrl-C and SIGTERM included
            raise typer.Exit(report(exc)) from None

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """After the reader of stdout has gone, make the interpreter's final flush a no-op."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def write(results: Iterable[dict[str, Any]], output: OutputFormat, formatter: Formatter, console: Console) -> None:
    """Records to stdout in the chosen format, with a progress count on a terminal."""
    from llmtool.io.streams import write_records

    with console.progress("records") as bar:

        def counted() -> Any:
            for result in results:
                yield result
                bar.advance()

        written = write_records(counted(), output, formatter)
    if written == 0 and not console.quiet:
        console.warn("no input records (the input was empty or only blank lines)")


from llmtool.cli import cache, embed, inference, training  # noqa: E402  (the commands register themselves on ``app``)

__all__ = ["app", "cache", "embed", "inference", "main", "training"]


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


@app.command("version")
def version_command() -> None:
    """Print llmtool's version."""
    typer.echo(__version__)


@app.command("env")
@handle_errors
def env_command(
    json_flag: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """What llmtool runs on, for bug reports and CI logs: versions, devices, caches, offline state, threads.

    Example: llmtool env --json | jq .packages
    """
    from llmtool import envinfo
    from llmtool.io.streams import json_line

    info = envinfo.collect()
    typer.echo(json_line(info) if json_flag else envinfo.render(info))


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
        _silence_stdout()
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
