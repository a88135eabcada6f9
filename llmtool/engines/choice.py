"""Which engine runs an inference command, and opening it: the one place the choice is made.

Every inference command's single entry (``fill_mask.fill_mask``, ``generate.generate``, ...) calls
:func:`prepare`, then :func:`open_encoder` or :func:`open_decoder` with a function that loads the
model for the torch engine (with the command's own checks). What comes back is :class:`Opened`: a
tokenizer and an engine with the interface of :mod:`llmtool.engines.base`.

``--engine auto`` (the default; on the command line also ``LLMTOOL_ENGINE``) runs CTranslate2 when
it can run the model's architecture, the device and every option asked for, else torch, silently unless
``--verbose`` (one line says which engine ran and why). ``--engine ctranslate2`` asked for
something it cannot do is a usage error naming the reason. Models are converted on first use
(:mod:`llmtool.engines.ct2.convert`); a large one (over ``LLMTOOL_CONVERT_MAX``, 2 GB of weights) is not converted
unasked: ``auto`` runs torch and says once how to convert it.

The CTranslate2 path imports neither torch nor transformers once the model is converted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeAlias, TypeVar

from llmtool.engines.base import DecoderEngine, EncoderEngine, Seq2SeqEngine, Tokenizer
from llmtool.errors import LlmtoolError, ModelError, UsageError
from llmtool.io.console import say
from llmtool.models import ModelRef, locate, prepare_environment, prepare_streaming
from llmtool.settings import ModelOptions
from llmtool.tasks.registry import engine_tasks

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# ref -> (tokenizer, Transformers model), with the command's own checks
LoadedModel: TypeAlias = "tuple[PreTrainedTokenizerBase, PreTrainedModel]"  # what a torch loader returns
TorchLoader = Callable[[ModelRef], LoadedModel]
Engine = TypeVar("Engine", EncoderEngine, DecoderEngine, Seq2SeqEngine)
# The engine task keys each kind of engine runs, from the registry (one entry per command).
ENCODER_TASKS, DECODER_TASKS = engine_tasks("encoder"), engine_tasks("decoder")


def prepare(options: ModelOptions) -> ModelRef:
    """The first steps of every inference command: the libraries' switches, then the model located
    (failing fast, before any heavy import, when it is missing or not cached)."""
    prepare_environment(options.offline, options.verbose)
    prepare_streaming()
    return locate(options)


class Opened(NamedTuple, Generic[Engine]):
    """A tokenizer and the engine that runs the model: ``tokenizer, engine = open_encoder(...)``."""

    tokenizer: Tokenizer
    engine: Engine


def open_encoder(ref: ModelRef, task: str, load_torch: TorchLoader) -> Opened[EncoderEngine]:
    """(tokenizer, encoder engine) for fill-mask, classify, next-sentence and masked-LM scoring."""

    def load_ct2(entry: Path, device: str, compute_type: str) -> EncoderEngine:
        from llmtool.engines.ct2.encoder import load_encoder

        return load_encoder(entry, device, compute_type, task=task, config=config_of(ref))

    opened = _open_ct2(ref, task, load_ct2)
    if opened is not None:
        return opened
    from llmtool.engines.torch_engine import TorchEncoder

    tokenizer, model = load_torch(ref)
    engine: EncoderEngine = TorchEncoder(tokenizer, model)
    return Opened(tokenizer, engine)


def open_decoder(ref: ModelRef, task: str, load_torch: TorchLoader) -> Opened[DecoderEngine]:
    """(tokenizer, decoder engine) for generate and causal-LM scoring."""

    def load_ct2(entry: Path, device: str, compute_type: str) -> DecoderEngine:
        from llmtool.engines.ct2.decoder import load_decoder

        return load_decoder(entry, device, compute_type, config=config_of(ref))

    opened = _open_ct2(ref, task, load_ct2)
    if opened is not None:
        return opened
    from llmtool.engines.torch_engine import TorchDecoder

    tokenizer, model = load_torch(ref)
    engine: DecoderEngine = TorchDecoder(tokenizer, model)
    return Opened(tokenizer, engine)


def open_seq2seq(ref: ModelRef, task: str, load_torch: TorchLoader) -> Opened[Seq2SeqEngine]:
    """(tokenizer, encoder-decoder engine) for translate, summarize and seq2seq scoring."""

    def load_ct2(entry: Path, device: str, compute_type: str) -> Seq2SeqEngine:
        from llmtool.engines.ct2.seq2seq import load_seq2seq

        return load_seq2seq(entry, device, compute_type, config=config_of(ref))

    opened = _open_ct2(ref, task, load_ct2)
    if opened is not None:
        return opened
    from llmtool.engines.torch_engine import TorchSeq2Seq

    tokenizer, model = load_torch(ref)
    engine: Seq2SeqEngine = TorchSeq2Seq(tokenizer, model)
    return Opened(tokenizer, engine)


def entry_tokenizer(entry: Path) -> Tokenizer:
    """The tokenizer of a CTranslate2 entry: the ``tokenizers``-only one; for Marian's sentencepiece pair
    (no ``tokenizers`` backend), :class:`~llmtool.engines.ct2.marian_tokenizer.MarianSentencePiece` over
    the entry's copy of its files; another tokenizer without a backend, Transformers' own from its copy."""
    from llmtool.engines.ct2.cache import SOURCE_TOKENIZER_DIR
    from llmtool.engines.ct2.tokenizer import load_tokenizer

    copied = entry / SOURCE_TOKENIZER_DIR
    if not copied.is_dir():
        return load_tokenizer(entry)
    if (copied / "source.spm").is_file() and (copied / "vocab.json").is_file():
        from llmtool.engines.ct2.marian_tokenizer import MarianSentencePiece

        return MarianSentencePiece(copied)  # sentencepiece alone: no torch, no Transformers
    import warnings

    from transformers import AutoTokenizer

    with warnings.catch_warnings():  # MarianTokenizer recommends sacremoses (punctuation normalising) each time
        warnings.simplefilter("ignore")
        tokenizer: Tokenizer = AutoTokenizer.from_pretrained(str(copied))
    return tokenizer


def config_of(ref: ModelRef) -> dict[str, Any] | None:
    """The model's config.json as a dict, read from disk (no transformers import); None if not on disk."""
    if ref.folder is None:
        return None
    try:
        config = json.loads((ref.folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def generation_config_of(ref: ModelRef) -> dict[str, Any] | None:
    """The model's generation_config.json as a dict, read from disk as plain JSON (either engine, no
    transformers import); None when the model has none on disk or it cannot be read."""
    if ref.folder is None:
        return None
    try:
        config = json.loads((ref.folder / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def model_config(ref: ModelRef) -> Any:
    """The model's config, enough to tell what kind of model it is: read from config.json when it names
    its architecture (no transformers import), else from Transformers' ``AutoConfig``."""
    config = config_of(ref)
    if config is not None and config.get("architectures"):
        return SimpleNamespace(**config)
    from llmtool.models import load_config

    return load_config(ref)


# --------------------------------------------------------------------------- the choice


def ct2_plan(ref: ModelRef, task: str) -> tuple[str, str, str] | str:
    """Where CTranslate2 would run ``task`` (device, entry quantization, compute type), or why it cannot."""
    opts = ref.options
    if ref.folder is None:
        return "the model is not on disk yet (the torch engine downloads it)"
    if opts.trust_remote_code:
        return "--trust-remote-code models run their own code, under torch"
    from llmtool.adapters import is_adapter

    if is_adapter(ref.folder):
        return (
            "it is a LoRA adapter, which runs under torch; for CTranslate2, write a full model with "
            f"`llmtool merge {ref.name} --output MERGED`"
        )
    if not any(ref.folder.glob("*.safetensors")):
        return "the CTranslate2 converter reads safetensors weights, and the model has none"
    config = config_of(ref)
    if config is None:
        return "config.json could not be read"
    try:
        from llmtool.engines.ct2.support import supported
    except ImportError:
        return "the ctranslate2 package is not installed (pip install ctranslate2)"
    reason = supported(config, task)
    return reason if reason is not None else _placement(opts)


def _placement(opts: ModelOptions) -> tuple[str, str, str] | str:
    """(device, entry quantization, compute type) for CTranslate2, or why it cannot place the model so."""
    import ctranslate2

    spec = opts.device.strip().lower()
    dtype = opts.dtype.strip().lower()
    if spec not in ("auto", "cpu", "cuda", "mps") and not spec.startswith("cuda:"):
        return f"unknown --device {spec!r}"
    cuda = ctranslate2.get_cuda_device_count() if spec in ("auto", "cuda") or spec.startswith("cuda") else 0
    if spec == "mps":
        return "CTranslate2 does not run on Apple MPS"
    if spec.startswith("cuda") and spec not in ("cuda", "cuda:0"):
        return f"--device {spec}: llmtool runs CTranslate2 on the first CUDA device only"
    device = "cuda" if spec.startswith("cuda") or (spec == "auto" and cuda > 0) else "cpu"
    if device == "cuda" and cuda == 0:
        return "CTranslate2 finds no CUDA device"
    if device == "cpu":
        if dtype not in ("auto", "float32"):
            return f"--dtype {dtype} on the CPU runs under torch (CTranslate2 runs float32 or int8 there)"
        return ("cpu", "int8", "int8") if opts.quantize == "int8" else ("cpu", "float32", "float32")
    if opts.quantize == "int8":
        return "cuda", "int8", "int8_float16"
    if dtype == "auto":
        dtype = "bfloat16" if "bfloat16" in ctranslate2.get_supported_compute_types("cuda") else "float16"
    return "cuda", "float32", dtype


def _open_ct2(ref: ModelRef, task: str, load: Callable[[Path, str, str], Engine]) -> Opened[Engine] | None:
    """The tokenizer and CTranslate2 engine for ``task`` (``load(entry, device, compute type)``), or None
    when torch runs it (``auto``)."""
    opts = ref.options
    if opts.engine == "torch":
        _note(opts, "engine: torch (--engine torch)")
        return None
    explicit = opts.engine == "ctranslate2"
    plan = ct2_plan(ref, task)
    if isinstance(plan, str):
        if explicit:
            raise UsageError(f"--engine ctranslate2 cannot run {ref.name}: {plan}")
        _note(opts, f"engine: torch ({plan})")
        return None
    device, quantization, compute_type = plan
    from llmtool.engines.ct2.cache import CacheError, default_convert_max
    from llmtool.engines.ct2.convert import ensure_entry
    from llmtool.models import check_tokenizer_files, model_error

    assert ref.folder is not None
    check_tokenizer_files(ref)
    damaged = _unreadable_weights(ref.folder)
    if damaged is not None:  # said by the torch engine under auto, in its words; here when asked for
        if explicit:
            raise ModelError(f"{damaged}: corrupt or truncated weights")
        return None
    try:
        limit = None if explicit else default_convert_max()
        entry = ensure_entry(ref.folder, quantization, convert_max_bytes=limit, allow_convert=explicit)
        tokenizer: Tokenizer = entry_tokenizer(entry)
        engine = load(entry, device, compute_type)
    except CacheError as exc:
        if explicit:
            raise
        _note(opts, f"engine: torch (the CTranslate2 cache cannot be used: {exc})")
        return None
    except LlmtoolError as exc:
        if explicit or not isinstance(exc, ModelError) or "llmtool cache add" not in str(exc):
            raise
        say(str(exc))  # too large to convert unasked: said once, and torch runs it
        return None
    except Exception as exc:  # the converter failed on these weights (corrupt, truncated, unexpected)
        if explicit:
            raise model_error(exc, ref.source, "model") from exc
        _note(opts, f"engine: torch (CTranslate2 could not convert the model: {type(exc).__name__})")
        return None
    _note(opts, f"engine: ctranslate2 ({compute_type} on {device}; {entry})")
    return Opened(tokenizer, engine)


def _unreadable_weights(folder: Path) -> Path | None:
    """The first safetensors file whose header cannot be read (checked before a conversion starts), or None."""
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except Exception:
            return path
    return None


def _note(opts: ModelOptions, line: str) -> None:
    if opts.verbose:
        say(line)
