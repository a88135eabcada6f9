"""``manifest.json``: what a job directory holds, so that a rerun resumes it and anything else is refused.

It records the command, its settings (every flag that decides the output), the model (name, revision,
and the converted-cache key: a sha256 of its files, which changes when the model does), the engine,
the inputs (resolved paths, sizes, modification times), the chunk size and the output format.

Workers that start at once must agree on it without talking: each builds its manifest and tries to
create the file with ``os.link`` from a complete temporary file, which either creates it whole or
fails because it exists. The first writer wins; every other worker reads the file and compares. The
same job resumes; a different one is refused with one line (exit 2) and nothing in DIR is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from llmtool.errors import UsageError

MANIFEST = "manifest.json"
VERSION = 1
# The keys compared on a rerun, in the order a difference is reported.
COMPARED = ("version", "command", "inputs", "chunk_size", "format", "model", "settings")


def model_identity(model: str, revision: str | None, engine: str, quantize: str) -> dict[str, Any]:
    """The model as the manifest records it: its name, and for a local folder the converted-cache key
    (the same sha256 over its config, tokenizer and weights that names its CTranslate2 conversion)."""
    identity: dict[str, Any] = {"name": model, "revision": revision, "engine": engine, "quantize": quantize}
    folder = Path(model)
    if folder.is_dir():
        identity["name"] = str(folder.resolve())
        identity["cache_key"] = _content_key(folder, quantize)
    return identity


def _content_key(folder: Path, quantize: str) -> str | None:
    try:
        from llmtool.engines.ct2.cache import entry_key
    except ImportError:  # pragma: no cover - ctranslate2 is a dependency
        return None
    try:
        return entry_key(folder, quantize if quantize not in ("", "auto", "none") else "float32")
    except Exception:  # a quantization CTranslate2 does not know: the plain key still tells changes apart
        return entry_key(folder, "float32")


def build(
    command: str,
    settings: dict[str, Any],
    model: dict[str, Any],
    inputs: list[dict[str, object]],
    chunk_size: int,
    fmt: str,
    header: str,
) -> dict[str, Any]:
    return {
        "version": VERSION,
        "command": command,
        "settings": settings,
        "model": model,
        "inputs": inputs,
        "chunk_size": chunk_size,
        "format": fmt,
        "header": header,
    }


def read(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{folder}: not a job directory (no {MANIFEST})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a manifest llmtool wrote ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise UsageError(f"{path}: not a manifest of this llmtool (version {VERSION})")
    return data


def ensure(folder: Path, manifest: dict[str, Any]) -> bool:
    """Create ``folder``'s manifest, or check that the one there is this job's. True when this call created it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"--output-dir {folder}: not a directory") from None
    path = folder / MANIFEST
    if not path.exists():
        if any(p.name.startswith("part-") for p in folder.iterdir()):
            raise UsageError(f"--output-dir {folder}: holds parts but no {MANIFEST}; use an empty directory")
        # A name of its own per call (not per process): two threads of one process must not share it.
        fd, name = tempfile.mkstemp(prefix=f".{MANIFEST}.tmp-{socket.gethostname()}-", dir=folder)
        tmp = Path(name)
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the manifest from the job's other readers
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        try:
            os.link(tmp, path)  # atomic create-if-absent: exactly one concurrent worker wins
            return True
        except FileExistsError:
            pass  # another worker was first: compare with what it wrote
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    difference = compare(read(folder), manifest)
    if difference is not None:
        raise UsageError(f"--output-dir {folder} holds another job: {difference}; use a new directory")
    return False


def compare(there: dict[str, Any], here: dict[str, Any]) -> str | None:
    """The first difference between the job in the directory and this one, in words; None when the same."""
    for key in COMPARED:
        a, b = there.get(key), here.get(key)
        if a == b:
            continue
        if key == "command":
            return f"it is a `{a}` job, this is `{b}`"
        if key == "inputs":
            return _inputs_difference(a or [], b or [])
        if isinstance(a, dict) and isinstance(b, dict):
            for name in sorted(set(a) | set(b)):
                if a.get(name) != b.get(name):
                    return f"{key}.{name} was {a.get(name)!r}, now {b.get(name)!r}"
        return f"{key} was {a!r}, now {b!r}"
    return None


def _inputs_difference(there: list[dict[str, Any]], here: list[dict[str, Any]]) -> str:
    old = {i["path"]: i for i in there}
    new = {i["path"]: i for i in here}
    for path, entry in new.items():
        if path not in old:
            return f"input {path} is new (the job read {len(old)} file(s))"
        if entry != old[path]:
            return f"input {path} changed since the job started (size {old[path]['size']} -> {entry['size']})"
    for path in old:
        if path not in new:
            return f"input {path} is no longer among the inputs"
    return "the inputs are in another order"
