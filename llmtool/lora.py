"""LoRA through PEFT: wrap a model for ``finetune --lora``, recognise and load adapter folders, merge them.

An adapter folder, as ``finetune --lora`` writes it, is a standard PEFT adapter
(``adapter_config.json`` naming the base model in ``base_model_name_or_path``, and
``adapter_model.safetensors``, which also holds the fully trained classification head,
PEFT's ``modules_to_save``) plus what llmtool needs beside it: the tokenizer, ``config.json``
(the base model's config with the label names), ``llmtool_settings.json`` and ``metrics.json``.

Plain PEFT code loads it (``AutoPeftModelForSequenceClassification.from_pretrained(DIR,
num_labels=N)``); every llmtool inference command takes it as ``--model DIR``: the base model is
located under the same rules as any model (offline, cache), the adapter applied and merged into
its weights in memory, so inference runs at the base model's speed. The CTranslate2 engine converts
full models only: ``llmtool merge DIR --output OUT`` writes one. Recognising and applying an adapter
folder is :mod:`llmtool.adapters` (which :mod:`llmtool.models` uses); this module trains and merges.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from llmtool.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, adapter_config, apply, base_options, is_adapter
from llmtool.errors import UsageError
from llmtool.models import ModelRef, load_config, load_model, load_tokenizer, locate, offline_mode, prepare_environment

# The attention projections LoRA adapts by default, per model type (the LoRA paper adapts the
# query and value projections; adapting all of attention costs little more and learns more).
DEFAULT_TARGETS: dict[str, list[str]] = {
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "xlm-roberta": ["query", "key", "value"],
    "camembert": ["query", "key", "value"],
    "electra": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "bart": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "mbart": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "marian": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "t5": ["q", "k", "v", "o"],
}


def targets_for(model_type: str, asked: list[str] | None) -> list[str]:
    """The modules LoRA adapts: as asked (--lora-targets), else the default for the architecture."""
    if asked:
        return asked
    found = DEFAULT_TARGETS.get(model_type)
    if found is None:
        raise UsageError(
            f"--lora has no default target modules for {model_type!r} models; name them with --lora-targets "
            "(e.g. --lora-targets q_proj,v_proj)"
        )
    return found


def lora_config(settings: Any, task_type: str | None, model_type: str, new_modules: list[str] | None = None) -> Any:
    """PEFT's ``LoraConfig`` from the finetune settings and the objective's PEFT task type (its recipe's);
    ``new_modules`` are trained and saved in full."""
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets_for(model_type, settings.lora_targets),
        task_type=task_type,
        modules_to_save=list(new_modules) if new_modules else None,
        # GPT-2's Conv1D stores its weight transposed; PEFT must know (it warns and sets this itself).
        fan_in_fan_out=model_type == "gpt2",
    )


def new_modules(missing_keys: list[str]) -> list[str]:
    """The modules whose weights the base checkpoint lacked (drawn afresh, as a BERT's pooler under a new
    classification head): they must be trained and saved in full, or the adapter would not rebuild them."""
    return sorted({key.rsplit(".", 1)[0] for key in missing_keys if "." in key})


def wrap(
    model: Any, settings: Any, task_type: str | None, base_name: str, revision: str | None, missing_keys: list[str]
) -> Any:
    """The model with LoRA adapters (frozen base); the classification head (and any other module the
    base checkpoint lacked) stays fully trainable and is saved with the adapter."""
    from peft import get_peft_model

    config = lora_config(settings, task_type, model.config.model_type, new_modules(missing_keys))
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as exc:  # a target module that the model does not have
        text = " ".join(str(exc).split())
        raise UsageError(f"--lora-targets: {text[:300]}") from None
    peft_config = wrapped.peft_config["default"]
    peft_config.base_model_name_or_path = base_name
    peft_config.revision = revision
    return wrapped


def parameter_counts(model: Any) -> dict[str, int]:
    """Trainable and total parameters (a PEFT model counts its frozen base in the total)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable": int(trainable), "total": int(total)}


def base_name(ref: Any) -> str:
    """How the adapter names its base model: a local folder by its absolute path, a Hub id as is."""
    return str(ref.folder.resolve()) if ref.folder is not None and ref.source == str(ref.folder) else ref.name


# --------------------------------------------------------------------------- merging


def merged_model(adapted: Any, base_ref: Any) -> Any:
    """A PEFT model merged into a full model to save: of the base's own architecture where that holds
    more than the task's (an mlm adapter on a BERT pre-trained with next-sentence prediction keeps the
    base's pooler and next-sentence head: a BertForPreTraining), else of the task's."""
    merged = adapted.merge_and_unload()
    fuller = _fuller_class(merged, base_ref)
    if fuller is not None:
        full, _ = load_model(fuller, base_ref, config=merged.config, missing_keys=True)
        state = merged.state_dict()
        if set(state) <= set(full.state_dict()):  # the same layout: the base's extra heads come from the base
            full.load_state_dict(state, strict=False)
            merged = full
    merged.config.architectures = [type(merged).__name__]
    merged.eval()
    return merged


def _fuller_class(merged: Any, base_ref: Any) -> Any:
    """AutoModelForPreTraining when a masked LM's base checkpoint is a pre-training model, else None."""
    if not type(merged).__name__.endswith("ForMaskedLM"):
        return None
    architectures = getattr(load_config(base_ref), "architectures", None) or [""]
    if not str(architectures[0]).endswith("ForPreTraining"):
        return None
    import transformers

    return transformers.AutoModelForPreTraining


def _adapted(auto_class: Any, ref: ModelRef) -> tuple[Any, ModelRef]:
    """The PEFT model of the adapter folder ``ref.folder`` on its base (unmerged), and the base's ModelRef."""
    folder = ref.folder
    assert folder is not None
    base_ref = locate(base_options(folder, ref.options))
    config = load_config(ref)  # the adapter folder's config.json: the base config with the label names
    model, _ = load_model(auto_class, base_ref, config=config, missing_keys=True)
    return apply(model, folder, base_ref.name), base_ref


def merge(adapter_dir: str, output_dir: str, opts: Any) -> dict[str, Any]:
    """Write the adapter in ``adapter_dir`` merged into its base model as a full model in ``output_dir``
    (safetensors, with the tokenizer and llmtool's JSON files), which any engine can run."""
    import shutil

    folder = Path(adapter_dir).expanduser()
    if not is_adapter(folder):
        raise UsageError(f"{adapter_dir}: not an adapter folder (no {ADAPTER_CONFIG}); is it already a full model?")
    out = Path(output_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"--output {out} exists and is not an empty folder")
    prepare_environment(opts.offline, opts.verbose)
    opts = dataclasses.replace(opts, model=str(folder), device="cpu", dtype="float32", engine="torch")
    ref = ModelRef(opts, str(folder), offline_mode(opts), folder)
    model = merged_model(*_adapted(auto_class_of(folder), ref))
    tokenizer = load_tokenizer(ref)
    tmp = out.parent / f".{out.name}.llmtool-merge"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        for name in ("llmtool_settings.json", "metrics.json"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    config = adapter_config(folder)
    return {"model": str(out), "base_model": config["base_model_name_or_path"], "adapter": str(folder)}


def auto_class_of(folder: Path) -> Any:
    """The Auto class an adapter folder's model is loaded with (from the architecture in its config.json)."""
    import transformers

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    arch = (config.get("architectures") or [""])[0]
    for suffix, cls in (
        ("ForSequenceClassification", transformers.AutoModelForSequenceClassification),
        ("ForMaskedLM", transformers.AutoModelForMaskedLM),
        ("ForTokenClassification", transformers.AutoModelForTokenClassification),
        ("ForQuestionAnswering", transformers.AutoModelForQuestionAnswering),
    ):
        if arch.endswith(suffix):
            return cls
    return transformers.AutoModelForCausalLM


def finish_output(model: Any, folder: Path, base_ref: Any, *, merge: bool = False) -> None:
    """Complete the final folder Trainer saved the adapter in: ``config.json`` (the base model's config,
    with the label names and the task's architecture), or with ``merge`` the merged full model instead
    (:func:`merged_model`, as ``llmtool merge`` writes it)."""
    base = model.get_base_model()
    base.config.architectures = [type(base).__name__]
    if not merge:
        base.config.save_pretrained(str(folder))
        return
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, "README.md"):
        (folder / name).unlink(missing_ok=True)
    merged_model(model, base_ref).save_pretrained(str(folder))
