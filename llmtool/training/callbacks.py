"""The run's Trainer callbacks: progress and a line per evaluation, Ctrl-C/SIGTERM, the folder guard,
timed checkpoints, and the epoch for collators that mask per epoch.

Ctrl-C and SIGTERM: the run stops at the next step boundary, saves a checkpoint and exits 130 or
143 (:class:`GracefulStop`); during set-up they are deferred (:func:`signals_deferred`).
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmtool.errors import LlmtoolError, UsageError
from llmtool.io.console import PREFIX, say
from llmtool.io.streams import Console, ProgressHandle
from llmtool.training import interrupts
from llmtool.training.arguments import process_group, trainer_metric
from llmtool.training.folder import LOCK
from llmtool.training.results import clean_metrics, fmt


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A training command's set-up with Ctrl-C/SIGTERM deferred (llmtool.training.interrupts): training resumes
    them when it starts (``GracefulStop``); a signal received before then is raised when set-up ends."""
    interrupts.defer()
    try:
        yield
    except BaseException:
        interrupts.restore()  # set-up or training ended early (an error): nothing left to defer
        raise
    interrupts.resume()


class LazyCallback:
    """Duck-typed TrainerCallback: CallbackHandler calls ``on_*`` methods by name; missing ones are no-ops."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


class MetricCheck(LazyCallback):
    """Refuse a ``--best-metric`` the run's validation does not report, at its first evaluation, in one line
    (Trainer's own KeyError would end the run as a crash)."""

    def __init__(self, metric: str, derived: Callable[[dict[str, float]], dict[str, float]] | None) -> None:
        self.metric, self.derived = metric, derived

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not metrics or f"eval_{trainer_metric(self.metric)}" in metrics:
            return
        names = ", ".join(clean_metrics(metrics, self.derived))
        raise UsageError(f"--best-metric {self.metric}: this run's validation reports {names}")


class Reporter(LazyCallback):
    """One Rich progress bar (steps, loss, ETA) on a terminal, and a line per evaluation on stderr."""

    def __init__(self, console: Console, derived: Callable[[dict[str, float]], dict[str, float]] | None) -> None:
        self.console = console
        self.derived = derived
        self.bar: ProgressHandle | None = None
        self.loss: float | None = None

    def say(self, message: str) -> None:
        bar = self.bar.bar if self.bar is not None else None
        if bar is not None:
            bar.console.print(f"{PREFIX}{message}", markup=False, highlight=False, soft_wrap=True)
        else:
            self.console.info(message)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            self.bar = self.console.progress("training", total=state.max_steps)
            if self.bar.bar is not None and state.global_step:  # resumed: no speed sample for the skipped steps
                self.bar.bar.reset(self.bar.task, total=state.max_steps, completed=state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            loss = f"loss {self.loss:.4f} · " if self.loss is not None else ""
            self.bar.update(completed=state.global_step, status=f"{loss}epoch {state.epoch or 0:.2f}")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any
    ) -> None:
        if not state.is_world_process_zero or not metrics:
            return
        shown = clean_metrics(metrics, self.derived)
        parts = ", ".join(f"{k} {fmt(v)}" for k, v in shown.items())
        self.say(f"epoch {state.epoch or 0:.2f}, step {state.global_step}: validation {parts}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class FolderGuard(LazyCallback):
    """Stop with a clear error when the output folder (or its lock) disappears during training.

    Trainer would quietly re-create the checkpoint folder, and a second run could then take the
    folder too: the lock file is what proves this run still owns it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not (self.folder / LOCK).exists():
            raise LlmtoolError(f"{self.folder}: the output folder (or its lock file) was removed during training")


class TimedCheckpoint(LazyCallback):
    """A checkpoint (weights, optimizer, data position; no evaluation) when the last one is ``seconds``
    old: long runs with few evaluations lose at most that much work to a crash. It evaluates nothing,
    so the evaluation history, the best checkpoint and the weights do not depend on the clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.last = time.monotonic()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if time.monotonic() - self.last >= self.seconds:
            control.should_save = True

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last = time.monotonic()


class EpochToCollator(LazyCallback):
    """Tells a collator with ``set_epoch`` (random masking drawn per example and epoch) which epoch runs,
    before its first batch is drawn: also for the epoch a resumed run continues in the middle of."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.collator.set_epoch(math.floor((state.epoch or 0) + 1e-6))


class GracefulStop(LazyCallback):
    """Ctrl-C / SIGTERM: finish the current step, save a checkpoint, stop; a second signal stops at once.

    All processes agree on stopping (an all-reduce at each step end in distributed runs), so that
    they save the same checkpoint together. A stop that falls on an epoch's last step waits for the
    epoch's evaluation and checkpoint, so the resumed run sees the same evaluations as an
    uninterrupted one.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.signum: int | None = None  # the signal that asked for the stop, once all processes agree
        self._received: int | None = None  # the signal received by this process
        self._stopped_mid_epoch = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        interrupts.resume()  # set-up is over: a signal received during it stops the run here
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig, handler in previous.items():
            if handler is not signal.SIG_IGN:  # ignored since start-up (a script's background job): stays so
                signal.signal(sig, self._handle)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self._received is not None:  # asked twice: stop now, without a checkpoint
            interrupts.raise_for(signum)
        self._received = signum
        name = interrupts.name(signum)
        with contextlib.suppress(Exception):
            newline = "\n" if sys.stderr.isatty() else ""  # off the ^C and the progress bar's line
            say(f"{name}: saving a checkpoint after this step (again to quit at once)", before=newline)

    def _agreed(self, args: Any) -> int | None:
        """The stop signal, if any process has received one (all processes get the same answer)."""
        dist = process_group()
        if dist is None or dist.get_world_size() == 1:
            return self._received
        import torch

        flag = torch.tensor([self._received or 0], dtype=torch.int64, device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.signum is not None:
            return
        received = self._agreed(args)
        if received is None:
            return
        at_epoch_end = state.epoch is not None and abs(state.epoch - round(state.epoch)) < 1e-6
        if at_epoch_end and state.global_step < state.max_steps:
            return  # on_epoch_end evaluates and saves as usual, then stops
        self.signum = received
        self._stopped_mid_epoch = not at_epoch_end
        control.should_save = True
        control.should_training_stop = True

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.signum is None:
            received = self._agreed(args)
            if received is not None:
                self.signum = received
                control.should_save = True
                control.should_training_stop = True
            return
        if self._stopped_mid_epoch:  # the checkpoint is saved; no evaluation of a partial epoch
            control.should_evaluate = False
            control.should_save = False
