"""Shared training machinery: one ``transformers.Trainer`` run under llmtool's rules.

Used by ``finetune`` (and ``pretrain``). A task module builds the model, tokenizer, datasets,
collator and metric function; this module owns everything around the Trainer:

- the defaults (:class:`TrainSettings`) and their translation into ``TrainingArguments``;
- the output folder (:class:`OutputFolder`): refuse a non-empty one unless ``overwrite`` or
  ``resume``, a lock so two runs never share it, checkpoints in ``DIR/checkpoints``, the final model
  written to a temporary folder beside it and renamed into place, and on failure nothing left
  half-written (what this run created is removed; finished checkpoints are kept for ``--resume``);
- progress (one Rich bar with loss and ETA, only when stderr is a terminal; no tqdm) and one
  ``llmtool: ...`` line per evaluation;
- Ctrl-C and SIGTERM: the run stops at the next step boundary, saves a checkpoint and exits 130 or
  143; ``--resume`` continues from it (optimizer, scheduler, RNG and data position);
- distributed runs (``torchrun``, ``accelerate launch``): only the main process prints and writes.

Usage, from a task module::

    with TrainingRun(output_dir, settings, console) as run:
        data = run.main_first(lambda: build_datasets(cache_dir=run.cache_dir))
        model, tokenizer = ...
        result = run.train(model, tokenizer, train_ds, valid_ds, collator, compute_metrics,
                           best_metric="accuracy", record={"task": ...})
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from llmtool.errors import LlmtoolError, Terminated, UsageError
from llmtool.io.console import PREFIX, say
from llmtool.io.streams import Console, ProgressHandle
from llmtool.settings import TrainSettings
from llmtool.training import interrupts

T = TypeVar("T")

CHECKPOINTS = "checkpoints"  # Trainer checkpoints, inside the output folder
CACHE = ".llmtool-cache"  # Arrow copies of the data and tokenized data, inside the output folder
LOCK = ".llmtool.lock"  # held while a run writes the output folder
SETTINGS_FILE = "llmtool_settings.json"  # the resolved settings, beside the model
METRICS_FILE = "metrics.json"  # the final metrics, beside the model
CURVES_FILE = "metrics.png"  # the same as a picture: loss and the task metric per evaluation (llmtool[plot])
LOWER_IS_BETTER = ("loss", "perplexity")
SAVE_SECONDS = 600  # a checkpoint (without evaluation) when the last one is this old, between the step cadence's


# --------------------------------------------------------------------------- signals and results


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """A training command's set-up with Ctrl-C/SIGTERM deferred (llmtool.training.interrupts): training resumes
    them when it starts (``_GracefulStop``); a signal received before then is raised when set-up ends."""
    interrupts.defer()
    try:
        yield
    except BaseException:
        interrupts.restore()  # set-up or training ended early (an error): nothing left to defer
        raise
    interrupts.resume()


def print_result(result: dict[str, Any], as_json: bool = False) -> None:
    """The final metrics on stdout, from the main process only: JSON, or a few lines for people."""
    if not is_main_process():
        return
    from llmtool.io.streams import json_line

    sys.stdout.write((json_line(result) if as_json else format_result(result)) + "\n")
    sys.stdout.flush()


def format_result(result: dict[str, Any]) -> str:
    """The final metrics for people: a few aligned lines (``--json`` gives everything)."""
    valid = result.get("valid") or {}
    train = result.get("train") or {}
    lines = [f"model   {result.get('model')}"]
    task = result.get("task", "")
    if result.get("labels"):
        task += f" (labels: {', '.join(str(x) for x in result['labels'])})"
    lines.append(f"task    {task}")
    if valid:
        scores = "  ".join(f"{k} {_num(v)}" for k, v in valid.items())
        lines.append(f"valid   {scores}  (best at step {result.get('best_step')})")
    lines.append(
        f"train   loss {_num(train.get('loss'))}, {train.get('steps')} steps, {train.get('epochs')} epochs, "
        f"{train.get('seconds')} s"
    )
    return "\n".join(lines)


def _num(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


# --------------------------------------------------------------------------- processes


def world_size() -> int:
    """Processes in this run, as set by torchrun / accelerate launch (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """Only the main process prints and writes; the launchers set RANK before Python starts."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _distributed() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


# --------------------------------------------------------------------------- the output folder


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


# --------------------------------------------------------------------------- the run


class TrainingRun:
    """One training run into one output folder: a context manager around preparation and training.

    On entry the main process checks and locks the output folder (every process learns whether
    that worked); on an exception, what this run created is removed (finished checkpoints stay).
    """

    def __init__(self, output_dir: str, settings: TrainSettings, console: Console) -> None:
        settings.check()
        self.settings = settings
        self.main = is_main_process()
        # Only the main process speaks: the others would repeat every line (and warning) N times.
        self.console = console if self.main else Console(quiet=True, stream=open(os.devnull, "w"))  # noqa: SIM115
        self.folder = OutputFolder(
            output_dir, overwrite=settings.overwrite, resume=settings.resume, keep_checkpoints=settings.keep_checkpoints
        )
        self.distributed = world_size() > 1

    @property
    def output_dir(self) -> Path:
        return self.folder.path

    @property
    def cache_dir(self) -> str:
        return str(self.folder.cache)

    def __enter__(self) -> TrainingRun:
        if self.distributed:
            self._init_process_group()
        self.main_first(self._open_folder, then_others=False)
        return self

    def _open_folder(self) -> None:
        self.folder.open()

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if not self.main:
            return
        if exc is None:
            self.folder.unlock()
            return
        interrupted = isinstance(exc, KeyboardInterrupt | Terminated)
        hint = self.folder.clean_up_failure(interrupted)
        if hint:
            self.console.info(hint)

    def _init_process_group(self) -> None:
        """Start the process group early: the main process prepares the folder while the others wait."""
        from accelerate import PartialState

        PartialState(cpu=_use_cpu(self.settings.device))

    def main_first(self, fn: Callable[[], T], *, then_others: bool = True) -> T:
        """Run ``fn`` on the main process, then (``then_others``) on the rest, which reuse its caches.

        A failure on the main process is raised on every process with the same message, instead
        of leaving the others waiting at a barrier.
        """
        dist = _distributed() if self.distributed else None
        if dist is None:
            return fn()
        result: Any = None
        failure: BaseException | None = None
        if self.main:
            try:
                result = fn()
            except BaseException as exc:  # shared with the other processes, then raised here too
                failure = exc
        payload: list[Any] = [None if failure is None else _portable_error(failure)]
        dist.broadcast_object_list(payload, src=0)
        if failure is not None:
            raise failure
        if payload[0] is not None:
            raise payload[0]
        if not self.main and then_others:
            result = fn()
        dist.barrier()
        return result

    # ---------------------------------------------------------- training

    def train(
        self,
        model: Any,
        tokenizer: Any,
        train_dataset: Any,
        eval_dataset: Any | None,
        data_collator: Any,
        compute_metrics: Callable[[Any], dict[str, float]] | None = None,
        *,
        best_metric: str = "loss",
        derived_metrics: Callable[[dict[str, float]], dict[str, float]] | None = None,
        record: dict[str, Any] | None = None,
        summary: dict[str, Any] | None = None,
        finish: Callable[[Any, Path], None] | None = None,
    ) -> dict[str, Any]:
        """Train, keep the best checkpoint, write the final model atomically; return the final metrics.

        ``best_metric`` (without the ``eval_`` prefix) picks the best checkpoint unless the settings
        name another; ``derived_metrics`` adds metrics computed from the evaluated ones (perplexity);
        ``record`` is written to ``llmtool_settings.json`` together with the training settings;
        ``summary`` (the task, its labels) leads the returned metrics and ``metrics.json``;
        ``finish(model, folder)`` adds to (or replaces) what Trainer saved in the final folder (LoRA).
        """
        s = self.settings
        if s.patience is not None and eval_dataset is None:
            raise UsageError("--patience needs validation data (--valid FILE or --valid-split > 0)")
        from transformers import Trainer

        from llmtool.models import prepare_environment

        prepare_environment(verbose=self.console.verbose)  # silences Trainer logs and the save bars
        metric = s.best_metric or best_metric
        resume_from = self._resume_point()
        args = build_training_args(s, str(self.folder.checkpoints), has_eval=eval_dataset is not None, metric=metric)
        args.eval_on_start = s.eval_on_start and eval_dataset is not None and resume_from is None
        callbacks: list[Any] = []  # TrainerCallback, or duck-typed ones (see _LazyCallback)
        if s.patience is not None:
            from transformers import EarlyStoppingCallback

            callbacks.append(EarlyStoppingCallback(early_stopping_patience=s.patience))
        if callable(getattr(data_collator, "set_epoch", None)):
            callbacks.append(_EpochToCollator(data_collator))
        callbacks.append(_TimedCheckpoint(SAVE_SECONDS))
        stopper = _GracefulStop(self.console)
        reporter = _Reporter(self.console, derived_metrics)
        trainer = Trainer(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            callbacks=[*callbacks, reporter, stopper],  # type: ignore[list-item]
        )
        if self.main:
            trainer.add_callback(_FolderGuard(self.folder.path))  # type: ignore[arg-type]
        _drop_printer(trainer)
        started = time.monotonic()
        try:
            with stopper.installed():
                trainer.train(resume_from_checkpoint=resume_from)
        except (OSError, RuntimeError) as exc:
            raise _write_failure(exc, self.folder.path) from exc
        if stopper.signum is not None:
            interrupts.raise_for(stopper.signum)
        result = {
            **(summary or {}),
            "model": str(self.folder.path),
            **_final_metrics(trainer, derived_metrics, metric, time.monotonic() - started),
        }
        try:
            self._write_final(trainer, tokenizer, result, record or {}, finish)
        except (OSError, RuntimeError) as exc:
            raise _write_failure(exc, self.folder.path) from exc
        return result

    def _resume_point(self) -> str | None:
        if not self.settings.resume:
            return None
        latest = self.folder.latest_checkpoint()
        if latest is None:
            self.console.info(f"nothing to resume in {self.folder.path}; starting afresh")
        else:
            self.console.info(f"resuming from {latest}")
        return latest

    def _write_final(
        self,
        trainer: Any,
        tokenizer: Any,
        result: dict[str, Any],
        record: dict[str, Any],
        finish: Callable[[Any, Path], None] | None = None,
    ) -> None:
        tmp = self.folder.final_tmp
        if self.main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        self.main_first(lambda: None, then_others=False)  # the others wait until the folder exists
        trainer.save_model(str(tmp))  # every process: FSDP and DeepSpeed gather the weights collectively
        if self.main:
            if finish is not None:
                finish(trainer.model, tmp)
            tokenizer.save_pretrained(str(tmp))
            settings = {**record, "training": asdict(self.settings), "versions": _versions()}
            _write_json(tmp / SETTINGS_FILE, settings)
            _write_json(tmp / METRICS_FILE, result)
            draw_curves(tmp / CURVES_FILE, result, trainer.state.log_history, self.console)
            _remove_training_args(tmp)
            self.folder.publish()
        self.main_first(lambda: None, then_others=False)


def _portable_error(exc: BaseException) -> BaseException:
    """An error the other processes can raise: the same message and exit status."""
    if isinstance(exc, LlmtoolError):
        return type(exc)(str(exc)) if type(exc) is not LlmtoolError else LlmtoolError(str(exc))
    if isinstance(exc, KeyboardInterrupt | Terminated):
        return exc
    return LlmtoolError(f"the main process failed: {type(exc).__name__}: {exc}")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _use_cpu(device: str) -> bool:
    """Train on the CPU when asked, or when there is no accelerator. Transformers must be told: left to
    itself under torchrun on a CPU-only machine, it trains one independent copy per process, not DDP."""
    if device == "cpu":
        return True
    if device == "cuda" or _cuda_available():
        return False
    import torch

    mps = getattr(torch.backends, "mps", None)
    return not (mps is not None and mps.is_available())


def _drop_printer(trainer: Any) -> None:
    """With tqdm off, Trainer prints every log dict to stdout; stdout is for data only."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)


def _remove_training_args(folder: Path) -> None:
    """Trainer.save_model writes training_args.bin (a pickle); llmtool_settings.json says the same, safely."""
    (folder / "training_args.bin").unlink(missing_ok=True)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    found = {}
    for name in ("llmtool", "torch", "transformers", "accelerate", "datasets"):
        with contextlib.suppress(md.PackageNotFoundError):
            found[name] = md.version(name)
    return found


# --------------------------------------------------------------------------- TrainingArguments


def resolve_precision(precision: str, device: str) -> str:
    """fp32, bf16 or fp16: auto picks bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    if device == "cpu" or not _cuda_available():
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def build_training_args(s: TrainSettings, checkpoint_dir: str, *, has_eval: bool, metric: str) -> Any:
    """``TrainingArguments`` from the settings: evaluate and checkpoint together, keep the best."""
    from transformers import TrainingArguments

    if s.device == "cuda" and not _cuda_available():
        raise UsageError("--device cuda: no CUDA GPU is available here (try --device cpu)")
    precision = resolve_precision(s.precision, s.device)
    if precision == "fp16" and (s.device == "cpu" or not _cuda_available()):
        raise UsageError("--fp16 needs a CUDA GPU; on the CPU use --bf16 or full precision")
    if s.lr is None or s.batch_size is None or s.warmup_ratio is None or (s.epochs is None and s.max_steps is None):
        raise ValueError("training settings left open: fill them in with llmtool.training.plan.make_plan first")
    strategy = "steps" if s.save_steps else "epoch"
    metric = metric.removeprefix("eval_")
    return TrainingArguments(
        output_dir=checkpoint_dir,
        num_train_epochs=s.epochs if s.epochs is not None else 1.0,
        max_steps=s.max_steps if s.max_steps is not None else -1,
        learning_rate=s.lr,
        per_device_train_batch_size=s.batch_size,
        per_device_eval_batch_size=s.eval_batch_size or s.batch_size,
        gradient_accumulation_steps=s.grad_accum,
        warmup_steps=s.warmup_ratio,  # a float below 1 is a ratio of all steps in Transformers 5
        weight_decay=s.weight_decay,
        seed=s.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=_use_cpu(s.device),
        gradient_checkpointing=s.gradient_checkpointing,
        eval_strategy=strategy if has_eval else "no",
        save_strategy=strategy,
        eval_steps=s.save_steps,
        save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model=metric if has_eval else None,
        greater_is_better=metric not in LOWER_IS_BETTER,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives --resume
        logging_strategy="steps",
        logging_steps=s.logging_steps,
        logging_first_step=True,
        report_to=s.report_to,
        disable_tqdm=True,  # progress is llmtool's one Rich bar
        log_level="error",
        log_level_replica="error",
        dataloader_num_workers=s.num_workers,
        # Transformers' default (True) costs an extra graph traversal per step, and DDP warns about it on
        # every process; the models fine-tuned here use every parameter in each forward pass.
        ddp_find_unused_parameters=s.find_unused_parameters,
        # Under DDP the logged loss is world_size times too big with token averaging across devices.
        average_tokens_across_devices=False,
    )


# --------------------------------------------------------------------------- callbacks


class _LazyCallback:
    """Duck-typed TrainerCallback: CallbackHandler calls ``on_*`` methods by name; missing ones are no-ops."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)


class _Reporter(_LazyCallback):
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
        parts = ", ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
        self.say(f"epoch {state.epoch or 0:.2f}, step {state.global_step}: validation {parts}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class _FolderGuard(_LazyCallback):
    """Stop with a clear error when the output folder (or its lock) disappears during training.

    Trainer would quietly re-create the checkpoint folder, and a second run could then take the
    folder too: the lock file is what proves this run still owns it.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not (self.folder / LOCK).exists():
            raise LlmtoolError(f"{self.folder}: the output folder (or its lock file) was removed during training")


def _write_failure(exc: BaseException, folder: Path) -> BaseException:
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


class _TimedCheckpoint(_LazyCallback):
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


class _EpochToCollator(_LazyCallback):
    """Tells a collator with ``set_epoch`` (random masking drawn per example and epoch) which epoch runs,
    before its first batch is drawn: also for the epoch a resumed run continues in the middle of."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.collator.set_epoch(math.floor((state.epoch or 0) + 1e-6))


class _GracefulStop(_LazyCallback):
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
        dist = _distributed()
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


# --------------------------------------------------------------------------- metrics


_SPEED_KEYS = ("runtime", "samples_per_second", "steps_per_second")


def clean_metrics(
    metrics: dict[str, Any], derived: Callable[[dict[str, float]], dict[str, float]] | None = None
) -> dict[str, float]:
    """``eval_accuracy`` -> ``accuracy``; timings dropped; derived metrics (perplexity) added."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = key.removeprefix("eval_")
        if name in _SPEED_KEYS or name in ("epoch", "step") or not isinstance(value, int | float):
            continue
        out[name] = float(value)
    if derived is not None:
        out.update(derived(out))
    # loss first, then the rest by name: the same order in a fresh and in a resumed run's history
    return {k: out[k] for k in sorted(out, key=lambda k: (k != "loss", k))}


def perplexity(metrics: dict[str, float]) -> dict[str, float]:
    """exp(loss), the usual language-model metric (capped so that a diverged run stays finite JSON)."""
    loss = metrics.get("loss")
    return {} if loss is None else {"perplexity": math.exp(min(loss, 50.0))}


def _final_metrics(
    trainer: Any,
    derived: Callable[[dict[str, float]], dict[str, float]] | None,
    metric: str,
    seconds: float,
) -> dict[str, Any]:
    state = trainer.state
    history = []
    train_losses: dict[int, float] = {}
    for entry in state.log_history:
        if "loss" in entry and "step" in entry:
            train_losses[int(entry["step"])] = float(entry["loss"])
        if any(k.startswith("eval_") for k in entry):
            history.append(
                {
                    "epoch": round(float(entry.get("epoch", 0)), 4),
                    "step": int(entry.get("step", 0)),
                    **clean_metrics(entry, derived),
                }
            )
    best_step = state.best_global_step if history else None
    best = next((h for h in history if h["step"] == best_step), history[-1] if history else None)
    valid = {k: v for k, v in best.items() if k not in ("epoch", "step")} if best else {}
    return {
        "valid": valid,
        "train": {
            # the last logged loss (a mean over --logging-steps steps): the same whether or not the run was
            # resumed, unlike Trainer's training_loss, which averages over the steps of this process only
            "loss": train_losses[max(train_losses)] if train_losses else None,
            "steps": int(state.global_step),
            "epochs": round(float(state.epoch or 0), 4),
            "seconds": round(seconds, 2),
        },
        "best_step": best_step,
        "best_metric": metric.removeprefix("eval_"),
        "stopped_early": bool(history) and state.global_step < state.max_steps,
        "history": history,
    }


def _fmt(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"


def draw_curves(path: Path, metrics: dict[str, Any], log_history: list[dict[str, Any]], console: Console) -> None:
    """The run's loss and metric curves as a PNG beside metrics.json. A picture is a comfort: without
    matplotlib, or if drawing fails, training still succeeds and one line on stderr says why."""
    from llmtool import plots

    if not plots.available():
        console.info(f"no {path.name} drawn: the training curves need matplotlib (pip install 'llmtool[plot]')")
        return
    losses = [(int(e["step"]), float(e["loss"])) for e in log_history if "loss" in e and "step" in e]
    try:
        plots.training_curves(metrics, path, losses)
    except Exception as exc:  # never lose a trained model over its picture
        console.warn(f"{path.name} not drawn: {type(exc).__name__}: {exc}")
