"""What a training run reports: the evaluated metrics cleaned up, perplexity, the final metrics
(``metrics.json``), the lines printed at the end, and the training curves' picture.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmtool.io.streams import Console
from llmtool.training.arguments import is_main_process


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


def final_metrics(
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


def fmt(value: float) -> str:
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
