"""The training plan: what a run does when its flags leave it open, and what to warn about first.

``pretrain`` and ``finetune`` leave ``--epochs``, ``--lr``, ``--batch-size`` and
``--warmup-ratio`` unset by default; once the examples are built (their number is known), each
command calls :func:`make_plan` with its own rules (:class:`Rules`), which fills in what the user
did not give and returns the completed settings and a :class:`Plan`. The plan is printed as one
``llmtool: plan: ...`` line on stderr before training starts (and by ``--dry-run``), followed by
one warning line per thing that will probably go wrong, each saying what to change.

Evaluation and checkpoints (:func:`eval_every`) run at each epoch's end when epochs are long
enough, else every few epochs, so that a corpus of 20 examples (one step per epoch) does not save
weights and optimizer state at every step.

Every choice depends only on the data and the settings (never on the clock or the machine), so a
resumed run makes the same plan as the run it continues. The thresholds are in
:mod:`llmtool.training.defaults`. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llmtool.settings import TrainSettings
from llmtool.training.defaults import EVALS_PER_RUN, FEW_EXAMPLES, FEW_VALID, MIN_EVAL_STEPS, SHORT_PLAN_STEPS

S = TypeVar("S", bound=TrainSettings)


@dataclass(frozen=True)
class Rules:
    """A command's rules for what it chooses: the defaults for its model and data."""

    lr: float  # the peak learning rate when --lr is not given
    batch_size: int  # examples per device per step when --batch-size is not given (fewer for tiny data)
    epochs: float  # passes over the data, when neither --epochs nor --max-steps is given ...
    min_steps: int  # ... but at least this many optimizer steps ...
    max_steps: int  # ... and at most this many (the plan then covers less than `epochs`)
    warmup_ratio: float  # share of the steps warming the rate up, when --warmup-ratio is not given
    from_scratch: bool = False  # new weights: warn when the plan is too short to learn
    lr_from: str = ""  # where ``lr`` comes from, said in the plan line when --lr is not given


@dataclass
class Plan:
    """What the run will do; ``chosen`` names the settings filled in by the rules."""

    layout: str
    examples: int
    valid_examples: int
    batch_size: int
    effective_batch: int
    steps_per_epoch: int
    steps: int
    epochs: float
    lr: float
    warmup_ratio: float
    eval_every: int
    chosen: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lr_from: str = ""  # why this lr, when the plan chose it

    def line(self) -> str:
        """The plan in one line, for stderr."""
        given = "" if not self.chosen else f" (chosen: {', '.join(self.chosen)})"
        why = f" ({self.lr_from})" if self.lr_from else ""
        valid = f", {self.valid_examples} for validation" if self.valid_examples else ""
        cadence = "evaluate and checkpoint" if self.valid_examples else "checkpoint"
        return (
            f"plan: {self.layout}, {self.examples} training examples{valid}; batch {self.effective_batch}, "
            f"{self.steps} steps = {self.epochs:g} epochs of {self.steps_per_epoch}; lr {self.lr:g}{why}, "
            f"warm-up {self.warmup_ratio:g}; {cadence} every {self.eval_every} steps{given}"
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def steps_per_epoch(examples: int, batch_size: int, grad_accum: int, processes: int) -> int:
    """Optimizer steps in one pass, as Trainer counts them (a distributed sampler pads to equal shares)."""
    per_process = math.ceil(examples / max(1, processes))
    return max(1, math.ceil(math.ceil(per_process / batch_size) / grad_accum))


def eval_every(per_epoch: int, total: int) -> int:
    """Steps between evaluations and checkpoints by default: a whole number of epochs, at least
    MIN_EVAL_STEPS steps (or one epoch, when epochs are longer) and at least a tenth of the run."""
    floor = max(MIN_EVAL_STEPS, math.ceil(total / EVALS_PER_RUN))
    return per_epoch * max(1, math.ceil(floor / per_epoch)) if per_epoch < floor else per_epoch


def make_plan(
    settings: S, rules: Rules, *, examples: int, valid_examples: int, layout: str, processes: int = 1
) -> tuple[S, Plan]:
    """The settings with every open choice filled in by ``rules``, and the plan they make."""
    chosen = []
    batch = settings.batch_size
    if batch is None:
        batch = max(1, min(rules.batch_size, examples))
        chosen.append("batch")
    per_epoch = steps_per_epoch(examples, batch, settings.grad_accum, processes)
    epochs, max_steps = settings.epochs, settings.max_steps
    if max_steps is not None:
        total = max_steps
    elif epochs is not None:
        total = math.ceil(per_epoch * epochs)
    else:
        total = min(rules.max_steps, max(rules.min_steps, math.ceil(per_epoch * rules.epochs)))
        max_steps = total  # a number of steps, not epochs: the plan says exactly how long the run is
        chosen.append("steps")
    epochs = epochs if epochs is not None else round(total / per_epoch, 4)
    lr = settings.lr if settings.lr is not None else rules.lr
    warmup = settings.warmup_ratio if settings.warmup_ratio is not None else rules.warmup_ratio
    chosen += [name for name, value in (("lr", settings.lr), ("warm-up", settings.warmup_ratio)) if value is None]
    every = settings.save_steps or eval_every(per_epoch, total)
    save_steps = settings.save_steps if settings.save_steps or every == per_epoch else every  # None: each epoch
    resolved = dataclasses.replace(
        settings,
        batch_size=batch,
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        warmup_ratio=warmup,
        save_steps=save_steps,
    )
    plan = Plan(
        layout=layout,
        examples=examples,
        valid_examples=valid_examples,
        batch_size=batch,
        effective_batch=batch * settings.grad_accum * processes,
        steps_per_epoch=per_epoch,
        steps=total,
        epochs=round(total / per_epoch, 2),
        lr=lr,
        warmup_ratio=warmup,
        eval_every=min(every, total),
        chosen=chosen,
        lr_from=rules.lr_from if settings.lr is None else "",
    )
    plan.warnings = warnings(plan, rules, settings)
    return resolved, plan


def warnings(plan: Plan, rules: Rules, settings: TrainSettings) -> list[str]:
    """Things that will probably go wrong, each with what to change."""
    found = []
    if rules.from_scratch and plan.steps < SHORT_PLAN_STEPS:
        found.append(
            f"{plan.steps} optimizer steps are too few to teach a new model much (a few hundred at the "
            f"least); give --max-steps {max(rules.min_steps, SHORT_PLAN_STEPS)} or more, or leave --epochs "
            "and --max-steps out to let the plan choose"
        )
    if plan.layout.startswith("packed") and plan.examples < FEW_EXAMPLES:
        found.append(
            f"packing leaves {plan.examples} blocks: the model can memorise what sits at each position of "
            "each block instead of learning the text; pass --line-by-line for a corpus of short lines, "
            "or lower --block-size"
        )
    if 0 < plan.valid_examples < FEW_VALID:
        found.append(
            f"{plan.valid_examples} validation examples give a noisy measure to pick the best checkpoint by; "
            "raise --valid-split, pass a larger --valid FILE, or --valid-split 0 to keep the last model"
        )
    if plan.valid_examples and plan.examples < 2 * plan.valid_examples:
        found.append(
            f"validation holds {plan.valid_examples} examples and training only {plan.examples}; "
            "lower --valid-split or pass --valid FILE"
        )
    return found
