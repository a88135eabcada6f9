"""What ``llmtool env`` reports: versions, devices, threads, caches and the settings in force.

Meant to be pasted into a bug report, so it must answer in a few seconds and never print a secret:
package versions come from their metadata (no import), only torch is imported (to see the
devices), folder sizes are measured within a time budget, credentials in proxy and endpoint URLs
are masked, and the Hugging Face token is reported as set or not set, never shown.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

SIZE_BUDGET = 2.0  # seconds spent measuring each cache folder before reporting "more than"
PACKAGES = (
    "llmtool",
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "datasets",
    "safetensors",
    "huggingface-hub",
    "ctranslate2",
    "peft",
    "matplotlib",
    "numpy",
    "typer",
    "rich",
)
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM")
DEVICE_VARIABLES = ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF")
_TRUE = {"1", "ON", "YES", "TRUE"}  # what huggingface_hub counts as true in its variables
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?[^/@\s]+@")


# --------------------------------------------------------------------------- collecting


def collect(size_budget: float = SIZE_BUDGET) -> dict[str, dict[str, Any]]:
    """Everything ``llmtool env`` shows, as JSON-serialisable sections of ``name: value``."""
    hf_home, hub_cache = hf_folders()
    engine_cache = llmtool_cache()
    return {
        "llmtool": {
            "version": _version("llmtool"),
            "python": f"{platform.python_version()} ({platform.python_implementation()})",
            "executable": sys.executable,
            "platform": platform.platform(),
            "machine": platform.machine(),
        },
        "packages": {name: _version(name) for name in PACKAGES if name != "llmtool"},
        "devices": {**_torch_devices(), **{name: os.environ.get(name) for name in DEVICE_VARIABLES}},
        "threads": {
            "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "torch_threads": _torch_threads(),
            **{name: os.environ.get(name) for name in THREAD_VARIABLES},
        },
        "hub": {
            "home": str(hf_home),
            "cache": str(hub_cache),
            "cache_size": folder_size(hub_cache, size_budget),
            "endpoint": mask_credentials(os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")),
            "offline": offline(),
            "token": _token_state(hf_home),
        },
        "proxies": _proxies(),
        "engine_cache": {"folder": str(engine_cache), "size": folder_size(engine_cache, size_budget)},
        "settings": {
            name: mask_credentials(value) for name, value in sorted(os.environ.items()) if name.startswith("LLMTOOL_")
        },
    }


def hf_folders(environ: dict[str, str] | None = None) -> tuple[Path, Path]:
    """HF_HOME and the hub cache, resolved from the variables as huggingface_hub does."""
    env = os.environ if environ is None else environ
    default_home = os.path.join(
        env.get("XDG_CACHE_HOME", os.path.join(os.path.expanduser("~"), ".cache")), "huggingface"
    )
    home = _expand(env.get("HF_HOME", default_home))
    cache = _expand(env.get("HF_HUB_CACHE", env.get("HUGGINGFACE_HUB_CACHE", os.path.join(home, "hub"))))
    return Path(home), Path(cache)


def llmtool_cache(environ: dict[str, str] | None = None) -> Path:
    """Where llmtool keeps converted engine models: $LLMTOOL_CACHE, else $HF_HOME/llmtool."""
    env = os.environ if environ is None else environ
    if env.get("LLMTOOL_CACHE", "").strip():
        return Path(_expand(env["LLMTOOL_CACHE"]))
    return hf_folders(dict(env))[0] / "llmtool"


def offline(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    value = env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in _TRUE


def mask_credentials(value: str) -> str:
    """``http://user:pass@host:3128`` -> ``http://***@host:3128``; each item of a comma list alike."""
    return ",".join(_USERINFO.sub(lambda m: (m.group("scheme") or "") + "***@", item) for item in value.split(","))


def folder_size(folder: str | os.PathLike[str], budget: float = SIZE_BUDGET) -> dict[str, Any] | None:
    """``{"bytes", "files", "complete"}`` for the files under ``folder``; None when it does not exist.

    Symbolic links are not followed (the hub cache links its snapshots to blobs, which count once).
    The walk stops after ``budget`` seconds with ``complete: False``: a lower bound.
    """
    root = Path(folder)
    if not root.is_dir():
        return None
    deadline = time.monotonic() + budget
    total = files = 0
    stack = [str(root)]
    while stack:
        if time.monotonic() > deadline:
            return {"bytes": total, "files": files, "complete": False}
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                            files += 1
                    except OSError:  # vanished or unreadable while walking: skip it
                        continue
        except OSError:
            continue
    return {"bytes": total, "files": files, "complete": True}


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def _torch_devices() -> dict[str, Any]:
    """CUDA and MPS as torch sees them; torch is the one package imported here, since only it can tell."""
    try:
        import torch
    except Exception as exc:  # not installed, or a broken install: report it rather than fail
        return {"torch": f"cannot import torch: {type(exc).__name__}: {exc}"}
    cuda = bool(torch.cuda.is_available())
    gpus = []
    if cuda:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_bytes": int(props.total_memory),
                    "capability": f"{props.major}.{props.minor}",
                    "bf16": props.major >= 8,  # Ampere and later
                }
            )
    mps = getattr(torch.backends, "mps", None)
    return {
        "cuda": cuda,
        "cuda_version": torch.version.cuda,
        "cuda_devices": len(gpus),
        "gpus": gpus,
        "cpu_bf16": _cpu_bf16(torch),
        "mps": bool(mps is not None and mps.is_available()),
    }


def _cpu_bf16(torch: Any) -> bool | None:
    """Whether oneDNN has fast bfloat16 kernels on this CPU (AVX512-BF16 or AMX); None if torch cannot say."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")  # imported (or not) by _torch_devices; never imported twice over
    return int(torch.get_num_threads()) if torch is not None else None


def _token_state(hf_home: Path) -> str:
    if os.environ.get("HF_TOKEN", "").strip():
        return "set (HF_TOKEN)"
    token_file = Path(_expand(os.environ.get("HF_TOKEN_PATH", str(hf_home / "token"))))
    return f"set ({token_file})" if token_file.is_file() else "not set"


def _proxies() -> dict[str, str]:
    found = {}
    for name in PROXY_VARIABLES:
        for variant in (name, name.lower()):
            value = os.environ.get(variant)
            if value is not None:
                found[variant] = mask_credentials(value)
    return found


# --------------------------------------------------------------------------- rendering


HEADINGS = {
    "llmtool": "llmtool",
    "packages": "Packages",
    "devices": "Devices",
    "threads": "Threads",
    "hub": "Hugging Face Hub",
    "proxies": "Proxies",
    "engine_cache": "Engine cache",
    "settings": "LLMTOOL_* variables",
}


def render(info: dict[str, dict[str, Any]]) -> str:
    """Aligned ``key  value`` lines under a heading per section, for people (``--json`` is for programs)."""
    blocks = []
    for section, values in info.items():
        texts = [(key, _text(section, key, value)) for key, value in values.items()]
        rows = [(key, text) for key, text in texts if text is not None]
        if section == "devices":
            rows = _device_rows(values, rows)
        lines = [HEADINGS.get(section, section)]
        if not rows:
            lines.append("  (none)")
        width = max((len(key) for key, _ in rows), default=0)
        lines += [f"  {key.ljust(width)}  {text}" for key, text in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _text(section: str, key: str, value: Any) -> str | None:
    if section == "packages":
        return value if value is not None else "not installed"
    if value is None:
        if key in ("size", "cache_size"):
            return "no such folder"
        if key == "cuda_version":
            return "none (a CPU-only torch)"
        return "not set" if key.isupper() else "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict) and "bytes" in value:
        size = human_size(int(value["bytes"]))
        return (
            f"{size} in {value['files']} file{'' if value['files'] == 1 else 's'}"
            if value.get("complete")
            else f"more than {size} (stopped counting)"
        )
    return str(value)


def _device_rows(values: dict[str, Any], rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The GPUs one line each, in place of their JSON list."""
    out = [(key, text) for key, text in rows if key != "gpus"]
    for gpu in values.get("gpus") or []:
        bf16 = "bf16" if gpu["bf16"] else "no bf16"
        out.append(
            (
                f"cuda:{gpu['index']}",
                f"{gpu['name']}, {human_size(gpu['memory_bytes'])}, sm {gpu['capability']}, {bf16}",
            )
        )
    return out


def human_size(count: int) -> str:
    """Bytes in binary units: ``1.5 GiB``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"  # not reached
