"""Ctrl-C and SIGTERM while a training command sets up: recorded, then raised at a safe point.

Python raises KeyboardInterrupt wherever the main thread happens to be, and during set-up that can
be Python code that torch's C++ called (import-time registrations, destructors). There the
exception can escape as a C++ exception and abort the process ("terminate called after throwing
an instance of 'pybind11::error_already_set'", exit status -6, no clean-up: seen once in CI with a
SIGINT during `pretrain`'s set-up). So from the start of `finetune`/`pretrain` until training
begins, the first signal is only recorded and announced; :func:`resume` raises it in llmtool's own
code, and training then stops gracefully on its own terms (see ``training.callbacks.GracefulStop``). A
second signal raises at once. Signals ignored since start-up stay ignored.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from llmtool.errors import Terminated
from llmtool.io.console import say

SIGNALS = (signal.SIGINT, signal.SIGTERM)
_saved: dict[int, Any] = {}  # the handlers to restore, while deferring
_pending: int | None = None  # the signal received while deferring


def defer() -> None:
    """Record SIGINT/SIGTERM instead of raising them, until :func:`resume` or :func:`restore`."""
    if threading.current_thread() is not threading.main_thread() or _saved:
        return
    for sig in SIGNALS:
        handler = signal.getsignal(sig)
        if handler is not signal.SIG_IGN:
            _saved[sig] = handler
            signal.signal(sig, _record)


def restore() -> int | None:
    """Put the previous handlers back; the signal received meanwhile (now forgotten), if any."""
    global _pending
    for sig, handler in _saved.items():
        signal.signal(sig, handler)
    _saved.clear()
    received, _pending = _pending, None
    return received


def resume() -> None:
    """Put the previous handlers back, and raise the signal received meanwhile, if any."""
    received = restore()
    if received is not None:
        raise_for(received)


def raise_for(signum: int) -> None:
    """The exception llmtool stops with for ``signum``: KeyboardInterrupt (130) or Terminated (143)."""
    raise KeyboardInterrupt if signum == signal.SIGINT else Terminated()


def name(signum: int) -> str:
    return "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"


def _record(signum: int, frame: Any) -> None:
    global _pending
    if _pending is not None:  # asked twice: stop now
        raise_for(signum)
    _pending = signum
    say(f"{name(signum)}: stopping when set-up reaches a safe point (again to quit at once)")
