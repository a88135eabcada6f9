"""Shared training machinery: one ``transformers.Trainer`` run under llmtool's rules.

Used by ``finetune`` and ``pretrain``. A command builds the model, tokenizer, datasets, collator
and metric functions; :class:`TrainingRun` owns everything around the Trainer, from these modules:

- :mod:`~llmtool.training.arguments`: ``TrainingArguments`` from the settings; processes, device, precision;
- :mod:`~llmtool.training.folder`: the output folder (refuse a non-empty one unless ``overwrite`` or
  ``resume``, a lock so two runs never share it, checkpoints in ``DIR/checkpoints``, the final model
  written to a temporary folder beside it and renamed into place, and on failure nothing left
  half-written: what this run created is removed; finished checkpoints are kept for ``--resume``);
- :mod:`~llmtool.training.callbacks`: progress (one Rich bar with loss and ETA, only when stderr is a
  terminal; no tqdm) and one ``llmtool: ...`` line per evaluation; Ctrl-C and SIGTERM (the run stops
  at the next step boundary, saves a checkpoint and exits 130 or 143; ``--resume`` continues from it);
- :mod:`~llmtool.training.results`: the final metrics (``metrics.json``) and what is printed;
- distributed runs (``torchrun``, ``accelerate launch``): only the main process prints and writes.

Usage, from a command module::

    with TrainingRun(output_dir, settings, console) as run:
        data = run.main_first(lambda: build_datasets(cache_dir=run.cache_dir))
        model, tokenizer = ...
        result = run.train(model, tokenizer, train_ds, valid_ds, collator, compute_metrics,
                           best_metric="accuracy", record={"task": ...})
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

from llmtool.errors import LlmtoolError, Terminated, UsageError
from llmtool.io.streams import Console
from llmtool.settings import TrainSettings
from llmtool.training import interrupts
from llmtool.training.arguments import build_training_args, is_main_process, process_group, use_cpu, world_size
from llmtool.training.callbacks import (
    EpochToCollator,
    FolderGuard,
    GracefulStop,
    MetricCheck,
    Reporter,
    TimedCheckpoint,
)
from llmtool.training.defaults import SAVE_SECONDS
from llmtool.training.folder import CURVES_FILE, METRICS_FILE, SETTINGS_FILE, OutputFolder, write_failure
from llmtool.training.results import draw_curves, final_metrics

T = TypeVar("T")


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

        PartialState(cpu=use_cpu(self.settings.device))

    def main_first(self, fn: Callable[[], T], *, then_others: bool = True) -> T:
        """Run ``fn`` on the main process, then (``then_others``) on the rest, which reuse its caches.

        A failure on the main process is raised on every process with the same message, instead
        of leaving the others waiting at a barrier.
        """
        dist = process_group() if self.distributed else None
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
        make_trainer: Callable[..., Any] | None = None,
    ) -> dict[str, Any]:
        """Train, keep the best checkpoint, write the final model atomically; return the final metrics.

        ``best_metric`` (without the ``eval_`` prefix) picks the best checkpoint unless the settings
        name another; ``derived_metrics`` adds metrics computed from the evaluated ones (perplexity);
        ``record`` is written to ``llmtool_settings.json`` together with the training settings;
        ``summary`` (the task, its labels) leads the returned metrics and ``metrics.json``;
        ``finish(model, folder)`` adds to (or replaces) what Trainer saved in the final folder (LoRA);
        ``make_trainer`` builds the Trainer from ``transformers.Trainer``'s arguments (default: Trainer).
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
        callbacks: list[Any] = []  # TrainerCallback, or duck-typed ones (see LazyCallback)
        if s.patience is not None:
            from transformers import EarlyStoppingCallback

            callbacks.append(EarlyStoppingCallback(early_stopping_patience=s.patience))
        if callable(getattr(data_collator, "set_epoch", None)):
            callbacks.append(EpochToCollator(data_collator))
        callbacks.append(TimedCheckpoint(SAVE_SECONDS))
        stopper = GracefulStop(self.console)
        if eval_dataset is not None:
            callbacks.append(MetricCheck(metric.removeprefix("eval_"), derived_metrics))
        reporter = Reporter(self.console, derived_metrics)
        trainer = (make_trainer or Trainer)(
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
            trainer.add_callback(FolderGuard(self.folder.path))  # type: ignore[arg-type]
        _drop_printer(trainer)
        started = time.monotonic()
        try:
            with stopper.installed():
                trainer.train(resume_from_checkpoint=resume_from)
        except (OSError, RuntimeError) as exc:
            raise write_failure(exc, self.folder.path) from exc
        if stopper.signum is not None:
            interrupts.raise_for(stopper.signum)
        result = {
            **(summary or {}),
            "model": str(self.folder.path),
            **final_metrics(trainer, derived_metrics, metric, time.monotonic() - started),
        }
        try:
            self._write_final(trainer, tokenizer, result, record or {}, finish)
        except (OSError, RuntimeError) as exc:
            raise write_failure(exc, self.folder.path) from exc
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
