"""The CTranslate2 conversion cache: where entries live, their keys, their manifests, locks, listing and removal.

A model folder is converted once (:mod:`llmtool.engines.ct2.convert`) into an entry of the cache
(``$LLMTOOL_CACHE``, else ``$HF_HOME/llmtool``; entries under ``ct2/``). An entry holds:

* ``model/``: what CTranslate2 converted (``model.bin``, ``config.json``, ``vocabulary.json``). For
  BERT and RoBERTa that is the encoder (and BERT's pooler); for GPT-2 and Llama the whole
  decoder with its LM head;
* ``heads.safetensors``: the heads CTranslate2 leaves out, as numpy arrays (BERT's masked-LM,
  next-sentence and classifier heads, RoBERTa's LM and classifier heads; a token classifier's or a
  question-answering model's per-token Linear as ``token.weight``/``token.bias``, which one
  ``model_meta.json``'s ``token_head`` says);
* ``tokenizer.json`` + ``tokenizer_meta.json`` (:mod:`llmtool.engines.ct2.tokenizer`), ``model_meta.json``;
* ``entry.json``, the manifest, written last: every file's size, sha256 and stat.

The entry's name is a sha256 of the source's content (config, tokenizer files, weights), the
quantization, the CTranslate2 version and :data:`FORMAT`, so a changed model gets a new entry.
Hashing big weights on every run would be slow, so a memo of (path, size, mtime, inode, ctime) ->
sha256 is kept in the cache root; a file whose stat changed is hashed again.

A conversion runs under a per-key file lock (:func:`entry_lock`) in a temporary folder that is
renamed into place when complete, so a killed conversion leaves no entry, only a temporary folder
that a later run removes (:func:`clean_stale`). Entries are checked against their manifest when
used (:func:`verify_entry`); a damaged one is removed and converted again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.errors import ModelError, UsageError, one_line

if TYPE_CHECKING:
    from filelock import FileLock

FORMAT = 1  # bump when the layout or the content of entries changes: old entries get new keys
ENTRY_FILE = "entry.json"
MODEL_META = "model_meta.json"
HEADS_FILE = "heads.safetensors"
CT2_DIR = "model"
MEMO_FILE = "ct2-hash-memo.json"
MEMO_FORMAT = "llmtool-hash-memo/1"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
DEFAULT_CONVERT_MAX = 2_000_000_000
QUANTIZATIONS = ("float32", "float16", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16")
# Files whose content decides what a conversion produces (besides the weights).
SOURCE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "source.spm",  # Marian (OPUS-MT): sentencepiece models of the source and target languages
    "target.spm",
)
# Where an entry keeps a tokenizer that has no ``tokenizers`` backend (Marian's sentencepiece pair): its
# files as the model folder has them, loaded with Transformers at run time (no torch).
SOURCE_TOKENIZER_DIR = "tokenizer"
_RACY_NS = 2_000_000_000  # a file changed this recently may change again within the same mtime tick
_CHUNK = 1 << 20


class CacheError(ModelError):
    """The conversion cache cannot be written (read-only, full, or not a folder)."""


# -- sizes and places --------------------------------------------------------------------------


def parse_size(text: str) -> int:
    """'2GB' -> 2_000_000_000, '500MB', '1.5GiB', '123' (bytes)."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?)(b?)\s*", text, flags=re.IGNORECASE)
    if not found or (found.group(3) and not found.group(2)):
        raise UsageError(f"{text!r} is not a size (like 2GB, 500MB, 1.5GiB or a number of bytes)")
    number, prefix, binary = float(found.group(1)), found.group(2).lower(), bool(found.group(3))
    power = " kmgt".index(prefix) if prefix else 0
    return int(number * (1024 if binary else 1000) ** power)


def default_convert_max() -> int:
    """The largest weights converted without asking: ``LLMTOOL_CONVERT_MAX``, default 2 GB."""
    value = os.environ.get("LLMTOOL_CONVERT_MAX", "").strip()
    if not value:
        return DEFAULT_CONVERT_MAX
    try:
        return parse_size(value)
    except UsageError as exc:
        raise UsageError(f"LLMTOOL_CONVERT_MAX={value!r}: not a size (like 2GB, 500MB or bytes)") from exc


def cache_root() -> Path:
    """``$LLMTOOL_CACHE``, else ``$HF_HOME/llmtool`` (HF_HOME as huggingface_hub resolves it)."""
    own = os.environ.get("LLMTOOL_CACHE", "").strip()
    if own:
        return Path(own).expanduser()
    hf_home = os.environ.get("HF_HOME", "").strip()
    if hf_home:
        return Path(hf_home).expanduser() / "llmtool"
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "llmtool"


def entries_dir() -> Path:
    """Where the entries are: ``ct2/`` under :func:`cache_root`."""
    return cache_root() / "ct2"


def source_dir(source: str | os.PathLike[str]) -> Path:
    """The model folder, resolved; a folder without config.json is refused."""
    folder = Path(source).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{source}: not a model folder (no config.json); the ctranslate2 engine converts local folders"
        )
    return folder.resolve()


def check_quantization(quantization: str | None) -> str:
    """The quantization asked for (default float32), if CTranslate2 knows it."""
    q = quantization or "float32"
    if q not in QUANTIZATIONS:
        raise UsageError(f"unknown CTranslate2 quantization {q!r} (one of: {', '.join(QUANTIZATIONS)})")
    return q


def weight_files(folder: Path) -> list[Path]:
    """The folder's safetensors files, else its pickled ``pytorch_model*.bin`` ones."""
    found = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if not found:
        found = sorted(p for p in folder.glob("pytorch_model*.bin") if p.is_file())
    return found


def weights_bytes(source: str | os.PathLike[str]) -> int:
    """Total size of the source's weight files."""
    return sum(p.stat().st_size for p in weight_files(source_dir(source)))


def _source_files(folder: Path) -> list[Path]:
    named = [folder / name for name in SOURCE_FILES if (folder / name).is_file()]
    return sorted(set(named) | set(weight_files(folder)))


def megabytes(size: int) -> str:
    """A size for messages: whole megabytes, or ``<1``."""
    return "<1" if 0 < size < 500_000 else f"{size / 1e6:,.0f}"


# -- hashing -----------------------------------------------------------------------------------


def stat_sig(st: os.stat_result) -> list[int]:
    """What tells that a file may have changed: size, mtime, inode, ctime."""
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def file_sha256(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_sha(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _is_sig(value: object) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(type(v) is int for v in value)


class _HashMemo:
    """(path, stat) -> sha256, kept in the cache root. Records that do not validate are dropped."""

    def __init__(self, root: Path) -> None:
        self.path = root / MEMO_FILE
        self.records: dict[str, dict[str, Any]] = {}
        self.dirty = False
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if not isinstance(data, dict) or data.get("format") != MEMO_FORMAT or not isinstance(data.get("files"), dict):
            return
        for name, record in data["files"].items():
            if isinstance(record, dict) and _is_sig(record.get("stat")) and _is_sha(record.get("sha256")):
                self.records[name] = {"stat": record["stat"], "sha256": record["sha256"]}

    def sha256(self, path: Path) -> str:
        before = path.stat()
        record = self.records.get(str(path))
        if record is not None and record["stat"] == stat_sig(before):
            return str(record["sha256"])
        digest = file_sha256(path)
        after = path.stat()
        if stat_sig(after) == stat_sig(before) and time.time_ns() - after.st_mtime_ns > _RACY_NS:
            self.records[str(path)] = {"stat": stat_sig(after), "sha256": digest}
            self.dirty = True
        elif self.records.pop(str(path), None) is not None:
            self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        kept = {name: rec for name, rec in self.records.items() if os.path.exists(name)}
        with contextlib.suppress(OSError):  # the memo only saves time: an unwritable cache is reported elsewhere
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"format": MEMO_FORMAT, "files": kept})
        self.dirty = False


def entry_key(source: str | os.PathLike[str], quantization: str | None = "float32") -> str:
    """The cache key of a model folder: a sha256 over what decides the conversion's result."""
    import ctranslate2

    folder = source_dir(source)
    q = check_quantization(quantization)
    memo = _HashMemo(cache_root())
    digest = hashlib.sha256()
    digest.update(f"llmtool-ct2\0format={FORMAT}\0ctranslate2={ctranslate2.__version__}\0quantization={q}\0".encode())
    for path in _source_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{memo.sha256(path)}\0".encode())
    memo.save()
    return digest.hexdigest()


# -- files -------------------------------------------------------------------------------------


def atomic_write_json(path: Path, data: object) -> None:
    """Write JSON next to ``path`` and rename it into place (readers see the old file or the new one)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, ensure_ascii=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def fsync_path(path: Path) -> None:
    """Flush a file or folder to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    """A JSON file's content (whatever JSON value it holds)."""
    return json.loads(path.read_text(encoding="utf-8"))


def all_files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


# -- entries: checking -------------------------------------------------------------------------


def _manifest(entry: Path) -> dict[str, Any]:
    """The manifest, validated; raises ValueError on anything unexpected."""
    data = read_json(entry / ENTRY_FILE)
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != entry.name:
        raise ValueError("the manifest is not one this llmtool writes")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError("the manifest lists no files")
    for name, record in files.items():
        ok = isinstance(record, dict) and _is_sha(record.get("sha256")) and _is_sig(record.get("stat"))
        if not ok or type(record.get("size")) is not int or ".." in Path(name).parts or Path(name).is_absolute():
            raise ValueError(f"the manifest's record of {name!r} is malformed")
    tokenizer: tuple[str, ...] = ("tokenizer.json", "tokenizer_meta.json")
    if f"{SOURCE_TOKENIZER_DIR}/tokenizer_config.json" in files:
        tokenizer = (f"{SOURCE_TOKENIZER_DIR}/tokenizer_config.json",)
    for needed in (f"{CT2_DIR}/model.bin", MODEL_META, *tokenizer, HEADS_FILE):
        if needed not in files:
            raise ValueError(f"the manifest does not list {needed}")
    return data


def verify_entry(entry: str | os.PathLike[str]) -> str | None:
    """None when the entry matches its manifest, else why not (a short phrase).

    Sizes are always compared; a file whose stat differs from the manifest's is hashed again."""
    where = Path(entry)
    try:
        manifest = _manifest(where)
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({one_line(str(exc))})"
    restat: dict[str, list[int]] = {}
    for name, record in manifest["files"].items():
        path = where / name
        try:
            st = path.stat()
        except OSError:
            return f"{name} is missing"
        if st.st_size != record["size"]:
            return f"{name} has {st.st_size} bytes, not {record['size']}"
        if stat_sig(st) != record["stat"]:
            try:
                digest = file_sha256(path)
            except OSError as exc:
                return f"{name} is unreadable ({exc.strerror})"
            if digest != record["sha256"]:
                return f"{name} does not match its checksum"
            restat[name] = stat_sig(path.stat())
    if restat:  # the files were touched or copied but are intact: remember their new stat
        for name, sig in restat.items():
            manifest["files"][name]["stat"] = sig
        with contextlib.suppress(OSError):
            atomic_write_json(where / ENTRY_FILE, manifest)
    return None


# -- locks and clean-up ------------------------------------------------------------------------


def entry_lock(root: Path, key: str) -> FileLock:
    """The file lock a conversion of ``key`` (or a removal of its entry) holds."""
    from filelock import FileLock

    return FileLock(str(root / f"{key}.lock"))


def cache_error(root: Path, exc: OSError) -> CacheError:
    """The error that says the cache cannot be written, and what to do."""
    reason = exc.strerror or one_line(str(exc))
    return CacheError(
        f"cannot write the CTranslate2 cache in {root}: {reason} (set LLMTOOL_CACHE to a writable folder)"
    )


def prepare_root(root: Path) -> None:
    """Create the entries' folder and check that it can be written (:class:`CacheError` if not)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise cache_error(root, exc) from exc


def discard_entry(path: Path, root: Path, key: str) -> None:
    """Remove an entry: renamed away first (readers see it or not, never half of it)."""
    trash = root / f"{TRASH_PREFIX}{key}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def clean_stale(root: Path, own_key: str | None = None) -> None:
    """Remove temporary folders of conversions that are no longer running (their lock is free)."""
    from filelock import Timeout

    try:
        names = [p for p in root.iterdir() if p.name.startswith((TMP_PREFIX, TRASH_PREFIX)) and p.is_dir()]
    except OSError:
        return
    for path in names:
        key = path.name.split("-", 2)[1] if path.name.count("-") >= 2 else ""
        if key == own_key:
            shutil.rmtree(path, ignore_errors=True)
            continue
        lock = entry_lock(root, key)
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            lock.release()


def needs_conversion(source: str | os.PathLike[str], quantization: str | None = "float32") -> bool:
    """Whether :func:`llmtool.engines.ct2.convert.ensure_entry` would have to convert (no valid entry
    for this content)."""
    entry = entries_dir() / entry_key(source, quantization)
    return not (entry.is_dir() and verify_entry(entry) is None)


# -- management --------------------------------------------------------------------------------


def _entry_dirs() -> list[Path]:
    try:
        return sorted(p for p in entries_dir().iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _disk_size(folder: Path) -> int:
    total = 0
    for path in all_files(folder):
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def list_entries() -> list[dict[str, Any]]:
    """One record per entry: key, path, source, quantization, size, created, ctranslate2 version, valid."""
    records = []
    for entry in _entry_dirs():
        try:
            manifest: dict[str, Any] = _manifest(entry)
        except (OSError, ValueError):
            manifest = {}
        reason = verify_entry(entry)
        records.append(
            {
                "key": entry.name,
                "path": str(entry),
                "source": manifest.get("source"),
                "quantization": manifest.get("quantization"),
                "size": _disk_size(entry),
                "created": manifest.get("created"),
                "ctranslate2_version": manifest.get("ctranslate2_version"),
                "valid": reason is None,
                "problem": reason,
            }
        )
    return records


def remove_entries(match: str | None = None) -> list[Path]:
    """Remove entries: all (``None``), those whose key starts with ``match``, or those converted from
    the folder ``match`` (by the source recorded, or by the folder's current content)."""
    root = entries_dir()
    entries = _entry_dirs()
    if match is None:
        chosen = entries
    else:
        wanted_source = None
        keys: set[str] = set()
        if Path(match).expanduser().is_dir():
            wanted_source = str(Path(match).expanduser().resolve())
            if (Path(match).expanduser() / "config.json").is_file():
                keys = {entry_key(match, q) for q in QUANTIZATIONS}
        chosen = []
        for entry in entries:
            source = None
            with contextlib.suppress(OSError, ValueError):
                source = read_json(entry / ENTRY_FILE).get("source")
            by_key = bool(re.fullmatch(r"[0-9a-f]{4,64}", match)) and entry.name.startswith(match)
            if by_key or entry.name in keys or (wanted_source is not None and source == wanted_source):
                chosen.append(entry)
    removed = []
    for entry in chosen:
        lock = entry_lock(root, entry.name)
        try:
            lock.acquire()
        except OSError as exc:
            raise cache_error(root, exc) from exc
        try:
            discard_entry(entry, root, entry.name)
        finally:
            lock.release()
        removed.append(entry)
    if match is None:
        clean_stale(root)
    return removed
