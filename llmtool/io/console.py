"""The one function that writes an ``llmtool: ...`` line to stderr (imports nothing of llmtool's)."""

from __future__ import annotations

import sys
from typing import IO

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
