"""``TrainingArguments`` from llmtool's settings, and the machine they run on: processes, device, precision.

Distributed runs (``torchrun``, ``accelerate launch``) set ``WORLD_SIZE`` and ``RANK`` before Python
starts; only the main process prints and writes.
"""

from __future__ import annotations

import os
from typing import Any

from llmtool.errors import UsageError
from llmtool.settings import TrainSettings
from llmtool.training.defaults import LOWER_IS_BETTER


def world_size() -> int:
    """Processes in this run, as set by torchrun / accelerate launch (1 when run plainly)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    """Only the main process prints and writes; the launchers set RANK before Python starts."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def process_group() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def use_cpu(device: str) -> bool:
    """Train on the CPU when asked, or when there is no accelerator. Transformers must be told: left to
    itself under torchrun on a CPU-only machine, it trains one independent copy per process, not DDP."""
    if device == "cpu":
        return True
    if device == "cuda" or cuda_available():
        return False
    import torch

    mps = getattr(torch.backends, "mps", None)
    return not (mps is not None and mps.is_available())


def resolve_precision(precision: str, device: str) -> str:
    """fp32, bf16 or fp16: auto picks bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    if precision != "auto":
        return precision
    if device == "cpu" or not cuda_available():
        return "fp32"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def trainer_metric(metric: str) -> str:
    """The evaluated metric Trainer compares checkpoints by: perplexity is exp(loss), which orders them alike
    and is computed only after Trainer has compared them."""
    metric = metric.removeprefix("eval_")
    return "loss" if metric == "perplexity" else metric


def build_training_args(s: TrainSettings, checkpoint_dir: str, *, has_eval: bool, metric: str) -> Any:
    """``TrainingArguments`` from the settings: evaluate and checkpoint together, keep the best."""
    from transformers import TrainingArguments

    if s.device == "cuda" and not cuda_available():
        raise UsageError("--device cuda: no CUDA GPU is available here (try --device cpu)")
    precision = resolve_precision(s.precision, s.device)
    if precision == "fp16" and (s.device == "cpu" or not cuda_available()):
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
        use_cpu=use_cpu(s.device),
        gradient_checkpointing=s.gradient_checkpointing,
        eval_strategy=strategy if has_eval else "no",
        save_strategy=strategy,
        eval_steps=s.save_steps,
        save_steps=s.save_steps or 500,
        save_total_limit=s.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model=trainer_metric(metric) if has_eval else None,
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
