"""``llmtool version`` and ``llmtool env``: what llmtool is, and what it runs on."""

from __future__ import annotations

from typing import Annotated

import typer

from llmtool import __version__
from llmtool.cli.common import handle_errors


def version_command() -> None:
    """Print llmtool's version."""
    typer.echo(__version__)


@handle_errors
def env_command(
    json_flag: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
) -> None:
    """What llmtool runs on, for bug reports and CI logs: versions, devices, caches, offline state, threads.

    Example: llmtool env --json | jq .packages
    """
    from llmtool import envinfo
    from llmtool.io.formats import json_line

    info = envinfo.collect()
    typer.echo(json_line(info) if json_flag else envinfo.render(info))
