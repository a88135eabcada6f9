"""Find and load a model and its tokenizer: Hub id or folder, offline, device, dtype, safe weights.

Every command loads through here, so the safety rules live in one place: weights come from
safetensors files unless ``allow_pickle`` is set, and remote code runs only when asked.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.errors import MissingHeadError, ModelError, UsageError, one_line
from llmtool.settings import DTYPES, ModelOptions

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from llmtool.engines.base import Tokenizer

DEVICES_HELP = "auto|cpu|cuda[:N]|mps"
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


@dataclass(frozen=True)
class ModelRef:
    """A located model: what to load from, resolved once by :func:`locate` (immutable).

    ``source`` is the local folder, or the Hub id; ``local_files_only`` is True offline, and also
    when the Hub cache already holds the whole model, so that loading never waits on the network.
    """

    options: ModelOptions
    source: str
    local_files_only: bool
    folder: Path | None = None  # the files on disk: the local folder, or the model's snapshot in the Hub cache

    @property
    def name(self) -> str:
        return self.options.model

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments every ``from_pretrained`` call takes."""
        return {
            "revision": self.options.revision,
            "trust_remote_code": self.options.trust_remote_code,
            "local_files_only": self.local_files_only,
        }


def prepare_environment(offline: bool = False, verbose: bool = False) -> None:
    """Set the libraries' switches before they are imported: they read them at import time."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import warnings

        warnings.filterwarnings("ignore", module=r"(transformers|torch|huggingface_hub|accelerate)(\..*)?")
    if sys.modules.get("transformers") is not None:
        _set_library_verbosity(verbose)


def prepare_streaming() -> None:
    """Keep an inference command's memory flat however long its input (before torch is imported).

    oneDNN, under PyTorch's CPU matrix products, caches up to 1,024 kernels, one per input shape
    with its scratch memory; batches of piped lines come in ever-new shapes, so the cache grew
    with the input: fill-mask with a tiny BERT peaked at 570 MB on 30,000 lines against 499 MB on
    1,000. Without the cache: 480 MB and 474 MB, at the same speed for bert-base and GPT-2
    (bench/changes.md). A value set by the user wins.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "0")


def _set_library_verbosity(verbose: bool) -> None:
    import transformers
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    from huggingface_hub.utils import logging as hub_logging

    if verbose:
        transformers.logging.set_verbosity_warning()
        hub_logging.set_verbosity_warning()
        enable_progress_bars()
    else:
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        hub_logging.set_verbosity_error()
        disable_progress_bars()


def offline_mode(opts: ModelOptions) -> bool:
    return opts.offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def looks_like_path(name: str) -> bool:
    """A Hub id is ``name`` or ``owner/name``; anything else that names a folder is a path."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or Path(name).expanduser().exists()
    )


def locate(opts: ModelOptions) -> ModelRef:
    """Where the model is, after the cheap checks that fail fast and clearly (before heavy imports)."""
    opts.check()
    name = opts.model
    if looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelError(f"model folder {name} does not exist")
        if not folder.is_dir():
            raise ModelError(f"model {name} is a file; pass the folder that holds config.json")
        config = folder / "config.json"
        if not config.is_file():
            raise ModelError(f"{config}: missing; is {name} a model folder (one written by save_pretrained)?")
        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"{config}: not valid JSON ({one_line(str(exc))})") from None
        return ModelRef(opts, str(folder), offline_mode(opts), folder)
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import ENDPOINT, HF_HUB_CACHE

    cached = try_to_load_from_cache(name, "config.json", revision=opts.revision)
    snapshot = Path(cached).parent if isinstance(cached, str) else None
    missing = missing_files(snapshot) if snapshot is not None else ["config.json"]
    if not missing:
        # Load from the cache without a network round trip: a CLI in a pipe or CI should not
        # depend on the Hub being up for a model it already has. `hf download` refreshes it.
        return ModelRef(opts, name, True, snapshot)
    if offline_mode(opts):
        if snapshot is not None:  # an interrupted download: say what is missing
            raise ModelError(
                f"model {name!r} is only partly in the local cache ({snapshot}): {', '.join(missing)} missing, "
                f"and offline mode is on; fetch it once with network (`hf download {name}`)"
            )
        raise ModelError(
            f"model {name!r} is not in the local cache ({HF_HUB_CACHE}) and offline mode is on; "
            f"fetch it once with network (`hf download {name}`), or pass a local folder to --model"
        )
    if not _reachable(ENDPOINT):
        # Fail in seconds; the Hub client would otherwise retry with back-off for about a minute.
        state = (
            "is not in the local cache" if snapshot is None else f"is only partly cached ({', '.join(missing)} missing)"
        )
        raise ModelError(
            f"model {name!r} {state} and {ENDPOINT} cannot be reached; check the network (or proxy "
            "settings, or HF_ENDPOINT for a mirror), or pass a local folder to --model"
        )
    return ModelRef(opts, name, False, None)


WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def missing_files(folder: Path) -> list[str]:
    """What a model folder lacks to be loaded without the network: config, weights (every shard), tokenizer."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    index = next((folder / n for n in WEIGHT_FILES if n.endswith(".json") and (folder / n).is_file()), None)
    if index is not None:
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError):
            shards = []
        missing += [s for s in shards if not (folder / s).is_file()]
    elif not any((folder / n).is_file() for n in WEIGHT_FILES) and not any(folder.glob("*.safetensors")):
        missing.append("the weights (model.safetensors)")
    if not any((folder / n).is_file() for n in TOKENIZER_FILES):
        missing.append("the tokenizer (tokenizer.json)")
    return missing


def _reachable(endpoint: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the Hub opens; proxies configured by environment count as reachable."""
    import socket
    from urllib.parse import urlparse

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_device(spec: str) -> torch.device:
    import torch

    spec = spec.strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown --device {spec!r}; use {DEVICES_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA GPU is available here (try --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise UsageError("--device mps: Apple MPS is not available here")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"unsupported --device {spec!r}; use {DEVICES_HELP}")
    return device


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    import torch

    spec = spec.strip().lower()
    if spec not in DTYPES:
        raise UsageError(f"unknown --dtype {spec!r}; use {'|'.join(DTYPES)}")
    if spec == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.float32
    dtype: torch.dtype = getattr(torch, spec)
    if dtype == torch.float16 and device.type == "cpu":
        raise UsageError("--dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return dtype


def check_tokenizer_files(ref: ModelRef) -> None:
    """A model folder must hold its tokenizer: Transformers 5 would build an empty one from the
    config (and the CTranslate2 converter with it), which predicts nonsense."""
    if ref.folder is not None and not any((ref.folder / name).exists() for name in TOKENIZER_FILES):
        raise ModelError(f"{ref.folder}: no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")


def load_tokenizer(ref: ModelRef, **kwargs: Any) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    check_tokenizer_files(ref)
    try:
        return AutoTokenizer.from_pretrained(ref.source, **ref.kwargs(), **kwargs)
    except Exception as exc:
        raise model_error(exc, ref.source, "tokenizer") from exc


def load_config(ref: ModelRef) -> Any:
    """The model's config alone (no weights): enough to tell what kind of model it is, cheaply."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref.source, **ref.kwargs())
    except Exception as exc:
        raise model_error(exc, ref.source, "config") from exc


def load_model(
    auto_class: Any, ref: ModelRef, *, require_head: str | None = None, missing_keys: bool = False, **kwargs: Any
) -> Any:
    """Load weights with ``auto_class`` (an ``AutoModelFor*``), move them, and set eval mode.

    ``require_head`` names the head the task needs (e.g. "sequence-classification head"). When
    given, weights missing from the checkpoint are a ModelError instead of Transformers' silent
    random initialisation, which would give confident-looking nonsense (a masked LM loaded as a
    classifier, a BERT without its next-sentence head). ``missing_keys``: return (model, the
    weights the checkpoint lacked) instead, unchecked. A LoRA adapter folder (:mod:`llmtool.lora`)
    loads as its base model with the adapter merged in.
    """
    opts = ref.options
    device = resolve_device(opts.device)
    dtype = resolve_dtype(opts.dtype, device)
    from llmtool.adapters import base_options, is_adapter, merged

    if is_adapter(ref.folder):
        base_ref = locate(base_options(ref.folder, opts))
        base, missing = load_model(auto_class, base_ref, config=load_config(ref), missing_keys=True, **kwargs)
        adapted = merged(base, missing, ref.folder, base_ref.name, require_head)
        adapted.to(device)
        return (adapted, []) if missing_keys else adapted
    _refuse_pickle_only(ref)
    try:
        loaded = auto_class.from_pretrained(
            ref.source,
            dtype=dtype,
            use_safetensors=None if opts.allow_pickle else True,
            output_loading_info=require_head is not None or missing_keys,
            **ref.kwargs(),
            **kwargs,
        )
    except Exception as exc:
        raise model_error(exc, ref.source, "model") from exc
    model = loaded
    if require_head is not None or missing_keys:
        model, info = loaded
        if not missing_keys:
            _check_complete(model, info, ref.source, require_head or "")
    model.to(device)
    model.eval()
    if missing_keys:
        return model, sorted(info.get("missing_keys") or [])
    return model


def load(auto_class: Any, ref: ModelRef, **model_kwargs: Any) -> tuple[PreTrainedTokenizerBase, Any]:
    """Tokenizer and model, both from the same located source."""
    return load_tokenizer(ref), load_model(auto_class, ref, **model_kwargs)


def ensure_pad_token(tokenizer: Tokenizer, name: str) -> int:
    """The pad id batches are padded with: the tokenizer's own, else its end-of-text token (GPT-2 has
    no pad token; padded positions are masked out, so which token stands there does not matter)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ModelError(f"{name}: the tokenizer has neither a pad nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.pad_token_id is None:  # a tokenizer whose pad id does not follow its pad token
            tokenizer.pad_token_id = tokenizer.eos_token_id
    return int(tokenizer.pad_token_id)


def architecture(config: object) -> str:
    """What a checkpoint is, for messages: the class that saved it (config.json), else its model type."""
    recorded = getattr(config, "architectures", None) or []
    return str(recorded[0]) if recorded else f"{getattr(config, 'model_type', 'unknown')} model"


def supports_task(config: object, mapping: str) -> bool:
    """Whether Transformers has a class for this model type in ``mapping`` (an ``MODEL_FOR_*_MAPPING_NAMES``)."""
    from transformers.models.auto import modeling_auto

    return getattr(config, "model_type", None) in getattr(modeling_auto, mapping)


def _check_complete(model: PreTrainedModel, info: dict[str, Any], where: str, head: str) -> None:
    missing = sorted(info.get("missing_keys") or [])
    if not missing:
        return
    kind = architecture(model.config)
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    raise MissingHeadError(f"{where} ({kind}) has no trained {head}: the checkpoint lacks {shown}")


def _refuse_pickle_only(ref: ModelRef) -> None:
    """A local folder with pickled weights only: say so plainly, before Transformers does it vaguely."""
    folder = ref.folder
    if ref.options.allow_pickle or folder is None:
        return
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(p.name for p in folder.glob("*.pt"))
    if pickled:
        raise ModelError(
            f"{folder / pickled[0]}: pickled weights can run arbitrary code when loaded, so llmtool loads "
            "only *.safetensors; pass --allow-pickle if you trust this model"
        )
    raise ModelError(f"{folder}: no model weights (*.safetensors) found")


def model_error(exc: Exception, where: str, what: str) -> Exception:
    """Turn a loading failure into one line naming the model (and the file, when we know it)."""
    if isinstance(exc, ModelError | UsageError):
        return exc
    text = one_line(str(exc))
    names = {c.__name__ for c in type(exc).__mro__}
    if isinstance(exc, ImportError) and "trust_remote_code" not in text:
        return exc  # a missing optional library is an environment problem, reported as is
    if "trust_remote_code" in text:
        return ModelError(f"{where}: this model needs its own code; pass --trust-remote-code if you trust it")
    if "OfflineModeIsEnabled" in names or "LocalEntryNotFoundError" in names or "couldn't connect" in text.lower():
        return ModelError(
            f"cannot reach the Hugging Face Hub to fetch {what} {where!r} and it is not cached; "
            "check the network (or HF_ENDPOINT, for a mirror), or pass a local folder to --model"
        )
    if "RepositoryNotFoundError" in names or "is not a local folder and is not a valid model identifier" in text:
        return ModelError(f"model {where!r} not found: not a local folder, and no such model on the Hub")
    if "RevisionNotFoundError" in names:
        return ModelError(f"model {where!r} has no revision named in --revision")
    if "safetensors" in text.lower() and ("does not appear to have" in text or "use_safetensors" in text):
        return ModelError(
            f"{where}: no safetensors weights; pickled weights can run arbitrary code, so pass "
            "--allow-pickle only if you trust this model"
        )
    if "SafetensorError" in names or "HeaderTooLarge" in text or "deserializ" in text:
        file = next(iter(sorted(Path(where).glob("*.safetensors"))), None) if Path(where).is_dir() else None
        return ModelError(f"{file or where}: corrupt or truncated weights ({text})")
    return ModelError(f"cannot load {what} from {where}: {text}")


def set_seed(seed: int | None) -> None:
    if seed is None:
        return
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def max_input_length(tokenizer: object, model: object) -> int:
    """The longest input, in tokens, that the model takes: its position table and the tokenizer's limit."""
    config = getattr(model, "config", None)
    limits: list[int] = []
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(positions, int) and positions > 0:
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            positions -= (getattr(config, "pad_token_id", None) or 1) + 1  # rows reserved below the pad index
        limits.append(positions)
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    return min(limits) if limits else 512
