"""Write a run's results: ``results.json`` (everything) and ``results.md`` (tables for people)."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.context import Check, RowResult

CHANGES = Path(__file__).resolve().parent / "changes.md"  # hand-written: fixes made, before/after


def machine_info(device: str) -> dict[str, Any]:
    """What the numbers depend on: hardware, load, versions."""
    import tokenizers
    import torch
    import transformers

    import llmtool

    info: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "llmtool": llmtool.__version__,
        "git": _git_revision(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
    }
    return info


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


# ---------------------------------------------------------------------------- writing


# What must match for rows of two runs to share one page.
COMPARABLE = ("cpu", "cpu_count", "cpus_usable", "device", "gpu", "torch_threads", "python", "torch", "transformers")


def write(
    results_dir: Path,
    info: dict[str, Any],
    rows: list[RowResult],
    mode: str,
    previous: tuple[dict[str, Any], list[RowResult]] | None = None,
) -> tuple[Path, Path]:
    """Write the run's rows; with ``previous`` (``--update``), merge them into that earlier run's
    page: its header stays, the new rows replace theirs and carry their own date and revision."""
    results_dir.mkdir(parents=True, exist_ok=True)
    info = {**info, "load_average_end": list(os.getloadavg()), "mode": mode}
    if previous is not None:
        stamp = {k: info[k] for k in ("date", "git", "command")}
        fresh = {r.id: dataclasses.replace(r, run=stamp) for r in rows}
        old_info, old_rows = previous
        merged = {**{r.id: r for r in old_rows}, **fresh}
        info, rows = old_info, sorted(merged.values(), key=lambda r: int(r.id))
    data = {"machine": info, "rows": [r.to_json() for r in rows]}
    json_path = results_dir / "results.json"
    md_path = results_dir / "results.md"
    json_path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    md_path.write_text(markdown(info, rows), encoding="utf-8")
    return md_path, json_path


def load(results_dir: Path) -> tuple[dict[str, Any], list[RowResult]]:
    """The machine info and rows of an earlier run's results.json."""
    data = json.loads((results_dir / "results.json").read_text(encoding="utf-8"))
    rows = [RowResult(**{**r, "checks": [Check(**c) for c in r["checks"]]}) for r in data["rows"]]
    return data["machine"], rows


def incomparable(old: dict[str, Any], new: dict[str, Any], mode: str) -> str | None:
    """Why rows of these two runs cannot share a page, or None."""
    if old.get("mode") != mode:
        return f"the page is a {old.get('mode')} run, this is a {mode} run"
    for key in COMPARABLE:
        if old.get(key) != new.get(key):
            return f"{key} differs: {old.get(key)!r} then, {new.get(key)!r} now"
    return None


def render(results_dir: Path) -> Path:
    """Rewrite results.md from results.json and the current changes.md, measuring nothing (for
    edits to the hand-written part after a long run)."""
    info, rows = load(results_dir)
    md_path = results_dir / "results.md"
    md_path.write_text(markdown(info, rows), encoding="utf-8")
    return md_path


def markdown(info: dict[str, Any], rows: list[RowResult]) -> str:
    out = ["# llmtool benchmarks", ""]
    out.append(
        f"Generated by `{info['command']}` ({info['mode']} mode) on {info['date']}. Each row runs llmtool "
        "and the plain Transformers baseline in the same run, alternating, after a warm-up; medians "
        "with their spread (min-max for fewer than 4 runs, else the interquartile range). Timings never "
        "fail a build. Regenerate with `python -m bench`."
    )
    out += ["", "| | |", "|---|---|"]
    gpu = info["gpu"] or "no GPU"
    out.append(
        f"| machine | {info['cpu']}, {info['cpu_count']} CPUs ({info['cpus_usable']} usable), "
        f"{info['memory_gib']} GiB RAM, {gpu} |"
    )
    out.append(f"| device | {info['device']}, {info['torch_threads']} torch threads |")
    start, end = info["load_average_start"], info["load_average_end"]
    out.append(
        f"| load average (1, 5, 15 min) | start {_load(start)}; end {_load(end)} "
        "(other jobs shared the machine when these exceed the CPU count) |"
    )
    out.append(
        f"| versions | Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}, "
        f"tokenizers {info['tokenizers']}, llmtool {info['llmtool']} (git {info['git']}) |"
    )
    out.append(f"| platform | {info['platform']} |")
    later = [r for r in rows if r.run]
    if later:
        when = "; ".join(f"row {r.id} on {r.run['date']} (git {r.run['git']})" for r in later if r.run)
        out.append(f"| re-measured later (`--update`) | {when} |")
    out += ["", "## Summary", "", "| row | measure | value | goal | met |", "|---|---|---|---|---|"]
    for r in rows:
        if r.skipped:
            out.append(f"| {r.id}. {r.title} | skipped: {r.skipped} | | | |")
        for c in r.checks:
            out.append(f"| {r.id}. {r.title} | {c.what} | {_value(c.value, c.goal)} | {c.goal} | {_met(c.met)} |")
        if not r.checks and not r.skipped:
            out.append(f"| {r.id}. {r.title} | see the table below | | | |")
    for r in rows:
        out += ["", f"## {r.id}. {r.title}", "", f"Goal: {r.goal}.", ""]
        if r.skipped:
            out += [f"Skipped: {r.skipped}.", ""]
        if r.variants:
            out += _variant_table(r.variants)
        if r.table:
            out += ["", *_dict_table(r.table)]
        if r.notes:
            out += ["", *[f"- {n}" for n in r.notes]]
        load = f"; load average at its start {_load(r.load_average)}" if r.load_average else ""
        again = f"; re-measured on {r.run['date']} (git {r.run['git']}) by `{r.run['command']}`" if r.run else ""
        out += ["", f"_Row time: {r.seconds:.0f} s{load}{again}._"]
    if CHANGES.is_file():
        out += ["", CHANGES.read_text(encoding="utf-8").rstrip()]
    return "\n".join(out) + "\n"


def _load(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _value(value: float | None, goal: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f} s" if goal.endswith(" s") else f"{value:.2f}"


def _met(met: bool | None) -> str:
    return "n/a" if met is None else "yes" if met else "**no**"


def _variant_table(variants: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | wall s (median) | spread | CPU s | peak RSS MB | rate | command |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in variants:
        wall = v["wall_s"]
        spread = f"{wall['min']:.3g}-{wall['max']:.3g}" if wall["n"] < 4 else f"IQR {wall['q1']:.3g}-{wall['q3']:.3g}"
        cpu = f"{v['cpu_s']['median']:.2f}" if "cpu_s" in v else ""
        rss = f"{v['peak_rss_mb']['median']:.0f}" if "peak_rss_mb" in v else ""
        rate = f"{v['rate_per_s']:.2f} {v['unit']}/s" if "rate_per_s" in v else ""
        runs = f" (n={wall['n']})"
        lines.append(
            f"| {v['name']} | {wall['median']:.3f}{runs} | {spread} | {cpu} | {rss} | {rate} | `{v['command']}` |"
        )
    return lines


def _dict_table(rows: list[dict[str, Any]]) -> list[str]:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join("" if row.get(k) is None else str(row.get(k)) for k in keys) + " |")
    return lines
