"""Converting a model folder into a CTranslate2 cache entry (:mod:`llmtool.engines.ct2.cache`).

:func:`ensure_entry` returns the entry for a folder, converting it first when there is no valid
one: under the key's file lock, into a temporary folder renamed into place when complete. The
conversion runs CTranslate2's own ``TransformersConverter`` (for encoders on the full model, whose
heads CTranslate2 leaves out: they are exported as numpy arrays into ``heads.safetensors``), then
exports the tokenizer (:func:`llmtool.engines.ct2.tokenizer.export_tokenizer`), writes
``model_meta.json`` (what the run time needs to know) and, last, the manifest ``entry.json``.

Torch and transformers are imported here only, to convert; the run time never imports them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.engines.ct2 import cache
from llmtool.engines.ct2.support import ENCODER_TYPES, SEQ2SEQ_TYPES
from llmtool.engines.ct2.tokenizer import export_tokenizer
from llmtool.errors import ModelError, one_line
from llmtool.io.console import say

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from llmtool.engines.base import FloatArray


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
    :func:`~llmtool.engines.ct2.cache.default_convert_max`) are converted; larger ones raise
    :class:`ModelError` saying how to convert them. An unwritable cache raises
    :class:`~llmtool.engines.ct2.cache.CacheError`."""
    from filelock import Timeout

    say = notify or _stderr_notify
    folder = cache.source_dir(source)
    q = cache.check_quantization(quantization)
    key = cache.entry_key(folder, q)
    root = cache.entries_dir()
    final = root / key
    if final.is_dir() and cache.verify_entry(final) is None:
        cache.clean_stale(root)
        return final
    limit = cache.default_convert_max() if convert_max_bytes is None else convert_max_bytes
    size = cache.weights_bytes(folder)
    may_convert = bool(allow_convert) or size <= limit

    def refuse(damaged: str | None) -> ModelError:
        state = f"its CTranslate2 copy was damaged ({damaged}) and was removed" if damaged else "not converted yet"
        return ModelError(
            f"{folder} ({cache.megabytes(size)} MB of weights) is {state}; it is over the "
            f"{cache.megabytes(limit)} MB that are converted automatically (LLMTOOL_CONVERT_MAX): "
            f"convert it once with `llmtool cache add {folder}` or pass --engine ctranslate2"
        )

    if not may_convert and not final.exists():
        raise refuse(None)
    cache.prepare_root(root)
    lock = cache.entry_lock(root, key)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say(f"waiting for another llmtool converting {folder} for CTranslate2")
            lock.acquire()
    except OSError as exc:
        raise cache.cache_error(root, exc) from exc
    try:
        damaged = None
        if final.is_dir():
            damaged = cache.verify_entry(final)
            if damaged is None:
                return final
            cache.discard_entry(final, root, key)
        if not may_convert:
            raise refuse(damaged)
        cache.clean_stale(root, own_key=key)
        tmp = root / f"{cache.TMP_PREFIX}{key}-{os.getpid()}-{secrets.token_hex(4)}"
        say(f"converting {folder} ({cache.megabytes(size)} MB of weights) for CTranslate2 into {final}")
        try:
            try:
                tmp.mkdir()
            except OSError as exc:
                raise cache.cache_error(root, exc) from exc
            _convert(folder, q, key, tmp, root)
            os.rename(tmp, final)
            with contextlib.suppress(OSError):
                cache.fsync_path(root)
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
        Converter(str(folder)).convert(str(tmp / cache.CT2_DIR), quantization=quantization, force=True)
        _write_extras(folder, quantization, tmp, captured)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT) or _under(exc.filename, root):
            raise cache.cache_error(root, exc) from exc
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

    def __init__(self, tokenizer: PreTrainedTokenizerBase, size: int) -> None:
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


def _under(filename: object, root: Path) -> bool:
    if not filename:
        return False
    try:
        return Path(str(filename)).resolve().is_relative_to(root.resolve())
    except OSError:
        return False


def _checkpoint_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    keys: set[str] = set()
    for path in cache.weight_files(folder):
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="np") as f:
                keys.update(f.keys())
        else:
            import torch

            keys.update(torch.load(str(path), map_location="meta", weights_only=True, mmap=True).keys())
    return keys


def _has(keys: set[str], name: str) -> bool:
    return any(k == name or k.endswith("." + name) for k in keys)


# Per-token heads: the class-name ending config.json records, and the head's attribute in that class.
TOKEN_HEADS = (("ForTokenClassification", "classifier"), ("ForQuestionAnswering", "qa_outputs"))


def _encoder_class(model_type: str, keys: set[str], architectures: list[str] | None = None) -> str:
    """The class whose heads the checkpoint holds.

    A per-token head is decided by the config's ``architectures`` (``*ForTokenClassification``,
    ``*ForQuestionAnswering``): a BERT token classifier's ``classifier.weight`` has the same name and
    shape as a sequence classifier's. Otherwise the checkpoint's keys decide (its config's
    architectures may say otherwise: a pre-training checkpoint saved as a masked LM, say)."""
    family = "Bert" if model_type == "bert" else "Roberta"
    arch = (architectures or [""])[0] or ""
    for ending, _ in TOKEN_HEADS:
        if arch.endswith(ending):
            return family + ending
    if _has(keys, "qa_outputs.weight"):
        return family + "ForQuestionAnswering"
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
    if "classifier.weight" in keys:  # RoBERTa's sequence classifier has classifier.dense and .out_proj
        return "RobertaForTokenClassification"
    if "lm_head.dense.weight" in keys:
        return "RobertaForMaskedLM"
    return "RobertaModel"


def _load_for_conversion(model_class: Any, path: str, kwargs: dict[str, Any], captured: dict[str, Any]) -> Any:
    """Load the model for the converter; for encoders, the full model, keeping its heads aside."""
    import transformers

    config = kwargs["config"]
    model_type = config.model_type
    if model_type in SEQ2SEQ_TYPES:
        return _load_seq2seq(model_class, path, kwargs, captured)
    if model_type not in ENCODER_TYPES:
        model = model_class.from_pretrained(path, **kwargs)
        captured["class"] = type(model).__name__
        captured["config"] = model.config
        captured["heads"] = {}
        return model
    if getattr(config, "position_embedding_type", None) is None:
        config.position_embedding_type = "absolute"  # transformers 5 dropped it; the 4.x converter asserts on it
    name = _encoder_class(model_type, _checkpoint_keys(Path(path)), getattr(config, "architectures", None))
    model = getattr(transformers, name).from_pretrained(path, **kwargs)
    captured["class"] = name
    captured["config"] = model.config
    token_head = next((attr for ending, attr in TOKEN_HEADS if name.endswith(ending)), None)
    captured["token_head"] = token_head
    captured["heads"] = _heads(model, model_type, token_head)
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


def _load_seq2seq(model_class: Any, path: str, kwargs: dict[str, Any], captured: dict[str, Any]) -> Any:
    """An encoder-decoder for the converter, with the settings Transformers 5 moved put back where the
    converter reads them."""
    config = kwargs["config"]
    if config.model_type in ("bart", "mbart") and getattr(config, "normalize_before", None) is None:
        # Transformers 5 dropped normalize_before from these configs; the converter reads it: BART's
        # layers normalise after each block, mBART's before (MarianMT and M2M100 set it themselves).
        config.normalize_before = config.model_type == "mbart"
    model = model_class.from_pretrained(path, **kwargs)
    if config.model_type in ("t5", "mt5", "umt5"):
        # Transformers 5 forces tie_word_embeddings on and scales the decoder's output by d_model**-0.5
        # only when scale_decoder_outputs says so (models saved untied: T5 v1.1, Flan-T5); the converter
        # scales whenever tie_word_embeddings is on.
        model.config.tie_word_embeddings = bool(getattr(model.config, "scale_decoder_outputs", True))
    captured["class"] = type(model).__name__
    captured["config"] = model.config
    captured["heads"] = {}
    return model


def _np(tensor: torch.Tensor) -> FloatArray:
    import numpy as np

    # A copy: the converter may quantize the model's tensors in place (the MLM decoder shares the embeddings).
    return np.array(tensor.detach().float().cpu().numpy(), dtype=np.float32, order="C", copy=True)


def _heads(model: PreTrainedModel, model_type: str, token_head: str | None = None) -> dict[str, FloatArray]:
    """The heads CTranslate2 leaves out, as numpy arrays; a per-token head (the model's ``token_head``
    attribute, a Linear on every token's last hidden state) is saved as ``token.weight``/``token.bias``."""
    heads: dict[str, FloatArray] = {}

    def linear(prefix: str, module: torch.nn.Linear) -> None:
        heads[f"{prefix}.weight"] = _np(module.weight)
        if module.bias is not None:
            heads[f"{prefix}.bias"] = _np(module.bias)

    if token_head is not None:
        import numpy as np

        linear("token", getattr(model, token_head))
        if "token.bias" not in heads:
            heads["token.bias"] = np.zeros(heads["token.weight"].shape[0], dtype=np.float32)
        return heads

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


def _int_or_list(value: object) -> int | list[int] | None:
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return int(value) if isinstance(value, int) else None


def _write_extras(folder: Path, quantization: str, tmp: Path, captured: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    config = captured["config"]
    heads: dict[str, FloatArray] = captured["heads"]
    model_type = config.model_type
    seq2seq = model_type in SEQ2SEQ_TYPES
    if seq2seq and getattr(captured["tokenizer"], "backend_tokenizer", None) is None:
        _copy_source_tokenizer(captured["tokenizer"], tmp / cache.SOURCE_TOKENIZER_DIR)
    else:
        export_tokenizer(captured["tokenizer"], tmp)
    save_file(heads, str(tmp / cache.HEADS_FILE))
    raw = cache.read_json(folder / "config.json")
    generation = (
        cache.read_json(folder / "generation_config.json") if (folder / "generation_config.json").is_file() else None
    )
    if model_type == "roberta":
        max_positions = int(config.max_position_embeddings) - (int(config.pad_token_id or 1) + 1)
    elif model_type == "gpt2":
        max_positions = int(config.n_positions)
    elif model_type in ("t5", "mt5", "umt5"):
        max_positions = 0  # relative positions: no limit of the model's own
    else:
        max_positions = int(config.max_position_embeddings)
    token_head = captured.get("token_head")
    labelled = token_head == "classifier"  # a token classifier's labels, kept as a sequence classifier's are
    classifier = None
    if "classifier.weight" in heads:
        classifier = "bert"
    elif "classifier.out_proj.weight" in heads:
        classifier = "roberta"
    meta = {
        "format": cache.FORMAT,
        "model_type": model_type,
        "architectures": raw.get("architectures"),
        "loaded_class": captured["class"],
        "kind": "encoder" if model_type in ENCODER_TYPES else "seq2seq" if seq2seq else "decoder",
        "quantization": quantization,
        "heads": {
            "mlm": "mlm.decoder.weight" in heads,
            "nsp": "nsp.weight" in heads,
            "classifier": classifier,
            "pooler": bool(captured.get("pooler", False)),
        },
        "mlm_activation": "gelu" if model_type == "roberta" else getattr(config, "hidden_act", None),
        "layer_norm_eps": float(getattr(config, "layer_norm_eps", 1e-12) or 1e-12),
        "token_head": token_head,
        "num_labels": int(config.num_labels) if classifier or labelled else None,
        "id2label": {str(k): v for k, v in config.id2label.items()} if classifier or labelled else None,
        "label2id": dict(config.label2id) if classifier or labelled else None,
        "problem_type": getattr(config, "problem_type", None),
        "max_positions": max_positions,
        "learned_positions": model_type != "llama" and max_positions > 0,
        "decoder_start_token_id": _int_or_list(getattr(config, "decoder_start_token_id", None)),
        "generation_config": generation,
        "eos_token_id": _int_or_list(getattr(config, "eos_token_id", None)),
        "bos_token_id": _int_or_list(getattr(config, "bos_token_id", None)),
        "pad_token_id": _int_or_list(getattr(config, "pad_token_id", None)),
        "vocab_size": int(config.vocab_size),
        "source": str(folder),
    }
    (tmp / cache.MODEL_META).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _copy_source_tokenizer(tokenizer: PreTrainedTokenizerBase, where: Path) -> None:
    """A tokenizer without a ``tokenizers`` backend (Marian's pair of sentencepiece models), saved as
    Transformers saves it: the CTranslate2 engine loads it from there (Transformers, without torch)."""
    where.mkdir(parents=True)
    tokenizer.save_pretrained(str(where))


def _write_manifest(tmp: Path, key: str, folder: Path, quantization: str, root: Path) -> None:
    import ctranslate2

    try:
        files: dict[str, Any] = {}
        for path in cache.all_files(tmp):
            cache.fsync_path(path)
            st = path.stat()
            files[path.relative_to(tmp).as_posix()] = {
                "size": st.st_size,
                "sha256": cache.file_sha256(path),
                "stat": cache.stat_sig(st),
            }
        manifest = {
            "format": cache.FORMAT,
            "key": key,
            "source": str(folder),
            "quantization": quantization,
            "ctranslate2_version": ctranslate2.__version__,
            "created": time.time(),
            "files": files,
        }
        cache.atomic_write_json(tmp / cache.ENTRY_FILE, manifest)
        for sub in sorted({p.parent for p in cache.all_files(tmp)}, key=lambda p: len(p.parts), reverse=True):
            cache.fsync_path(sub)
    except OSError as exc:
        raise cache.cache_error(root, exc) from exc
