"""What llmtool runs with the CTranslate2 engine: the table of architectures and tasks, and the
settings in config.json that CTranslate2 cannot convert (read without importing ctranslate2)."""

from __future__ import annotations

from typing import Any

SEQ2SEQ_TASKS = ("translate", "summarize", "score-seq2seq")  # run by ctranslate2.Translator
TASKS: tuple[str, ...] = ("fill-mask", "generate", "score-clm", "score-mlm", "classify", "next-sentence", "tag", "qa")
TASKS += SEQ2SEQ_TASKS

# What llmtool runs with this engine: model_type -> architecture -> tasks.
_ARCHITECTURES: dict[str, dict[str, tuple[str, ...]]] = {
    "bert": {
        "BertForMaskedLM": ("fill-mask", "score-mlm"),
        "BertForPreTraining": ("fill-mask", "score-mlm", "next-sentence"),
        "BertForNextSentencePrediction": ("next-sentence",),
        "BertForSequenceClassification": ("classify",),
        "BertModel": (),
        "BertForTokenClassification": ("tag",),
        "BertForQuestionAnswering": ("qa",),
    },
    "roberta": {
        "RobertaForMaskedLM": ("fill-mask", "score-mlm"),
        "RobertaForSequenceClassification": ("classify",),
        "RobertaModel": (),
        "RobertaForTokenClassification": ("tag",),
        "RobertaForQuestionAnswering": ("qa",),
    },
    "gpt2": {"GPT2LMHeadModel": ("generate", "score-clm")},
    "llama": {"LlamaForCausalLM": ("generate", "score-clm")},
    "t5": {"T5ForConditionalGeneration": SEQ2SEQ_TASKS},
    "mt5": {"MT5ForConditionalGeneration": SEQ2SEQ_TASKS},
    "bart": {"BartForConditionalGeneration": SEQ2SEQ_TASKS},
    "mbart": {"MBartForConditionalGeneration": SEQ2SEQ_TASKS},
    "marian": {"MarianMTModel": SEQ2SEQ_TASKS},
    "m2m_100": {"M2M100ForConditionalGeneration": SEQ2SEQ_TASKS},  # M2M100 and NLLB
}
ENCODER_TYPES = ("bert", "roberta")  # converted as encoders (with their heads); the others are decoders
SEQ2SEQ_TYPES = ("t5", "mt5", "bart", "mbart", "marian", "m2m_100")  # encoder-decoders (ctranslate2.Translator)
# Activations CTranslate2's converter maps (and :func:`llmtool.engines.ct2.runtime.activation` computes for the heads).
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


def supported(config_dict: dict[str, Any], task: str) -> str | None:
    """None if this engine runs ``task`` for a model with this config.json, else a short reason."""
    if task == "embed" and config_dict.get("model_type") in ENCODER_TYPES:  # any head: the encoder's states
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
        if model_type not in ENCODER_TYPES and arch.endswith("ForSequenceClassification"):
            return "decoder classifiers need the torch engine"
        return f"ctranslate2 does not convert {arch} for llmtool"
    if task not in known[arch]:
        return f"{arch} has no head for {task} in the ctranslate2 engine"
    return _config_problem(config_dict)


def _config_problem(config: dict[str, Any]) -> str | None:
    model_type = config.get("model_type")
    if model_type in ENCODER_TYPES:
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
    elif model_type in ("t5", "mt5"):
        if config.get("dense_act_fn", config.get("feed_forward_proj", "relu").split("-")[-1]) not in _ACTIVATIONS:
            return f"ctranslate2 does not convert the {config.get('dense_act_fn')} activation"
    elif model_type in SEQ2SEQ_TYPES:
        if config.get("activation_function", "gelu") not in _ACTIVATIONS:
            return f"ctranslate2 does not convert the {config.get('activation_function')} activation"
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
