"""Which chunks this worker runs: ``--shard I/N``, else what the launcher says, else all of them.

Worker I of N takes the chunks c with c mod N == I. Nothing is exchanged between workers (no process
group, no barrier, no gather): each one only writes its own parts, so uneven shards cannot hang a job
and a restarted worker simply finds its finished parts and goes on.

The launchers' variables, first found wins:

* torchrun (and ``accelerate launch``, ``deepspeed``): ``RANK`` / ``WORLD_SIZE``;
* Slurm array jobs: ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (the ID counted from
  ``SLURM_ARRAY_TASK_MIN``, so ``--array=1-8`` works as well as ``0-7``);
* Kubernetes indexed jobs: ``JOB_COMPLETION_INDEX``, with the number of completions in
  ``JOB_COMPLETIONS`` (Kubernetes does not set that one: put it in the pod's ``env``), or pass
  ``--shard $(JOB_COMPLETION_INDEX)/N`` in the container's ``args``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from llmtool.errors import UsageError


@dataclass(frozen=True, slots=True)
class Shard:
    """Worker ``index`` of ``count``; ``source`` says where that came from (for messages)."""

    index: int = 0
    count: int = 1
    source: str = "default"

    def owns(self, chunk: int) -> bool:
        return chunk % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str, source: str = "--shard") -> Shard:
    """``I/N`` with 0 <= I < N."""
    index, slash, count = text.strip().partition("/")
    if not slash or not index.strip().isdigit() or not count.strip().isdigit():
        raise UsageError(f"{source} {text!r}: expected I/N, e.g. 0/4 (worker 0 of 4)")
    i, n = int(index), int(count)
    if n < 1 or i >= n:
        raise UsageError(f"{source} {text!r}: I must be in 0..N-1 and N at least 1")
    return Shard(i, n, source)


def _number(env: Mapping[str, str], name: str) -> int:
    value = env[name].strip()
    if not value.lstrip("-").isdigit():
        raise UsageError(f"{name}={env[name]!r} is not a number")
    return int(value)


def from_environment(env: Mapping[str, str] | None = None) -> Shard:
    """The shard a launcher gives this process, or 0/1 (the whole job) when none does."""
    env = os.environ if env is None else env
    if env.get("WORLD_SIZE") and env.get("RANK"):
        return _checked(_number(env, "RANK"), _number(env, "WORLD_SIZE"), "RANK/WORLD_SIZE")
    if env.get("SLURM_ARRAY_TASK_ID") and env.get("SLURM_ARRAY_TASK_COUNT"):
        first = _number(env, "SLURM_ARRAY_TASK_MIN") if env.get("SLURM_ARRAY_TASK_MIN") else 0
        task = _number(env, "SLURM_ARRAY_TASK_ID") - first
        step = _number(env, "SLURM_ARRAY_TASK_STEP") if env.get("SLURM_ARRAY_TASK_STEP") else 1
        return _checked(task // max(step, 1), _number(env, "SLURM_ARRAY_TASK_COUNT"), "SLURM_ARRAY_TASK_ID")
    if env.get("JOB_COMPLETION_INDEX"):
        if not env.get("JOB_COMPLETIONS"):
            raise UsageError(
                "JOB_COMPLETION_INDEX is set but not the number of completions: set JOB_COMPLETIONS in the "
                "pod's env, or pass --shard $(JOB_COMPLETION_INDEX)/N"
            )
        return _checked(_number(env, "JOB_COMPLETION_INDEX"), _number(env, "JOB_COMPLETIONS"), "JOB_COMPLETION_INDEX")
    return Shard()


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"{source}: worker {index} of {count} is out of range")
    return Shard(index, count, source)


def select(flag: str | None, env: Mapping[str, str] | None = None) -> Shard:
    """``--shard`` when given (``auto`` or none: the launcher's variables)."""
    if flag is None or flag.strip().lower() == "auto":
        return from_environment(env)
    return parse_shard(flag)
