"""The output folder of a training run: its layout, its lock, its checkpoints, and publishing the model.

A run writes only inside ``DIR`` (and, at the end, a temporary folder beside it that is renamed into
place): see :class:`OutputFolder`. :func:`write_failure` names the usual causes of a failed write.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from llmtool.errors import LlmtoolError, UsageError

CHECKPOINTS = "checkpoints"  # Trainer checkpoints, inside the output folder
CACHE = ".llmtool-cache"  # Arrow copies of the data and tokenized data, inside the output folder
LOCK = ".llmtool.lock"  # held while a run writes the output folder
SETTINGS_FILE = "llmtool_settings.json"  # the resolved settings, beside the model
METRICS_FILE = "metrics.json"  # the final metrics, beside the model
CURVES_FILE = "metrics.png"  # the same as a picture: loss and the task metric per evaluation (llmtool[plot])


class OutputFolder:
    """The output folder of one run, and the rules for it.

    Layout while training::

        DIR/.llmtool.lock         this run's lock (pid, host)
        DIR/.llmtool-cache/       Arrow data, removed at the end
        DIR/checkpoints/checkpoint-N/   Trainer checkpoints (kept on Ctrl-C, for --resume)

    and when done, DIR holds the model, tokenizer, ``metrics.json`` and ``llmtool_settings.json``.
    """

    def __init__(
        self, path: str, *, overwrite: bool = False, resume: bool = False, keep_checkpoints: bool = False
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.overwrite, self.resume, self.keep_checkpoints = overwrite, resume, keep_checkpoints
        self.created_dir = False  # this run made DIR: a failure before any checkpoint removes it
        self.created: list[Path] = []  # what this run made inside an existing DIR
        self.locked = False
        self._filelock: Any = None

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def cache(self) -> Path:
        return self.path / CACHE

    @property
    def final_tmp(self) -> Path:
        """The final model is written here (same parent, so the rename is atomic), then renamed to DIR."""
        return self.path.parent / f".{self.path.name}.llmtool-final"

    # ---------------------------------------------------------- opening

    def open(self) -> None:
        """Check the folder rules, create the folder and take the lock (main process only)."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise UsageError(f"--output {p} is a file, not a folder")
        if not p.exists():  # with --resume too: nothing to resume yet, so a --resume command can be re-run as is
            try:
                p.mkdir(parents=True)
            except FileExistsError:  # another run made it this instant
                raise UsageError(f"--output {p} was just created by another process; use another folder") from None
            self.created_dir = True
        else:
            self._check_existing()
        self._lock()
        if not self.resume:
            self._discard_old_run()
        for sub in (self.cache, self.checkpoints):
            if not sub.exists():
                sub.mkdir()
                self.created.append(sub)
        if self.final_tmp.exists():  # left by a run that was killed while publishing
            shutil.rmtree(self.final_tmp)

    def _check_existing(self) -> None:
        entries = [e for e in self.path.iterdir() if e.name != LOCK]
        holder = self._lock_holder()
        if holder is not None:
            raise UsageError(
                f"--output {self.path} is in use by another llmtool run ({holder}); wait for it or stop it"
            )
        if not entries or self.overwrite:
            return
        if self.resume:
            if self.latest_checkpoint() is not None or all(e.name in (CACHE, CHECKPOINTS) for e in entries):
                return  # a checkpoint to resume, or only the leftovers of a run stopped early: start afresh
            if (self.path / "config.json").exists() or (self.path / "adapter_config.json").exists():
                what = "LoRA adapter" if (self.path / "adapter_config.json").exists() else "model"
                raise UsageError(
                    f"--resume: {self.path} holds a finished {what} and no checkpoint to resume; "
                    "pass --overwrite to train again, or --keep-checkpoints next time"
                )
            # Never adopt a folder of other files: publishing the model replaces the whole folder.
            raise UsageError(f"--resume: {self.path} has no checkpoint to resume and is not empty")
        raise UsageError(
            f"--output {self.path} is not empty; pass --overwrite to replace it, or --resume to continue its training"
        )

    def _discard_old_run(self) -> None:
        """A fresh run (or --overwrite) must not pick up an older run's checkpoints or data."""
        for sub in (self.checkpoints, self.cache):
            if sub.exists():
                shutil.rmtree(sub)

    # ---------------------------------------------------------- the lock

    def _lock_holder(self) -> str | None:
        """``pid N`` (``on HOST``) if a live run holds the lock, else None. The lock is an OS file lock
        (``filelock``): a run that dies releases it, so a lock file left behind is never taken for a run."""
        from filelock import FileLock, Timeout

        lock = self.path / LOCK
        if self.locked or not lock.exists():
            return None
        probe = FileLock(str(lock), thread_local=False)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            try:
                info = json.loads(lock.read_text(encoding="utf-8"))
                pid, host = int(info.get("pid", 0)), str(info.get("host", ""))
            except (OSError, ValueError, TypeError, AttributeError):
                return "another process"
            return f"pid {pid}" if host == socket.gethostname() else f"pid {pid} on {host}"
        probe.release()
        return None

    def _lock(self) -> None:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / LOCK), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(
                f"--output {self.path} is in use by another llmtool run ({self._lock_holder() or 'just started'})"
            ) from None
        # Who holds it, for the message another run prints (the OS lock itself is what counts).
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        (self.path / LOCK).write_text(json.dumps(info), encoding="utf-8")
        self._filelock = lock
        self.locked = True

    def unlock(self) -> None:
        if self.locked:
            (self.path / LOCK).unlink(missing_ok=True)
            self._filelock.release()
            self.locked = False

    # ---------------------------------------------------------- checkpoints

    def latest_checkpoint(self) -> str | None:
        """The newest complete checkpoint (one whose trainer_state.json, written last, exists)."""
        done = self.complete_checkpoints()
        return str(done[-1]) if done else None

    def complete_checkpoints(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        found = [c for c in self.checkpoints.glob("checkpoint-*") if c.name.split("-")[-1].isdigit()]
        done = [c for c in found if (c / "trainer_state.json").is_file()]
        return sorted(done, key=lambda c: int(c.name.split("-")[-1]))

    def remove_incomplete_checkpoints(self) -> None:
        if not self.checkpoints.is_dir():
            return
        done = set(self.complete_checkpoints())
        for c in self.checkpoints.glob("checkpoint-*"):
            if c not in done:
                shutil.rmtree(c, ignore_errors=True)

    # ---------------------------------------------------------- closing

    def publish(self) -> None:
        """Move the finished model (already written to ``final_tmp``) into place as DIR.

        Checkpoints go along when asked to keep them. DIR is renamed aside and the new folder
        renamed in: a reader sees the old folder or the new one, never a half-written model.
        """
        tmp = self.final_tmp
        if self.keep_checkpoints and self.checkpoints.is_dir():
            self.remove_incomplete_checkpoints()
            os.rename(self.checkpoints, tmp / CHECKPOINTS)
        old = self.path.parent / f".{self.path.name}.llmtool-old-{os.getpid()}"
        os.rename(self.path, old)
        os.rename(tmp, self.path)
        (old / LOCK).unlink(missing_ok=True)  # the lock went with the old folder
        self._filelock.release()
        self.locked = False
        shutil.rmtree(old, ignore_errors=True)

    def clean_up_failure(self, interrupted: bool) -> str | None:
        """Remove what this run created; keep finished checkpoints. Returns a hint about what was kept."""
        if self.final_tmp.exists():
            shutil.rmtree(self.final_tmp, ignore_errors=True)
        shutil.rmtree(self.cache, ignore_errors=True)
        self.remove_incomplete_checkpoints()
        kept = self.latest_checkpoint()
        hint = None
        if kept is not None:
            hint = f"checkpoint {'saved' if interrupted else 'kept'} in {kept}; continue with --resume"
        elif self.created_dir:
            self.unlock()
            shutil.rmtree(self.path, ignore_errors=True)
            return None
        else:
            for path in reversed(self.created):
                shutil.rmtree(path, ignore_errors=True)
        self.unlock()
        return hint


def write_failure(exc: BaseException, folder: Path) -> BaseException:
    """Name the usual cause of a failed checkpoint write (torch reports a full disk obscurely)."""
    vanished = isinstance(exc, FileNotFoundError) and exc.filename and folder in Path(str(exc.filename)).parents
    if vanished or not (folder / LOCK).exists():  # a file of this run's own folder gone: someone removed it
        return LlmtoolError(f"{folder}: the output folder (or its lock file) was removed during training")
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc  # errors.describe already names ENOSPC, EROFS, EACCES with the file
    text = str(exc)
    if "PytorchStreamWriter" not in text and "inline_container" not in text and "file write failed" not in text:
        return exc
    if shutil.disk_usage(folder).free < 64 * 1024 * 1024:
        return LlmtoolError(f"no space left on device writing a checkpoint in {folder}")
    return LlmtoolError(f"could not write a checkpoint in {folder}: {' '.join(text.split())}")
