"""Job mode for the inference commands, and ``llmtool job status`` / ``llmtool job merge``.

A command joins job mode with ``jobs=True`` on its registry entry (:mod:`llmtool.tasks.registry`):
:func:`with_job_options` then adds the job flags (``--output-dir``, ``--chunk-size``, ``--shard``,
``--executor``, ``--workers``, ``--cpus-per-worker``, ``--gpus-per-worker``) to its command line and
hands its body a :class:`llmtool.jobs.run.JobOptions` as ``job``; with ``--output-dir`` the body calls
:func:`llmtool.jobs.run.run_job` instead of writing to stdout. Without ``--output-dir`` the command
runs exactly as before. Nothing here imports torch, transformers or Ray.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from llmtool.cli.common import handle_errors
from llmtool.errors import UsageError
from llmtool.jobs.local import device_list
from llmtool.jobs.worker import DEFAULT_CHUNK_SIZE, EXECUTORS, JobOptions

# Flags that change how a job runs, not what it outputs: left out of the manifest's settings.
RUN_ONLY = frozenset(
    {"quiet", "verbose", "batch_size", "device", "offline", "allow_pickle", "trust_remote_code", "input_path"}
)
MODEL_FLAGS = ("model", "revision", "engine", "quantize")

JOB_FLAGS: dict[str, tuple[Any, Any]] = {
    "output_dir": (
        Annotated[
            str | None,
            typer.Option(
                "--output-dir",
                help="Run as a resumable job: write each chunk of --input (a file or a quoted glob) as a part "
                "file in DIR; rerun to resume; `llmtool job merge DIR` prints the output.",
                metavar="DIR",
                show_default=False,
            ),
        ],
        None,
    ),
    "chunk_size": (
        Annotated[int, typer.Option("--chunk-size", help="Records per chunk (part file).", min=1)],
        DEFAULT_CHUNK_SIZE,
    ),
    "shard": (
        Annotated[
            str | None,
            typer.Option(
                "--shard",
                help="Run chunks c with c mod N == I (default: RANK/WORLD_SIZE, SLURM_ARRAY_TASK_ID/"
                "SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX/JOB_COMPLETIONS when set, else all).",
                metavar="I/N",
                envvar="LLMTOOL_SHARD",
                show_default=False,
            ),
        ],
        None,
    ),
    "executor": (
        Annotated[
            str,
            typer.Option(
                "--executor",
                help="local: this process runs its shard; ray: a Ray actor pool runs every unfinished chunk "
                "(pip install 'llmtool[ray]'; RAY_ADDRESS to join a cluster).",
                metavar="|".join(EXECUTORS),
            ),
        ],
        "local",
    ),
    "workers": (
        Annotated[
            int | None,
            typer.Option(
                "--workers",
                help="Worker processes: local, this machine's (each runs a part of its shard; default 1, or one "
                "per device of --device cuda:0,1); ray, actors, each loading the model once (default 2).",
                min=1,
                show_default=False,
            ),
        ],
        None,
    ),
    "cpus_per_worker": (
        Annotated[float, typer.Option("--cpus-per-worker", help="CPUs Ray reserves per actor.", min=0)],
        1.0,
    ),
    "gpus_per_worker": (
        Annotated[float, typer.Option("--gpus-per-worker", help="GPUs Ray reserves per actor.", min=0)],
        0.0,
    ),
}


def _plain(value: Any) -> Any:
    """A flag's value as JSON keeps it (str subclasses as str, tuples as lists)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def with_job_options(func: Callable[..., Any], command: str) -> Callable[..., Any]:
    """``func`` (a command body taking ``job: JobOptions``) with the job flags on its command line."""
    signature = inspect.signature(func, eval_str=True)
    arguments = [
        name
        for name, p in signature.parameters.items()
        if any(isinstance(m, typer.models.ArgumentInfo) for m in getattr(p.annotation, "__metadata__", ()))
    ]
    kept = [p for name, p in signature.parameters.items() if name != "job"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, (annotation, default) in JOB_FLAGS.items()
    ]

    @handle_errors
    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name) for name in JOB_FLAGS}
        if flags["output_dir"] is None:
            if device_list(kwargs.get("device")):
                raise UsageError("a device list (--device cuda:0,1) goes with --output-dir: one worker per device")
            given = [f"--{n.replace('_', '-')}" for n, (_, d) in JOB_FLAGS.items() if flags[n] != d and n != "shard"]
            if given:
                raise UsageError(f"{given[0]} goes with --output-dir DIR (a job)")
            return func(**kwargs)
        texts = [n for n in arguments if kwargs.get(n) is not None]
        if texts:
            raise UsageError("--output-dir reads --input FILE or a glob, not TEXT arguments or stdin")
        settings = {k: _plain(v) for k, v in kwargs.items() if k not in RUN_ONLY and k not in MODEL_FLAGS}
        model = {k: (str(kwargs[k]) if kwargs.get(k) is not None else None) for k in MODEL_FLAGS}
        job = JobOptions(
            **flags,
            command=command,
            settings=settings,
            model=model,
            input=kwargs.get("input_path"),
            device=kwargs.get("device"),
        )
        return func(**kwargs, job=job)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])  # type: ignore[attr-defined]
    hints = typing.get_type_hints(func, include_extras=True)
    hints.pop("job", None)
    hints.pop("return", None)
    wrapper.__annotations__ = {**hints, **{n: a for n, (a, _) in JOB_FLAGS.items()}, "return": None}
    return wrapper


# ---------------------------------------------------------------------------- llmtool job status | merge

job_app = typer.Typer(
    help="Inspect and merge the output directories of jobs (--output-dir); see docs/large-jobs.md.",
    no_args_is_help=True,
)
DirArg = Annotated[Path, typer.Argument(help="The job's --output-dir.", metavar="DIR", show_default=False)]


@job_app.command("status")
@handle_errors
def status_command(
    folder: DirArg,
    json_flag: Annotated[bool, typer.Option("--json", help="One JSON object instead of lines for people.")] = False,
) -> None:
    """Chunks done, failed and missing (exit 0 either way; "complete" says whether merge can run).

    Example: llmtool job status ./out --json
    """
    from llmtool.jobs.status import job_status, status_lines

    state = job_status(folder)
    if json_flag:
        sys.stdout.write(json.dumps(state, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("".join(line + "\n" for line in status_lines(state)))


@job_app.command("merge")
@handle_errors
def merge_command(
    folder: DirArg,
    parquet: Annotated[
        str | None,
        typer.Option(
            "--parquet",
            help="Write the records to FILE.parquet instead of stdout (jsonl jobs; pip install 'llmtool[parquet]').",
            metavar="FILE",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print the job's output: the parts in order, exactly as one plain run prints it.

    Refused (exit 1) until every chunk has its part: see `llmtool job status DIR`.

    Example: llmtool job merge ./out > predictions.jsonl
    """
    from llmtool.jobs.status import merge, merge_parquet

    if parquet is not None:
        merge_parquet(folder, Path(parquet))
        return
    merge(folder, sys.stdout.buffer)
