"""The CTranslate2 engine: a conversion cache, and torch-free inference over its entries.

A model folder is converted once, with CTranslate2's own ``TransformersConverter``, into an entry
of the cache (``$LLMTOOL_CACHE``, else ``$HF_HOME/llmtool``; entries under ``ct2/``). An entry holds:

* ``model/``: what CTranslate2 converted (``model.bin``, ``config.json``, ``vocabulary.json``). For
  BERT and RoBERTa that is the encoder (and BERT's pooler); for GPT-2 and Llama the whole
  decoder with its LM head;
* ``heads.safetensors``: the heads CTranslate2 leaves out, as numpy arrays (BERT's masked-LM,
  next-sentence and classifier heads, RoBERTa's LM and classifier heads);
* ``tokenizer.json`` + ``tokenizer_meta.json`` (:mod:`llmtool.engines.ct2_tokenizer`), ``model_meta.json``;
* ``entry.json``, the manifest, written last: every file's size, sha256 and stat.

The entry's name is a sha256 of the source's content (config, tokenizer files, weights), the
quantization, the CTranslate2 version and :data:`FORMAT`, so a changed model gets a new entry.
Hashing big weights on every run would be slow, so a memo of (path, size, mtime, inode, ctime) ->
sha256 is kept in the cache root; a file whose stat changed is hashed again.

A conversion runs under a per-key file lock in a temporary folder that is renamed into place
when complete, so a killed conversion leaves no entry, only a temporary folder that a later run
removes. Entries are checked against their manifest when used; a damaged one is removed and
converted again.

At run time (:func:`load_encoder`, :func:`load_decoder`) only ctranslate2, numpy, tokenizers and
safetensors' numpy API are imported; torch and transformers are only imported to convert.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.errors import ModelError, UsageError, one_line
from llmtool.io.console import say

if TYPE_CHECKING:
    import numpy as np

    from llmtool.engines.ct2_tokenizer import FastTokenizer

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
TASKS = ("fill-mask", "generate", "score-clm", "score-mlm", "classify", "next-sentence")
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
)
_RACY_NS = 2_000_000_000  # a file changed this recently may change again within the same mtime tick
_CHUNK = 1 << 20

# What llmtool runs with this engine: model_type -> architecture -> tasks.
_ARCHITECTURES: dict[str, dict[str, tuple[str, ...]]] = {
    "bert": {
        "BertForMaskedLM": ("fill-mask", "score-mlm"),
        "BertForPreTraining": ("fill-mask", "score-mlm", "next-sentence"),
        "BertForNextSentencePrediction": ("next-sentence",),
        "BertForSequenceClassification": ("classify",),
        "BertModel": (),
    },
    "roberta": {
        "RobertaForMaskedLM": ("fill-mask", "score-mlm"),
        "RobertaForSequenceClassification": ("classify",),
        "RobertaModel": (),
    },
    "gpt2": {"GPT2LMHeadModel": ("generate", "score-clm")},
    "llama": {"LlamaForCausalLM": ("generate", "score-clm")},
}
_ENCODER_TYPES = ("bert", "roberta")
# Activations CTranslate2's converter maps (and :func:`_activation` computes for the heads).
_ACTIVATIONS = (
    "gelu",
    "gelu_fast",
    "gelu_new",
    "gelu_python",
    "gelu_pytorch_tanh",
    "quick_gelu",
    "relu",
    "silu",
    "swish",
)
_ROPE_TYPES = (None, "default", "linear", "llama3")


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
    return cache_root() / "ct2"


def _source_dir(source: str | os.PathLike[str]) -> Path:
    folder = Path(source).expanduser()
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"{source}: not a model folder (no config.json); the ctranslate2 engine converts local folders"
        )
    return folder.resolve()


def _check_quantization(quantization: str | None) -> str:
    q = quantization or "float32"
    if q not in QUANTIZATIONS:
        raise UsageError(f"unknown CTranslate2 quantization {q!r} (one of: {', '.join(QUANTIZATIONS)})")
    return q


def _weight_files(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if not found:
        found = sorted(p for p in folder.glob("pytorch_model*.bin") if p.is_file())
    return found


def weights_bytes(source: str | os.PathLike[str]) -> int:
    """Total size of the source's weight files."""
    return sum(p.stat().st_size for p in _weight_files(_source_dir(source)))


def _source_files(folder: Path) -> list[Path]:
    named = [folder / name for name in SOURCE_FILES if (folder / name).is_file()]
    return sorted(set(named) | set(_weight_files(folder)))


def _mb(size: int) -> str:
    return "<1" if 0 < size < 500_000 else f"{size / 1e6:,.0f}"


# -- hashing -----------------------------------------------------------------------------------


def _stat_sig(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _is_sha(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _is_sig(value: Any) -> bool:
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
        if record is not None and record["stat"] == _stat_sig(before):
            return str(record["sha256"])
        digest = _file_sha256(path)
        after = path.stat()
        if _stat_sig(after) == _stat_sig(before) and time.time_ns() - after.st_mtime_ns > _RACY_NS:
            self.records[str(path)] = {"stat": _stat_sig(after), "sha256": digest}
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
            _atomic_write_json(self.path, {"format": MEMO_FORMAT, "files": kept})
        self.dirty = False


def entry_key(source: str | os.PathLike[str], quantization: str | None = "float32") -> str:
    """The cache key of a model folder: a sha256 over what decides the conversion's result."""
    import ctranslate2

    folder = _source_dir(source)
    q = _check_quantization(quantization)
    memo = _HashMemo(cache_root())
    digest = hashlib.sha256()
    digest.update(f"llmtool-ct2\0format={FORMAT}\0ctranslate2={ctranslate2.__version__}\0quantization={q}\0".encode())
    for path in _source_files(folder):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{memo.sha256(path)}\0".encode())
    memo.save()
    return digest.hexdigest()


# -- files -------------------------------------------------------------------------------------


def _atomic_write_json(path: Path, data: Any) -> None:
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


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _all_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


# -- entries: checking -------------------------------------------------------------------------


def _manifest(entry: Path) -> dict[str, Any]:
    """The manifest, validated; raises ValueError on anything unexpected."""
    data = _read_json(entry / ENTRY_FILE)
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("key") != entry.name:
        raise ValueError("the manifest is not one this llmtool writes")
    files = data.get("files")
    if not isinstance(files, dict) or not files:
        raise ValueError("the manifest lists no files")
    for name, record in files.items():
        ok = isinstance(record, dict) and _is_sha(record.get("sha256")) and _is_sig(record.get("stat"))
        if not ok or type(record.get("size")) is not int or ".." in Path(name).parts or Path(name).is_absolute():
            raise ValueError(f"the manifest's record of {name!r} is malformed")
    for needed in (f"{CT2_DIR}/model.bin", MODEL_META, "tokenizer.json", "tokenizer_meta.json", HEADS_FILE):
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
        if _stat_sig(st) != record["stat"]:
            try:
                digest = _file_sha256(path)
            except OSError as exc:
                return f"{name} is unreadable ({exc.strerror})"
            if digest != record["sha256"]:
                return f"{name} does not match its checksum"
            restat[name] = _stat_sig(path.stat())
    if restat:  # the files were touched or copied but are intact: remember their new stat
        for name, sig in restat.items():
            manifest["files"][name]["stat"] = sig
        with contextlib.suppress(OSError):
            _atomic_write_json(where / ENTRY_FILE, manifest)
    return None


# -- entries: converting -----------------------------------------------------------------------


def _lock(root: Path, key: str) -> Any:
    from filelock import FileLock

    return FileLock(str(root / f"{key}.lock"))


def _cache_error(root: Path, exc: OSError) -> CacheError:
    reason = exc.strerror or one_line(str(exc))
    return CacheError(
        f"cannot write the CTranslate2 cache in {root}: {reason} (set LLMTOOL_CACHE to a writable folder)"
    )


def _prepare_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise _cache_error(root, exc) from exc


def _discard(path: Path, root: Path, key: str) -> None:
    """Remove an entry: renamed away first (readers see it or not, never half of it)."""
    trash = root / f"{TRASH_PREFIX}{key}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _clean_stale(root: Path, own_key: str | None = None) -> None:
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
        lock = _lock(root, key)
        try:
            lock.acquire(timeout=0)
        except (Timeout, OSError):
            continue
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            lock.release()


def needs_conversion(source: str | os.PathLike[str], quantization: str | None = "float32") -> bool:
    """Whether :func:`ensure_entry` would have to convert (no valid entry for this content)."""
    entry = entries_dir() / entry_key(source, quantization)
    return not (entry.is_dir() and verify_entry(entry) is None)


def _stderr_notify(line: str) -> None:
    say(line)


def ensure_entry(
    source: str | os.PathLike[str],
    quantization: str | None = "float32",
    *,
    convert_max_bytes: int | None = None,
    allow_convert: bool = True,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """The entry folder for ``source``, converting it first if there is no valid one.

    With ``allow_convert`` false, only weights up to ``convert_max_bytes`` (default
    :func:`default_convert_max`) are converted; larger ones raise :class:`ModelError` saying how
    to convert them. An unwritable cache raises :class:`CacheError`."""
    from filelock import Timeout

    say = notify or _stderr_notify
    folder = _source_dir(source)
    q = _check_quantization(quantization)
    key = entry_key(folder, q)
    root = entries_dir()
    final = root / key
    if final.is_dir() and verify_entry(final) is None:
        _clean_stale(root)
        return final
    limit = default_convert_max() if convert_max_bytes is None else convert_max_bytes
    size = weights_bytes(folder)
    may_convert = bool(allow_convert) or size <= limit

    def refuse(damaged: str | None) -> ModelError:
        state = f"its CTranslate2 copy was damaged ({damaged}) and was removed" if damaged else "not converted yet"
        return ModelError(
            f"{folder} ({_mb(size)} MB of weights) is {state}; it is over the {_mb(limit)} MB that are "
            f"converted automatically (LLMTOOL_CONVERT_MAX): convert it once with `llmtool cache add {folder}` "
            "or pass --engine ctranslate2"
        )

    if not may_convert and not final.exists():
        raise refuse(None)
    _prepare_root(root)
    lock = _lock(root, key)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say(f"waiting for another llmtool converting {folder} for CTranslate2")
            lock.acquire()
    except OSError as exc:
        raise _cache_error(root, exc) from exc
    try:
        damaged = None
        if final.is_dir():
            damaged = verify_entry(final)
            if damaged is None:
                return final
            _discard(final, root, key)
        if not may_convert:
            raise refuse(damaged)
        _clean_stale(root, own_key=key)
        tmp = root / f"{TMP_PREFIX}{key}-{os.getpid()}-{secrets.token_hex(4)}"
        say(f"converting {folder} ({_mb(size)} MB of weights) for CTranslate2 into {final}")
        try:
            try:
                tmp.mkdir()
            except OSError as exc:
                raise _cache_error(root, exc) from exc
            _convert(folder, q, key, tmp, root)
            os.rename(tmp, final)
            with contextlib.suppress(OSError):
                _fsync_path(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        lock.release()
    return final


def _convert(folder: Path, quantization: str, key: str, tmp: Path, root: Path) -> None:
    """Convert into ``tmp``: CTranslate2's files, the heads, the tokenizer, metadata, the manifest."""
    try:
        import transformers
        from ctranslate2.converters import TransformersConverter
    except ImportError as exc:
        raise ModelError(f"converting for CTranslate2 needs torch and transformers: {exc}") from exc
    captured: dict[str, Any] = {}

    class Converter(TransformersConverter):
        def load_model(self, model_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            return _load_for_conversion(model_class, model_name_or_path, kwargs, captured)

        def load_tokenizer(self, tokenizer_class: Any, model_name_or_path: str, **kwargs: Any) -> Any:
            captured["tokenizer"] = super().load_tokenizer(tokenizer_class, model_name_or_path, **kwargs)
            return _DenseVocab(captured["tokenizer"], int(captured["config"].vocab_size))

    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        Converter(str(folder)).convert(str(tmp / CT2_DIR), quantization=quantization, force=True)
        _write_extras(folder, quantization, tmp, captured)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT) or _under(exc.filename, root):
            raise _cache_error(root, exc) from exc
        raise ModelError(f"cannot convert {folder} for CTranslate2: {one_line(str(exc))}") from exc
    except (ValueError, KeyError, AttributeError, AssertionError, NotImplementedError, RuntimeError) as exc:
        raise ModelError(
            f"cannot convert {folder} for CTranslate2: {one_line(str(exc)) or type(exc).__name__}"
        ) from exc
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    _write_manifest(tmp, key, folder, quantization, root)


class _DenseVocab:
    """The tokenizer as the converter sees it: a vocabulary with one token per embedding row.

    The converter lists the tokenizer's vocabulary by id; CTranslate2 wants exactly as many
    tokens as the embedding has rows, in id order. Embeddings padded past the tokenizer (common:
    rounded up to a multiple of 64) or ids left unused would fail or shift; they get placeholders."""

    def __init__(self, tokenizer: Any, size: int) -> None:
        self._tokenizer = tokenizer
        self._size = size

    def get_vocab(self) -> dict[str, int]:
        vocab = {t: i for t, i in self._tokenizer.get_vocab().items() if 0 <= i < self._size}
        taken = set(vocab.values())
        for i in range(self._size):
            if i not in taken:
                name = f"<llmtool_unused_{i}>"
                while name in vocab:
                    name = f"<{name}>"
                vocab[name] = i
        return vocab

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def _under(filename: Any, root: Path) -> bool:
    if not filename:
        return False
    try:
        return Path(str(filename)).resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _checkpoint_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for path in _weight_files(folder):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="np") as f:
                keys.update(f.keys())
        else:
            import torch

            keys.update(torch.load(str(path), map_location="meta", weights_only=True, mmap=True).keys())
    return keys


def _has(keys: set[str], name: str) -> bool:
    return any(k == name or k.endswith("." + name) for k in keys)


def _encoder_class(model_type: str, keys: set[str]) -> str:
    """The class whose heads the checkpoint holds (its config's architectures may say otherwise)."""
    if model_type == "bert":
        mlm = _has(keys, "cls.predictions.transform.dense.weight")
        nsp = _has(keys, "cls.seq_relationship.weight")
        if "classifier.weight" in keys:
            return "BertForSequenceClassification"
        if mlm and nsp:
            return "BertForPreTraining"
        if mlm:
            return "BertForMaskedLM"
        if nsp:
            return "BertForNextSentencePrediction"
        return "BertModel"
    if "classifier.out_proj.weight" in keys:
        return "RobertaForSequenceClassification"
    if "lm_head.dense.weight" in keys:
        return "RobertaForMaskedLM"
    return "RobertaModel"


def _load_for_conversion(model_class: Any, path: str, kwargs: dict[str, Any], captured: dict[str, Any]) -> Any:
    """Load the model for the converter; for encoders, the full model, keeping its heads aside."""
    import transformers

    config = kwargs["config"]
    model_type = config.model_type
    if model_type not in _ENCODER_TYPES:
        model = model_class.from_pretrained(path, **kwargs)
        captured["class"] = type(model).__name__
        captured["config"] = model.config
        captured["heads"] = {}
        return model
    if getattr(config, "position_embedding_type", None) is None:
        config.position_embedding_type = "absolute"  # transformers 5 dropped it; the 4.x converter asserts on it
    name = _encoder_class(model_type, _checkpoint_keys(Path(path)))
    model = getattr(transformers, name).from_pretrained(path, **kwargs)
    captured["class"] = name
    captured["config"] = model.config
    captured["heads"] = _heads(model, model_type)
    base = getattr(model, model.base_model_prefix, model)
    captured["pooler"] = getattr(base, "pooler", None) is not None
    if model_type == "bert" and base.pooler is None:
        # The converter needs a pooler for BERT; a zero one is never used (this model has no head on it).
        from transformers.models.bert.modeling_bert import BertPooler

        pooler = BertPooler(config).to(next(base.parameters()).dtype)
        for p in pooler.parameters():
            p.data.zero_()
        base.pooler = pooler
    return base


def _np(tensor: Any) -> Any:
    import numpy as np

    # A copy: the converter may quantize the model's tensors in place (the MLM decoder shares the embeddings).
    return np.array(tensor.detach().float().cpu().numpy(), dtype=np.float32, order="C", copy=True)


def _heads(model: Any, model_type: str) -> dict[str, Any]:
    heads: dict[str, Any] = {}

    def linear(prefix: str, module: Any) -> None:
        heads[f"{prefix}.weight"] = _np(module.weight)
        if module.bias is not None:
            heads[f"{prefix}.bias"] = _np(module.bias)

    if model_type == "bert":
        cls = getattr(model, "cls", None)
        predictions = getattr(cls, "predictions", None)
        if predictions is not None:
            linear("mlm.dense", predictions.transform.dense)
            heads["mlm.norm.weight"] = _np(predictions.transform.LayerNorm.weight)
            heads["mlm.norm.bias"] = _np(predictions.transform.LayerNorm.bias)
            heads["mlm.decoder.weight"] = _np(predictions.decoder.weight)
            bias = predictions.decoder.bias if predictions.decoder.bias is not None else predictions.bias
            heads["mlm.decoder.bias"] = _np(bias)
        relationship = getattr(cls, "seq_relationship", None)
        if relationship is not None:
            linear("nsp", relationship)
        classifier = getattr(model, "classifier", None)
        if classifier is not None:
            linear("classifier", classifier)
    else:
        lm_head = getattr(model, "lm_head", None)
        if lm_head is not None:
            linear("mlm.dense", lm_head.dense)
            heads["mlm.norm.weight"] = _np(lm_head.layer_norm.weight)
            heads["mlm.norm.bias"] = _np(lm_head.layer_norm.bias)
            heads["mlm.decoder.weight"] = _np(lm_head.decoder.weight)
            bias = lm_head.decoder.bias if lm_head.decoder.bias is not None else lm_head.bias
            heads["mlm.decoder.bias"] = _np(bias)
        classifier = getattr(model, "classifier", None)
        if classifier is not None:
            linear("classifier.dense", classifier.dense)
            linear("classifier.out_proj", classifier.out_proj)
    return heads


def _int_or_list(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return int(value) if isinstance(value, int) else None


def _write_extras(folder: Path, quantization: str, tmp: Path, captured: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    from llmtool.engines.ct2_tokenizer import export_tokenizer

    config = captured["config"]
    heads: dict[str, Any] = captured["heads"]
    export_tokenizer(captured["tokenizer"], tmp)
    save_file(heads, str(tmp / HEADS_FILE))
    model_type = config.model_type
    raw = _read_json(folder / "config.json")
    generation = (
        _read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else None
    )
    if model_type == "roberta":
        max_positions = int(config.max_position_embeddings) - (int(config.pad_token_id or 1) + 1)
    elif model_type == "gpt2":
        max_positions = int(config.n_positions)
    else:
        max_positions = int(config.max_position_embeddings)
    classifier = None
    if "classifier.weight" in heads:
        classifier = "bert"
    elif "classifier.out_proj.weight" in heads:
        classifier = "roberta"
    meta = {
        "format": FORMAT,
        "model_type": model_type,
        "architectures": raw.get("architectures"),
        "loaded_class": captured["class"],
        "kind": "encoder" if model_type in _ENCODER_TYPES else "decoder",
        "quantization": quantization,
        "heads": {
            "mlm": "mlm.decoder.weight" in heads,
            "nsp": "nsp.weight" in heads,
            "classifier": classifier,
            "pooler": bool(captured.get("pooler", False)),
        },
        "mlm_activation": "gelu" if model_type == "roberta" else getattr(config, "hidden_act", None),
        "layer_norm_eps": float(getattr(config, "layer_norm_eps", 1e-12) or 1e-12),
        "num_labels": int(config.num_labels) if classifier else None,
        "id2label": {str(k): v for k, v in config.id2label.items()} if classifier else None,
        "label2id": dict(config.label2id) if classifier else None,
        "problem_type": getattr(config, "problem_type", None),
        "max_positions": max_positions,
        "learned_positions": model_type != "llama",
        "generation_config": generation,
        "eos_token_id": _int_or_list(getattr(config, "eos_token_id", None)),
        "bos_token_id": _int_or_list(getattr(config, "bos_token_id", None)),
        "pad_token_id": _int_or_list(getattr(config, "pad_token_id", None)),
        "vocab_size": int(config.vocab_size),
        "source": str(folder),
    }
    (tmp / MODEL_META).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_manifest(tmp: Path, key: str, folder: Path, quantization: str, root: Path) -> None:
    import ctranslate2

    try:
        files: dict[str, Any] = {}
        for path in _all_files(tmp):
            _fsync_path(path)
            st = path.stat()
            files[path.relative_to(tmp).as_posix()] = {
                "size": st.st_size,
                "sha256": _file_sha256(path),
                "stat": _stat_sig(st),
            }
        manifest = {
            "format": FORMAT,
            "key": key,
            "source": str(folder),
            "quantization": quantization,
            "ctranslate2_version": ctranslate2.__version__,
            "created": time.time(),
            "files": files,
        }
        _atomic_write_json(tmp / ENTRY_FILE, manifest)
        for sub in sorted({p.parent for p in _all_files(tmp)}, key=lambda p: len(p.parts), reverse=True):
            _fsync_path(sub)
    except OSError as exc:
        raise _cache_error(root, exc) from exc


# -- management --------------------------------------------------------------------------------


def _entry_dirs() -> list[Path]:
    try:
        return sorted(p for p in entries_dir().iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _disk_size(folder: Path) -> int:
    total = 0
    for path in _all_files(folder):
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
                source = _read_json(entry / ENTRY_FILE).get("source")
            by_key = bool(re.fullmatch(r"[0-9a-f]{4,64}", match)) and entry.name.startswith(match)
            if by_key or entry.name in keys or (wanted_source is not None and source == wanted_source):
                chosen.append(entry)
    removed = []
    for entry in chosen:
        lock = _lock(root, entry.name)
        try:
            lock.acquire()
        except OSError as exc:
            raise _cache_error(root, exc) from exc
        try:
            _discard(entry, root, entry.name)
        finally:
            lock.release()
        removed.append(entry)
    if match is None:
        _clean_stale(root)
    return removed


# -- what this engine runs ---------------------------------------------------------------------


def supported(config_dict: dict[str, Any], task: str) -> str | None:
    """None if this engine runs ``task`` for a model with this config.json, else a short reason."""
    if task == "embed" and config_dict.get("model_type") in _ENCODER_TYPES:  # any head: the encoder's states
        return _config_problem(config_dict)
    if task not in TASKS:
        return f"unknown task {task!r}"
    model_type = config_dict.get("model_type")
    archs = config_dict.get("architectures") or []
    arch = archs[0] if archs else None
    named = arch or model_type or "this model"
    if model_type not in _ARCHITECTURES:
        return f"the ctranslate2 engine does not support {named} models"
    known = _ARCHITECTURES[model_type]
    if arch is None:
        return "config.json names no architecture; the ctranslate2 engine needs one"
    if arch not in known:
        if model_type not in _ENCODER_TYPES and arch.endswith("ForSequenceClassification"):
            return "decoder classifiers need the torch engine"
        return f"ctranslate2 does not convert {arch} for llmtool"
    if task not in known[arch]:
        return f"{arch} has no head for {task} in the ctranslate2 engine"
    return _config_problem(config_dict)


def _config_problem(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    if model_type in _ENCODER_TYPES:
        if config.get("position_embedding_type", "absolute") not in (None, "absolute"):
            return f"ctranslate2 does not convert {config['position_embedding_type']} position embeddings"
        if config.get("hidden_act", "gelu") not in _ACTIVATIONS:
            return f"ctranslate2 does not convert the {config.get('hidden_act')} activation"
        if config.get("is_decoder"):
            return "ctranslate2 converts BERT-like models as encoders only"
    elif model_type == "gpt2":
        if config.get("activation_function", "gelu_new") not in _ACTIVATIONS:
            return f"ctranslate2 does not convert the {config.get('activation_function')} activation"
        if config.get("scale_attn_by_inverse_layer_idx") or config.get("reorder_and_upcast_attn"):
            return "ctranslate2 does not convert GPT-2's per-layer attention scaling"
        if config.get("scale_attn_weights") is False:
            return "ctranslate2 does not convert unscaled GPT-2 attention"
    elif model_type == "llama":
        if config.get("hidden_act", "silu") != "silu":
            return f"ctranslate2 converts Llama with silu only, not {config.get('hidden_act')}"
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        rope_type = (rope.get("rope_type") or rope.get("type")) if isinstance(rope, dict) else None
        if rope_type not in _ROPE_TYPES:
            return f"ctranslate2 does not convert {rope_type} RoPE scaling"
        heads = config.get("num_attention_heads") or 1
        head_dim = config.get("head_dim")
        if head_dim and head_dim * heads != config.get("hidden_size"):
            return "ctranslate2 does not convert Llama models whose head_dim differs from hidden_size / heads"
        if config.get("attention_bias") or config.get("mlp_bias"):
            return "ctranslate2 does not convert Llama models with biases"
    return None


# -- run time ----------------------------------------------------------------------------------


def _load_checked(entry: str | os.PathLike[str], kind: str) -> tuple[Path, dict[str, Any]]:
    where = Path(entry)
    problem = verify_entry(where)
    if problem is not None:
        raise ModelError(f"the CTranslate2 entry {where} is damaged ({problem}); run again to convert it anew")
    meta = _read_json(where / MODEL_META)
    if meta.get("format") != FORMAT or meta.get("kind") != kind:
        raise ModelError(f"the CTranslate2 entry {where} holds a {meta.get('kind')} model, not an {kind}")
    return where, meta


def _to_numpy(value: Any) -> np.ndarray:
    import ctranslate2
    import numpy as np

    if value.dtype != ctranslate2.DataType.float32:
        value = value.to(ctranslate2.DataType.float32)
    if value.device != "cpu":
        value = value.to_device(ctranslate2.Device.cpu)
    return np.array(value, dtype=np.float32, copy=True)


def _erf(x: np.ndarray) -> np.ndarray:
    """erf, exactly (math.erf per element: the heads see few rows, so this stays cheap)."""
    import numpy as np

    return np.asarray(np.frompyfunc(math.erf, 1, 1)(x), dtype=np.float64)


def _activation(name: str, x: np.ndarray) -> np.ndarray:
    import numpy as np

    if name in ("gelu", "gelu_python"):
        return (0.5 * x * (1.0 + _erf(x.astype(np.float64) / math.sqrt(2.0)))).astype(np.float32)
    if name in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast"):
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(np.float32)
    if name == "quick_gelu":
        return (x / (1.0 + np.exp(-1.702 * x))).astype(np.float32)
    if name == "relu":
        return np.maximum(x, 0).astype(np.float32)
    if name in ("silu", "swish"):
        return (x / (1.0 + np.exp(-x))).astype(np.float32)
    raise ModelError(f"the ctranslate2 engine does not compute the {name} activation")


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    import numpy as np

    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + np.float32(eps)) * weight + bias).astype(np.float32)


def _threads(intra_threads: int | None) -> int:
    if intra_threads is not None:
        return intra_threads
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() else 0


class Ct2Encoder:
    """A converted BERT or RoBERTa encoder, with its heads computed in numpy."""

    def __init__(self, entry: Path, meta: dict[str, Any], device: str, compute_type: str, intra_threads: int) -> None:
        import ctranslate2
        from safetensors.numpy import load_file

        self.entry = entry
        self.meta = meta
        self.model_type: str = meta["model_type"]
        self.heads: dict[str, np.ndarray] = load_file(str(entry / HEADS_FILE))
        self.encoder = ctranslate2.Encoder(
            str(entry / CT2_DIR), device=device, compute_type=compute_type, intra_threads=intra_threads
        )
        self.device = device
        self.compute_type = compute_type
        self.max_length: int = int(meta["max_positions"])
        self.vocab_size: int = int(meta["vocab_size"])
        self.num_labels: int | None = meta.get("num_labels")
        self.id2label: dict[int, str] = {int(k): v for k, v in (meta.get("id2label") or {}).items()}
        self.problem_type: str | None = meta.get("problem_type")
        self.has_mlm: bool = bool(meta["heads"]["mlm"])
        self.has_nsp: bool = bool(meta["heads"]["nsp"] and meta["heads"]["pooler"])
        self.has_classifier: bool = bool(meta["heads"]["classifier"])

    def _forward(self, rows: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None) -> Any:
        for i, row in enumerate(rows):
            if not row:
                raise UsageError("cannot encode an empty sequence")
            if len(row) > self.max_length:
                raise UsageError(f"a sequence of {len(row)} tokens is longer than the model's {self.max_length}")
            if type_ids is not None and len(type_ids[i]) != len(row):
                raise UsageError("token_type_ids and input_ids differ in length")
        ids = [[int(t) for t in row] for row in rows]
        types = None
        if self.model_type == "bert":
            types = [[int(t) for t in r] for r in type_ids] if type_ids is not None else [[0] * len(r) for r in ids]
        return self.encoder.forward_batch(ids, token_type_ids=types)

    def mlm_logits(
        self,
        batch: Sequence[Sequence[int]],
        positions: Sequence[tuple[int, int]],
        type_ids: Sequence[Sequence[int]] | None = None,
    ) -> np.ndarray:
        """The masked-LM logits (float32, len(positions) x vocab) at those (row, column) positions."""
        import numpy as np

        if not self.has_mlm:
            raise ModelError(f"{self.meta.get('source')} has no masked-LM head")
        if not positions:
            return np.zeros((0, self.heads["mlm.decoder.weight"].shape[0]), dtype=np.float32)
        used = sorted({int(r) for r, _ in positions})
        for r, c in positions:
            if not 0 <= int(r) < len(batch) or not 0 <= int(c) < len(batch[int(r)]):
                raise UsageError(f"position ({r}, {c}) is outside the batch")
        where = {r: i for i, r in enumerate(used)}
        sub_types = [type_ids[r] for r in used] if type_ids is not None else None
        out = self._forward([batch[r] for r in used], sub_types)
        hidden = _to_numpy(out.last_hidden_state)
        rows = np.array([where[int(r)] for r, _ in positions])
        cols = np.array([int(c) for _, c in positions])
        return self._mlm_head(hidden[rows, cols])

    def _mlm_head(self, x: np.ndarray) -> np.ndarray:
        h = self.heads
        x = x @ h["mlm.dense.weight"].T + h["mlm.dense.bias"]
        x = _activation(str(self.meta["mlm_activation"]), x)
        x = _layer_norm(x, h["mlm.norm.weight"], h["mlm.norm.bias"], float(self.meta["layer_norm_eps"]))
        logits: np.ndarray = x @ h["mlm.decoder.weight"].T + h["mlm.decoder.bias"]
        return logits.astype("float32", copy=False)

    def _rows(self, batch: Sequence[dict[str, Sequence[int]]]) -> Any:
        ids = [row["input_ids"] for row in batch]
        types = [row["token_type_ids"] for row in batch] if all("token_type_ids" in row for row in batch) else None
        return self._forward(ids, types)

    def sequence_logits(self, batch: Sequence[dict[str, Sequence[int]]]) -> np.ndarray:
        """The classifier's logits (b x num_labels) for unpadded rows {input_ids[, token_type_ids]}."""
        import numpy as np

        kind = self.meta["heads"]["classifier"]
        if not kind:
            raise ModelError(f"{self.meta.get('source')} has no sequence-classification head")
        if not batch:
            return np.zeros((0, int(self.num_labels or 0)), dtype=np.float32)
        out = self._rows(batch)
        h = self.heads
        if kind == "bert":
            if not self.meta["heads"]["pooler"]:
                raise ModelError(f"{self.meta.get('source')} has a classifier but no pooler")
            pooled = _to_numpy(out.pooler_output)
            logits = pooled @ h["classifier.weight"].T + h["classifier.bias"]
        else:
            first = _to_numpy(out.last_hidden_state)[:, 0]
            x = np.tanh(first @ h["classifier.dense.weight"].T + h["classifier.dense.bias"])
            logits = x @ h["classifier.out_proj.weight"].T + h["classifier.out_proj.bias"]
        return np.asarray(logits, dtype=np.float32)

    def nsp_logits(self, batch: Sequence[dict[str, Sequence[int]]]) -> np.ndarray:
        """The next-sentence logits (b x 2; index 0: B follows A) for unpadded rows."""
        import numpy as np

        if not self.has_nsp:
            raise ModelError(f"{self.meta.get('source')} has no next-sentence head")
        if not batch:
            return np.zeros((0, 2), dtype=np.float32)
        pooled = _to_numpy(self._rows(batch).pooler_output)
        return np.asarray(pooled @ self.heads["nsp.weight"].T + self.heads["nsp.bias"], dtype=np.float32)

    def hidden_states(self, batch: Sequence[dict[str, Sequence[int]]]) -> tuple[np.ndarray, np.ndarray]:
        """The encoder's last hidden states (float32, rows x tokens x hidden) and the attention mask
        (rows x tokens; 1 on each row's own tokens) for unpadded rows {input_ids[, token_type_ids]}."""
        import numpy as np

        if not batch:
            return np.zeros((0, 0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.int64)
        hidden = _to_numpy(self._rows(batch).last_hidden_state)
        mask = np.zeros(hidden.shape[:2], dtype=np.int64)
        for i, row in enumerate(batch):
            mask[i, : len(row["input_ids"])] = 1
        return hidden, mask


def load_encoder(
    entry: str | os.PathLike[str],
    device: str = "cpu",
    compute_type: str = "default",
    *,
    intra_threads: int | None = None,
) -> Ct2Encoder:
    """Load an encoder entry (``intra_threads``: default ``$OMP_NUM_THREADS``, else CTranslate2's)."""
    where, meta = _load_checked(entry, "encoder")
    try:
        return Ct2Encoder(where, meta, device, compute_type, _threads(intra_threads))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load the CTranslate2 model in {where}: {one_line(str(exc))}") from exc


class Ct2Decoder:
    """A converted GPT-2 or Llama decoder."""

    def __init__(self, entry: Path, meta: dict[str, Any], device: str, compute_type: str, intra_threads: int) -> None:
        self.entry = entry
        self.meta = meta
        self.device = device
        self.compute_type = compute_type
        self.intra_threads = intra_threads
        self.generator = self._new_generator()
        self.vocab: list[str] = _read_json(entry / CT2_DIR / "vocabulary.json")
        self._unique_vocab = len(set(self.vocab)) == len(self.vocab)
        self.vocab_size = len(self.vocab)
        self.max_length: int = int(meta["max_positions"])
        self.context_length = self.max_length
        self.learned_positions: bool = bool(meta.get("learned_positions", True))
        self.generation_config: dict[str, Any] | None = meta.get("generation_config")
        self.eos_token_id = meta.get("eos_token_id")
        self.bos_token_id = meta.get("bos_token_id")
        self.pad_token_id = meta.get("pad_token_id")
        self._seed: int | None = None
        self._sampled = False

    def _new_generator(self) -> Any:
        import ctranslate2

        return ctranslate2.Generator(
            str(self.entry / CT2_DIR),
            device=self.device,
            compute_type=self.compute_type,
            intra_threads=self.intra_threads,
        )

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        try:
            return [self.vocab[int(i)] for i in ids]
        except IndexError:
            raise UsageError(f"a token id is outside the vocabulary of {self.vocab_size}") from None

    def _check_length(self, length: int) -> None:
        if self.learned_positions and length > self.max_length:
            raise UsageError(f"a sequence of {length} tokens is longer than the model's {self.max_length} positions")

    # -- scoring --------------------------------------------------------------------------------

    def token_logprobs(self, rows: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Per row, log P(row[t] | row[:t]) for t = 1..len-1 (float32)."""
        import numpy as np

        out: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in rows]
        todo = [i for i, row in enumerate(rows) if len(row) >= 2]
        for i in todo:
            self._check_length(len(rows[i]))
        if not todo:
            return out
        if self._unique_vocab:
            results = self.generator.score_batch([self._tokens(rows[i]) for i in todo], max_input_length=0)
            for i, result in zip(todo, results, strict=True):
                out[i] = np.asarray(result.log_probs, dtype=np.float32)
            return out
        for i in todo:  # vocabulary strings repeat: score by ids (one row at a time bounds the memory)
            ids = [int(t) for t in rows[i]]
            log_probs = _to_numpy(self.generator.forward_batch([ids[:-1]], return_log_probs=True))[0]
            out[i] = log_probs[np.arange(len(ids) - 1), ids[1:]].astype(np.float32)
        return out

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        greedy: bool = True,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        num_return_sequences: int = 1,
        seed: int | None = None,
        eos_ids: Iterable[int] = (),
        on_token: Callable[[int, int], bool | None] | None = None,
    ) -> list[list[int]]:
        """New tokens per sequence, prompt-major (prompt 0's n sequences, then prompt 1's...), with
        the EOS token when one was produced. ``on_token(sequence, token)`` sees each token as it is
        made; returning True stops that sequence.

        Greedy decoding reproduces ``model.generate``'s tokens, repetition penalty included (it
        penalizes the prompt's tokens too, which CTranslate2's loop leaves out: such steps are
        checked against the step's logits and decoding resumes from the corrected token). Sampling
        follows the same processors (temperature, top-k, top-p) with CTranslate2's random
        generator; with a seed, prompts are sampled one at a time, in order, so that a run repeats
        whatever the batching (with a repetition penalty, the first prompt token goes unpenalized)."""
        n = max(1, int(num_return_sequences))
        eos = sorted({int(e) for e in eos_ids})
        outputs: list[list[int]] = [[] for _ in range(len(prompts) * n)]
        if max_new_tokens <= 0 or not prompts:
            return outputs
        budgets = []
        for prompt in prompts:
            if not prompt:
                raise UsageError("cannot generate from an empty prompt")
            self._check_length(len(prompt))
            room = self.max_length - len(prompt) if self.learned_positions else max_new_tokens
            if room <= 0:
                raise UsageError(f"a prompt of {len(prompt)} tokens leaves no room in {self.max_length} positions")
            budgets.append(min(int(max_new_tokens), room))
        sampling = not greedy and temperature > 0 and top_k != 1
        jobs = [(p * n + j, [int(t) for t in prompts[p]], budgets[p]) for p in range(len(prompts)) for j in range(n)]
        if not sampling:
            if repetition_penalty == 1.0:
                self._run(jobs, outputs, eos, on_token, {"sampling_topk": 1})
            else:
                for job in jobs:
                    self._greedy_penalized(job, outputs, eos, on_token, float(repetition_penalty))
            return outputs
        options = {
            "sampling_topk": max(0, int(top_k)) if 0 < int(top_k) < self.vocab_size else 0,
            "sampling_topp": float(top_p),
            "sampling_temperature": float(temperature),
            "repetition_penalty": float(repetition_penalty),
        }
        include_prompt = repetition_penalty != 1.0  # the prompt then enters the penalized history
        if seed is None:
            self._sampled = True
            self._run(jobs, outputs, eos, on_token, options, include_prompt=include_prompt)
            return outputs
        self._reseed(int(seed))
        for p in range(len(prompts)):
            self._run(jobs[p * n : (p + 1) * n], outputs, eos, on_token, options, include_prompt=include_prompt)
        return outputs

    def _reseed(self, seed: int) -> None:
        """CTranslate2 seeds each worker thread's generator once, at its first draw: a new seed
        needs a fresh Generator (new threads) unless nothing was drawn yet."""
        import ctranslate2

        if self._seed == seed:
            return
        if self._sampled:
            self.generator = self._new_generator()
        ctranslate2.set_random_seed(seed % (2**32))
        self._seed = seed
        self._sampled = True

    def _run(
        self,
        jobs: Sequence[tuple[int, list[int], int]],
        outputs: list[list[int]],
        eos: list[int],
        on_token: Callable[[int, int], bool | None] | None,
        options: dict[str, Any],
        *,
        include_prompt: bool = False,
        check: Callable[[int, Any], int | None] | None = None,
    ) -> list[str | None]:
        """One generate_batch call; tokens are taken from its callback. Returns why each job ended:
        "eos", "stopped" (by on_token), "budget", "corrected" (``check`` replaced a token: the job
        stopped there and needs to resume), or None (CTranslate2 ended it)."""
        starts = [job[1] for job in jobs]
        # Steps before prefix[b] replay the prompt (CTranslate2 forwards the shortest prompt's
        # length at once and constrains the rest); they are skipped.
        if include_prompt:
            prefix = [len(s) - 1 for s in starts]
            max_length = max(job[2] + prefix[b] for b, job in enumerate(jobs))
        else:
            forwarded = min(len(s) for s in starts) - 1
            prefix = [len(s) - forwarded - 1 for s in starts]
            replayed = forwarded == 0  # then CTranslate2 counts the replayed prompt in max_length
            max_length = max(job[2] + (prefix[b] if replayed else 0) for b, job in enumerate(jobs))
        done = [False] * len(jobs)
        ended: list[str | None] = [None] * len(jobs)
        counts = [0] * len(jobs)
        failure: list[BaseException] = []
        eos_set = set(eos)

        def callback(step: Any) -> bool:
            b = int(step.batch_id)
            if done[b] or failure:
                return True
            if int(step.step) < prefix[b]:
                return False
            try:
                token = int(step.token_id)
                replaced = check(b, step) if check is not None else None
                if replaced is not None:
                    token = replaced
                index = jobs[b][0]
                outputs[index].append(token)
                counts[b] += 1
                stop = bool(on_token(index, token)) if on_token is not None else False
                if stop:
                    ended[b] = "stopped"
                elif token in eos_set:
                    ended[b] = "eos"
                elif counts[b] >= jobs[b][2]:
                    ended[b] = "budget"
                elif replaced is not None:
                    ended[b] = "corrected"
                done[b] = ended[b] is not None
            except BaseException as exc:  # raised in CTranslate2's thread: carried over to the caller's
                failure.append(exc)
                return True
            return done[b]

        pending = self.generator.generate_batch(
            [self._tokens(s) for s in starts],
            max_length=max_length,
            include_prompt_in_result=include_prompt,
            end_token=eos,
            return_end_token=True,
            asynchronous=True,
            callback=callback,
            **options,
        )
        try:
            while not all(r.done() for r in pending):  # polled, so that Ctrl-C reaches this thread
                time.sleep(0.002)
            for r in pending:
                r.result()
        except BaseException as exc:
            failure.append(exc)
            for r in pending:
                with contextlib.suppress(Exception):
                    r.result()
        if failure:
            raise failure[0]
        return ended

    def _greedy_penalized(
        self,
        job: tuple[int, list[int], int],
        outputs: list[list[int]],
        eos: list[int],
        on_token: Callable[[int, int], bool | None] | None,
        penalty: float,
    ) -> None:
        """Greedy search with transformers' repetition penalty over prompt and output.

        CTranslate2 penalizes only what its decoding loop produced; the logits of each step show
        whether penalizing the prompt's other tokens changes the argmax. When it does, the
        corrected token is kept and decoding resumes after it."""
        import numpy as np

        index, prompt, budget = job
        while True:
            made = outputs[index]
            left = budget - len(made)
            if left <= 0:
                return
            start = prompt + made
            steps = min(left, 64)  # bounds the logits CTranslate2 keeps per call
            produced: set[int] = set()
            history = set(start)

            def check(b: int, step: Any, produced: set[int] = produced, history: set[int] = history) -> int | None:
                token = int(step.token_id)
                extra = [t for t in history if t not in produced]
                result = None
                if extra:
                    logits = _to_numpy(step.logits).reshape(-1)
                    chosen = logits[extra]
                    logits[extra] = np.where(chosen < 0, chosen * penalty, chosen / penalty)
                    best = int(np.argmax(logits))
                    if best != token:
                        result = best
                produced.add(token if result is None else result)
                return result

            ended = self._run(
                [(index, start, steps)],
                outputs,
                eos,
                on_token,
                {"sampling_topk": 1, "repetition_penalty": penalty, "return_logits_vocab": True},
                check=check,
            )
            if ended[0] not in ("corrected", "budget"):
                return  # EOS, or on_token stopped it


def load_decoder(
    entry: str | os.PathLike[str],
    device: str = "cpu",
    compute_type: str = "default",
    *,
    intra_threads: int | None = None,
) -> Ct2Decoder:
    """Load a decoder entry (``intra_threads``: default ``$OMP_NUM_THREADS``, else CTranslate2's)."""
    where, meta = _load_checked(entry, "decoder")
    try:
        return Ct2Decoder(where, meta, device, compute_type, _threads(intra_threads))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load the CTranslate2 model in {where}: {one_line(str(exc))}") from exc


def load_tokenizer(entry: str | os.PathLike[str]) -> FastTokenizer:
    """The entry's tokenizer (:class:`llmtool.engines.ct2_tokenizer.FastTokenizer`)."""
    from llmtool.engines.ct2_tokenizer import FastTokenizer

    return FastTokenizer.load(entry)
