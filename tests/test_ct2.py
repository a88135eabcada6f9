"""The CTranslate2 engine (llmtool.engines.ct2) and its torch-free tokenizer (llmtool.engines.ct2.tokenizer).

Everything runs on tiny local models: conversions take a fraction of a second, so the cache's
failure modes (concurrent conversions, a conversion killed midway, damaged entries, an unwritable
cache) are exercised for real, with real processes and real files. The torch side of each
equality check is computed here directly with transformers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_models

from llmtool.engines.ct2.cache import (
    MEMO_FILE,
    MEMO_FORMAT,
    CacheError,
    cache_root,
    default_convert_max,
    entries_dir,
    entry_key,
    list_entries,
    needs_conversion,
    parse_size,
    remove_entries,
    verify_entry,
    weights_bytes,
)
from llmtool.engines.ct2.convert import ensure_entry
from llmtool.engines.ct2.decoder import load_decoder
from llmtool.engines.ct2.encoder import load_encoder
from llmtool.engines.ct2.support import supported
from llmtool.engines.ct2.tokenizer import FastTokenizer, export_tokenizer, load_tokenizer
from llmtool.errors import ModelError, UsageError

LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

TEXTS = [
    "Hello world!",
    "The capital of France is [MASK].",
    "the capital of [MASK] is [MASK] .",
    "  leading, trailing  and  double  spaces  ",
    "你好\uff0c世界",  # a full-width comma
    "中文 mixed with english 和 数字 123",
    "Ünïcödé café naïve résumé",
    "",
    "a",
    "emoji 🙂 here 👍🏽",
    "tabs\tand\nnewlines\r\n",
    "<mask> and <s> inside </s> text",
    "[CLS] [SEP] [PAD] [UNK] as text",
    "don't can't it's we're I'm they've",
    "Hello , world . ok ? yes !",
    "<|endoftext|> mid <|endoftext|>",
    "x" * 150,
    " ".join(["the"] * 40),
    "Once upon a time there lived a king in a castle.",
    "UPPER CASE WORDS and MiXeD",
    "numbers 3.14159 and 1,000,000",
    "punctuation!!! ??? ... ---",
    "zero\u200bwidth and non\u00a0breaking",
    "Ελληνικά και русский",
    "a[MASK]b",
    "https://example.com/path?query=1",
    "  ",
    "the dog and the cat are in the house",
    "[INST] chat-like [/INST]",
    "\u0301combining accent first",
]
PAIRS = [
    ("the capital of france is paris", "it is a city"),
    ("once upon a time there lived a king in a castle", "happy"),
    ("a", "b " * 30),
    ("你好", "世界"),
    ("", "empty first"),
]


# -- tiny models ---------------------------------------------------------------------------------


def build_llama(folder: Path, seed: int = 0) -> Path:
    """A tiny LlamaForCausalLM (grouped-query attention, RoPE theta 5e5) with a Llama-style
    tokenizer: byte-fallback BPE over Metaspace, BOS added, and a Llama-2 style chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    bpe = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    bpe.train_from_iterator(
        tiny_models.CORPUS * 5, trainers.BpeTrainer(vocab_size=600, special_tokens=specials + byte_tokens)
    )
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = LlamaTokenizer(vocab=state["vocab"], merges=merges, add_bos_token=True)
    tokenizer.chat_template = LLAMA_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_roberta_classifier(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    tiny_models.build_roberta(folder, seed)
    config = RobertaConfig.from_pretrained(str(folder))
    config.id2label = {0: "neg", 1: "neutral", 2: "pos"}
    config.label2id = {v: k for k, v in config.id2label.items()}
    config.architectures = None
    torch.manual_seed(seed + 1)
    (folder / "model.safetensors").unlink()
    RobertaForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def build_gpt2_padded(folder: Path, plain: Path) -> Path:
    """GPT-2 whose embeddings have more rows than the tokenizer has tokens (rounded up, as many are)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    shutil.copytree(plain, folder)
    config = GPT2Config.from_pretrained(str(folder))
    config.vocab_size = 416
    torch.manual_seed(1)
    (folder / "model.safetensors").unlink()
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder


def build_bert_nsp(folder: Path, pretraining: Path) -> Path:
    """A BertForNextSentencePrediction checkpoint (NSP head and pooler, no MLM head)."""
    from transformers import BertForNextSentencePrediction

    shutil.copytree(pretraining, folder)
    (folder / "model.safetensors").unlink()
    BertForNextSentencePrediction.from_pretrained(str(pretraining)).save_pretrained(str(folder))
    return folder


class Models:
    """The tiny models, built on first use (a module's worth of tests shares them)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self._built:
            folder = self.root / name
            builders = {
                "bert": lambda: tiny_models.build_bert(folder),
                "roberta": lambda: tiny_models.build_roberta(folder),
                "gpt2": lambda: tiny_models.build_gpt2(folder),
                "gpt2chat": lambda: tiny_models.build_gpt2(folder, chat_template=True),
                "gpt2pad": lambda: build_gpt2_padded(folder, self["gpt2"]),
                "llama": lambda: build_llama(folder),
                "bertcls": lambda: tiny_models.build_bert_classifier(folder, steps=30),
                "bertpre": lambda: tiny_models.build_bert_pretraining(folder, steps=30),
                "bertnsp": lambda: build_bert_nsp(folder, self["bertpre"]),
                "robertacls": lambda: build_roberta_classifier(folder),
                "bertclean": lambda: self._bert_clean_up(folder),
            }
            self._built[name] = builders[name]()
        return self._built[name]

    def _bert_clean_up(self, folder: Path) -> Path:
        shutil.copytree(self["bert"], folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        config["clean_up_tokenization_spaces"] = True
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        return folder

    def copy(self, name: str, where: Path) -> Path:
        shutil.copytree(self[name], where)
        return where


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(tmp_path_factory.mktemp("ct2-models"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One cache for the equality tests (tests of the cache itself get their own)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMTOOL_CACHE", str(tmp_path_factory.mktemp("ct2-cache")))
        yield Path(os.environ["LLMTOOL_CACHE"])


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LLMTOOL_CACHE", str(root))
    return root


def entry_for(models: Models, name: str, quantization: str = "float32") -> Path:
    return ensure_entry(models[name], quantization, notify=lambda line: None)


def child_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"LLMTOOL_CACHE": str(root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    return env


# -- tokenizer -----------------------------------------------------------------------------------


def _hf_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("name", ["bert", "bertclean", "roberta", "gpt2", "gpt2chat", "llama"])
def test_tokenizer_matches_transformers(models: Models, tmp_path: Path, name: str) -> None:
    hf = _hf_tokenizer(models[name])
    export_tokenizer(hf, tmp_path)
    fast = FastTokenizer.load(tmp_path)
    mask = hf.mask_token or "[MASK]"
    texts = [t.replace("[MASK]", mask) for t in TEXTS]
    for kwargs in ({}, {"add_special_tokens": False}, {"truncation": True, "max_length": 7}):
        assert fast(texts, **kwargs) == dict(hf(texts, **kwargs)), kwargs
        for text in texts[:8]:
            assert fast(text, **kwargs) == dict(hf(text, **kwargs)), (text, kwargs)
    firsts, seconds = [a for a, _ in PAIRS], [b for _, b in PAIRS]
    for n in (6, 9, 16, 64):
        expected = dict(hf(firsts, seconds, truncation="longest_first", max_length=n))
        assert fast(firsts, seconds, truncation="longest_first", max_length=n) == expected, n
    assert fast(firsts, seconds) == dict(hf(firsts, seconds))
    assert fast("one sentence", "and another") == dict(hf("one sentence", "and another"))
    if name.startswith("bert"):
        assert "token_type_ids" in fast(texts[0]) and 1 in fast("a", "b")["token_type_ids"]
    else:
        assert "token_type_ids" not in fast(texts[0])
    for ids in hf(texts)["input_ids"]:
        for skip in (False, True):
            assert fast.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), ids
        assert fast.convert_ids_to_tokens(ids) == hf.convert_ids_to_tokens(ids)
    batch = hf(texts[:4])["input_ids"]
    assert fast.decode(batch) == hf.decode(batch)
    assert fast.decode(batch[0][1]) == hf.decode(batch[0][1])
    assert fast.decode(np.array(batch[0])) == hf.decode(batch[0])
    assert fast.get_vocab() == hf.get_vocab() and len(fast) == len(hf)
    attributes = (
        "mask_token mask_token_id pad_token pad_token_id eos_token eos_token_id bos_token_id sep_token_id "
        "cls_token_id unk_token_id all_special_ids model_max_length chat_template name_or_path padding_side"
    )
    for attribute in attributes.split():
        assert getattr(fast, attribute) == getattr(hf, attribute), attribute
    assert fast.do_lower_case == name.startswith("bert")
    if hf.chat_template is None:
        with pytest.raises(ValueError):
            fast.apply_chat_template([{"role": "user", "content": "hi"}])
        return
    chats = [
        [{"role": "user", "content": "hi there"}],
        [
            {"role": "user", "content": " 你好 "},
            {"role": "assistant", "content": "hello!", "tool_calls": None},
            {"role": "user", "content": "[MASK] {{ not a variable }}"},
        ],
    ]
    for chat in chats:
        for prompt in (True, False):
            rendered = hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt)
            assert fast.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt) == rendered
            ids = hf.apply_chat_template(chat, tokenize=True, add_generation_prompt=prompt, return_dict=False)
            assert fast.apply_chat_template(chat, tokenize=True, add_generation_prompt=prompt, return_dict=False) == ids
    if name == "llama":
        import jinja2

        wrong = [{"role": "assistant", "content": "first"}]
        with pytest.raises(jinja2.TemplateError, match="alternate"):
            hf.apply_chat_template(wrong, tokenize=False)
        with pytest.raises(jinja2.TemplateError, match="alternate"):
            fast.apply_chat_template(wrong, tokenize=False)


def test_tokenizer_ignores_padding_asked_for_in_tokenizer_json(models: Models, tmp_path: Path) -> None:
    """A tokenizer.json that pads (all-MiniLM-L6-v2's pads to 128) must not pad rows: Transformers pads
    only when asked, and unmasked [PAD] rows would change every encoder output."""
    hf = _hf_tokenizer(models["bert"])
    export_tokenizer(hf, tmp_path)
    path = tmp_path / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["padding"] = {
        "strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": None,
        "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]",
    }  # fmt: skip
    path.write_text(json.dumps(data), encoding="utf-8")
    fast = FastTokenizer.load(tmp_path)
    assert fast(TEXTS[:3]) == dict(hf(TEXTS[:3]))
    assert all(len(ids) < 128 for ids in fast(TEXTS[:3])["input_ids"])


def _outcome(tokenizer: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return dict(tokenizer(*args, **kwargs))
    except Exception as exc:  # the same error from the same Rust tokenizer
        return str(exc)


def test_tokenizer_truncation_defaults(models: Models, tmp_path: Path) -> None:
    """truncation=True without max_length uses model_max_length, as transformers does."""
    folder = models.copy("bert", tmp_path / "bert512")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = 12
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    hf = _hf_tokenizer(folder)
    export_tokenizer(hf, tmp_path / "out")
    fast = FastTokenizer.load(tmp_path / "out")
    assert fast.model_max_length == 12 == hf.model_max_length
    for kwargs in ({"truncation": True}, {"truncation": "only_second", "max_length": 10}, {"max_length": 9}):
        for first, second in (("a", TEXTS[17]), (TEXTS[17], TEXTS[18])):
            assert _outcome(fast, first, second, **kwargs) == _outcome(hf, first, second, **kwargs), kwargs
    with pytest.raises(Exception, match="too short") as theirs:
        hf(TEXTS[17], TEXTS[0], truncation="only_second", max_length=10)
    with pytest.raises(Exception, match="too short") as ours:
        fast(TEXTS[17], TEXTS[0], truncation="only_second", max_length=10)
    assert str(ours.value) == str(theirs.value)
    assert fast(TEXTS[17]) == dict(hf(TEXTS[17]))  # no truncation unless asked
    assert len(fast(TEXTS[17], truncation=True)["input_ids"]) == 12


# -- conversion: what CTranslate2 converts -------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "loaded", "heads"),
    [
        ("bert", "BertForMaskedLM", {"mlm": True, "nsp": False, "classifier": None, "pooler": False}),
        ("bertpre", "BertForPreTraining", {"mlm": True, "nsp": True, "classifier": None, "pooler": True}),
        ("bertnsp", "BertForNextSentencePrediction", {"mlm": False, "nsp": True, "classifier": None, "pooler": True}),
        (
            "bertcls",
            "BertForSequenceClassification",
            {"mlm": False, "nsp": False, "classifier": "bert", "pooler": True},
        ),
        ("roberta", "RobertaForMaskedLM", {"mlm": True, "nsp": False, "classifier": None, "pooler": False}),
        (
            "robertacls",
            "RobertaForSequenceClassification",
            {"mlm": False, "nsp": False, "classifier": "roberta", "pooler": False},
        ),
        ("gpt2", "GPT2LMHeadModel", {"mlm": False, "nsp": False, "classifier": None, "pooler": False}),
        ("llama", "LlamaForCausalLM", {"mlm": False, "nsp": False, "classifier": None, "pooler": False}),
    ],
)
def test_conversion_layout(models: Models, shared_cache: Path, name: str, loaded: str, heads: dict[str, Any]) -> None:
    entry = entry_for(models, name)
    assert entry.parent == shared_cache / "ct2" and entry.name == entry_key(models[name], "float32")
    assert verify_entry(entry) is None
    meta = json.loads((entry / "model_meta.json").read_text())
    assert meta["loaded_class"] == loaded and meta["heads"] == heads
    manifest = json.loads((entry / "entry.json").read_text())
    assert {"model/model.bin", "model/config.json", "model/vocabulary.json", "heads.safetensors"} <= set(
        manifest["files"]
    )
    assert manifest["source"] == str(models[name].resolve()) and manifest["quantization"] == "float32"
    if name == "roberta":
        assert meta["max_positions"] == 66 - 2
    if name == "robertacls":
        assert meta["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"} and meta["num_labels"] == 3
    if name in ("gpt2", "llama"):
        assert meta["kind"] == "decoder" and meta["generation_config"]["eos_token_id"] == meta["eos_token_id"]
    assert ensure_entry(models[name], notify=pytest.fail) == entry  # converted once


# -- equality with the torch models --------------------------------------------------------------


def _mask_batch(tokenizer: Any) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    m = tokenizer.mask_token
    texts = [
        f"the capital of france is {m} .",
        f"once upon a {m} there lived a {m} in a castle",
        m,
        f"你好 {m} world",
    ]
    batch = tokenizer(texts)
    positions = [
        (i, j) for i, row in enumerate(batch["input_ids"]) for j, t in enumerate(row) if t == tokenizer.mask_token_id
    ]
    return batch, [*positions, (0, 0), (1, 3), (3, len(batch["input_ids"][3]) - 1)]


@pytest.mark.parametrize("name", ["bert", "bertpre", "roberta"])
def test_mlm_logits_equal_torch(models: Models, shared_cache: Path, name: str) -> None:
    import torch
    from transformers import AutoModelForMaskedLM

    entry = entry_for(models, name)
    encoder = load_encoder(entry, intra_threads=1)
    tokenizer = load_tokenizer(entry)
    batch, positions = _mask_batch(tokenizer)
    got = encoder.mlm_logits(batch["input_ids"], positions, batch.get("token_type_ids"))
    model = AutoModelForMaskedLM.from_pretrained(str(models[name])).eval()
    padded = _hf_tokenizer(models[name]).pad(dict(batch), return_tensors="pt")
    with torch.inference_mode():
        logits = model(**padded).logits
    expected = np.stack([logits[i, j].numpy() for i, j in positions])
    assert got.dtype == np.float32 and got.shape == (len(positions), len(tokenizer))
    assert np.abs(got - expected).max() < 1e-4
    assert encoder.mlm_logits(batch["input_ids"], []).shape == (0, len(tokenizer))
    with pytest.raises(UsageError):
        encoder.mlm_logits(batch["input_ids"], [(2, 99)])


@pytest.mark.parametrize("name", ["bertcls", "robertacls"])
def test_sequence_logits_equal_torch(models: Models, shared_cache: Path, name: str) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    entry = entry_for(models, name)
    encoder = load_encoder(entry, intra_threads=1)
    tokenizer = load_tokenizer(entry)
    texts = [*[t for t, _ in tiny_models.sentiment_examples()][:12], "a", "你好 world"]
    enc = tokenizer(texts, truncation=True, max_length=encoder.max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    rows = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
    got = encoder.sequence_logits(rows)
    model = AutoModelForSequenceClassification.from_pretrained(str(models[name])).eval()
    with torch.inference_mode():
        expected = np.stack([model(**{k: torch.tensor([r[k]]) for k in keys}).logits[0].numpy() for r in rows])
    assert got.shape == expected.shape == (len(texts), model.config.num_labels)
    assert np.abs(got - expected).max() < 1e-4
    assert encoder.id2label == model.config.id2label
    with pytest.raises(ModelError, match="next-sentence"):
        load_encoder(entry, intra_threads=1, task="next-sentence").sequence_logits(rows)


@pytest.mark.parametrize("name", ["bertpre", "bertnsp"])
def test_next_sentence_logits_equal_torch(models: Models, shared_cache: Path, name: str) -> None:
    import torch
    from transformers import BertForNextSentencePrediction

    entry = entry_for(models, name)
    encoder = load_encoder(entry, intra_threads=1, task="next-sentence")
    tokenizer = load_tokenizer(entry)
    pairs = tiny_models.nsp_examples()[:10]
    enc = tokenizer([a for a, _, _ in pairs], [b for _, b, _ in pairs], truncation="longest_first", max_length=12)
    rows = [{k: enc[k][i] for k in ("input_ids", "token_type_ids")} for i in range(len(pairs))]
    got = encoder.sequence_logits(rows)
    model = BertForNextSentencePrediction.from_pretrained(str(models[name])).eval()
    with torch.inference_mode():
        expected = np.stack([model(**{k: torch.tensor([r[k]]) for k in r}).logits[0].numpy() for r in rows])
    assert np.abs(got - expected).max() < 1e-4


PROMPTS = ["the capital of france is", "once upon a time", "dog", "a", "the the the dog", "king queen castle", "你好"]


@pytest.mark.parametrize("name", ["gpt2", "gpt2pad", "llama"])
def test_token_logprobs_equal_torch(models: Models, shared_cache: Path, name: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    entry = entry_for(models, name)
    decoder = load_decoder(entry, intra_threads=1)
    tokenizer = load_tokenizer(entry)
    rows = [tokenizer(t)["input_ids"] for t in [*PROMPTS, *tiny_models.CORPUS]] + [[5], []]
    got = decoder.token_logprobs(rows)
    model = AutoModelForCausalLM.from_pretrained(str(models[name])).eval()
    for row, lp in zip(rows, got, strict=True):
        assert lp.dtype == np.float32 and lp.shape == (max(0, len(row) - 1),)
        if len(row) < 2:
            continue
        with torch.inference_mode():
            full = torch.log_softmax(model(torch.tensor([row])).logits[0].double(), -1).numpy()
        expected = full[np.arange(len(row) - 1), row[1:]]
        assert np.abs(lp - expected).max() < 1e-4
        assert abs(float(lp.sum()) - float(expected.sum())) < 1e-3


@pytest.mark.parametrize("name", ["gpt2", "gpt2pad", "llama"])
@pytest.mark.parametrize("penalty", [1.0, 1.3, 0.7])
def test_greedy_generation_equals_generate(models: Models, shared_cache: Path, name: str, penalty: float) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    entry = entry_for(models, name)
    decoder = load_decoder(entry, intra_threads=1)
    tokenizer = load_tokenizer(entry)
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS]
    eos = {tokenizer.eos_token_id}
    got = decoder.generate(prompts, max_new_tokens=16, greedy=True, repetition_penalty=penalty, eos_ids=eos)
    model = AutoModelForCausalLM.from_pretrained(str(models[name])).eval()
    for prompt, tokens in zip(prompts, got, strict=True):
        with torch.inference_mode():
            out = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=16,
                do_sample=False,
                repetition_penalty=penalty,
                pad_token_id=tokenizer.eos_token_id,
            )
        assert tokens == out[0, len(prompt) :].tolist(), prompt


def test_generation_ends_at_eos_and_streams(models: Models, shared_cache: Path) -> None:
    decoder = load_decoder(entry_for(models, "gpt2"), intra_threads=1)
    tokenizer = load_tokenizer(entry_for(models, "gpt2"))
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS[:3]]
    free = decoder.generate(prompts, max_new_tokens=6, greedy=True)
    assert [len(t) for t in free] == [6, 6, 6]
    # Whatever greedy decoding makes third for prompt 0 is declared EOS: generation stops there, EOS included.
    eos = free[0][2]
    cut = decoder.generate(prompts, max_new_tokens=6, greedy=True, eos_ids={eos})
    assert cut[0] == free[0][: free[0].index(eos) + 1]
    seen: list[tuple[int, int]] = []

    def on_token(sequence: int, token: int) -> bool:
        seen.append((sequence, token))
        return sequence == 1 and sum(1 for s, _ in seen if s == 1) == 2  # stop sequence 1 after two tokens

    streamed = decoder.generate(prompts, max_new_tokens=6, greedy=True, on_token=on_token)
    assert streamed[1] == free[1][:2] and streamed[0] == free[0] and streamed[2] == free[2]
    for sequence, tokens in enumerate(streamed):
        assert [t for s, t in seen if s == sequence] == tokens
    with pytest.raises(UsageError):
        decoder.generate([[]], max_new_tokens=3)
    assert decoder.generate(prompts, max_new_tokens=0) == [[], [], []]


def test_sampling_repeats_with_a_seed(models: Models, shared_cache: Path) -> None:
    entry = entry_for(models, "llama")
    tokenizer = load_tokenizer(entry)
    prompts = [tokenizer(t)["input_ids"] for t in PROMPTS[:3]]
    options: dict[str, Any] = {
        "max_new_tokens": 12,
        "greedy": False,
        "temperature": 1.5,
        "top_k": 0,
        "top_p": 1.0,
        "num_return_sequences": 2,
        "eos_ids": {tokenizer.eos_token_id},
    }
    first = load_decoder(entry, intra_threads=1).generate(prompts, seed=11, **options)
    again = load_decoder(entry, intra_threads=1)
    assert again.generate(prompts, seed=11, **options) == first
    assert again.generate(prompts, seed=11, **options) != first  # the same stream goes on, like torch's
    assert again.generate(prompts, seed=11, **options) != first
    assert again.generate(prompts, seed=12, **options) != first
    assert again.generate(prompts, seed=11, **options) == first  # a new seed restarts the stream
    assert len(first) == 6 and first[0] != first[1]  # prompt-major, two different samples per prompt
    alone = load_decoder(entry, intra_threads=1).generate(prompts[:1], seed=11, **options)
    assert alone == first[:2]  # a prompt's samples do not depend on the prompts after it
    penalized = load_decoder(entry, intra_threads=1).generate(prompts, seed=11, repetition_penalty=1.3, **options)
    assert len(penalized) == 6 and all(1 <= len(t) <= 12 for t in penalized)
    unseeded = again.generate(prompts, top_k=5, top_p=0.9, **{k: v for k, v in options.items() if "top" not in k})
    assert len(unseeded) == 6


def test_int8_is_close(models: Models, shared_cache: Path) -> None:
    entry32, entry8 = entry_for(models, "bert"), entry_for(models, "bert", "int8")
    assert entry8 != entry32 and json.loads((entry8 / "entry.json").read_text())["quantization"] == "int8"
    tokenizer = load_tokenizer(entry32)
    batch, positions = _mask_batch(tokenizer)
    exact = load_encoder(entry32, intra_threads=1).mlm_logits(batch["input_ids"], positions, batch["token_type_ids"])
    for encoder in (
        load_encoder(entry8, intra_threads=1),
        load_encoder(entry32, compute_type="int8", intra_threads=1),
    ):
        approx = encoder.mlm_logits(batch["input_ids"], positions, batch["token_type_ids"])
        assert 0 < np.abs(approx - exact).max() < 0.05
    decoder32 = load_decoder(entry_for(models, "gpt2"), intra_threads=1)
    decoder8 = load_decoder(entry_for(models, "gpt2", "int8"), intra_threads=1)
    rows = [load_tokenizer(entry32)("a")["input_ids"] * 3, list(range(1, 30))]
    for a, b in zip(decoder8.token_logprobs(rows), decoder32.token_logprobs(rows), strict=True):
        assert np.abs(a - b).max() < 0.1
    assert len(decoder8.generate(rows, max_new_tokens=5)[1]) == 5


def test_runtime_needs_neither_torch_nor_transformers(models: Models, shared_cache: Path) -> None:
    bert, gpt2 = models["bert"], models["gpt2"]
    entry_bert, entry_gpt2 = entry_for(models, "bert"), entry_for(models, "gpt2")
    code = textwrap.dedent(
        f"""
        import json, sys
        sys.modules["torch"] = None
        sys.modules["transformers"] = None
        from llmtool.engines.ct2.convert import ensure_entry
        from llmtool.engines.ct2.decoder import load_decoder
        from llmtool.engines.ct2.encoder import load_encoder
        from llmtool.engines.ct2.tokenizer import load_tokenizer
        entry = ensure_entry({str(bert)!r}, allow_convert=False, convert_max_bytes=0)
        tokenizer = load_tokenizer(entry)
        batch = tokenizer(["the capital of france is [MASK] ."])
        column = batch["input_ids"][0].index(tokenizer.mask_token_id)
        logits = load_encoder(entry, intra_threads=1).mlm_logits(batch["input_ids"], [(0, column)])
        decoder = load_decoder(ensure_entry({str(gpt2)!r}, allow_convert=False), intra_threads=1)
        ids = load_tokenizer(decoder.entry)("once upon a time")["input_ids"]
        tokens = decoder.generate([ids], max_new_tokens=5)
        scores = decoder.token_logprobs([ids])
        heavy = [m for m in ("torch", "transformers") if sys.modules.get(m) is not None]
        print(json.dumps({{"entry": str(entry), "logits": logits[0].tolist(), "tokens": tokens, "heavy": heavy,
                           "scores": scores[0].tolist()}}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(shared_cache), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["entry"] == str(entry_bert) and answer["heavy"] == []
    tokenizer = load_tokenizer(entry_bert)
    batch = tokenizer(["the capital of france is [MASK] ."])
    column = batch["input_ids"][0].index(tokenizer.mask_token_id)
    here = load_encoder(entry_bert, intra_threads=1).mlm_logits(batch["input_ids"], [(0, column)])
    assert np.abs(np.array(answer["logits"]) - here[0]).max() < 1e-6
    ids = load_tokenizer(entry_gpt2)("once upon a time")["input_ids"]
    assert answer["tokens"] == load_decoder(entry_gpt2, intra_threads=1).generate([ids], max_new_tokens=5)


# -- the cache -----------------------------------------------------------------------------------


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("LLMTOOL_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "huggingface" / "llmtool"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "huggingface" / "llmtool"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert cache_root() == tmp_path / "hf" / "llmtool"
    monkeypatch.setenv("LLMTOOL_CACHE", str(tmp_path / "own"))
    assert cache_root() == tmp_path / "own" and entries_dir() == tmp_path / "own" / "ct2"


def test_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_size("2GB") == 2_000_000_000 and parse_size("500MB") == 500_000_000
    assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("123") == 123
    assert parse_size(" 10 kb ") == 10_000 and parse_size("7b") == 7
    for bad in ("", "GB", "2 XB", "-1", "1iB"):
        with pytest.raises(UsageError):
            parse_size(bad)
    monkeypatch.delenv("LLMTOOL_CONVERT_MAX", raising=False)
    assert default_convert_max() == 2_000_000_000
    monkeypatch.setenv("LLMTOOL_CONVERT_MAX", "300MB")
    assert default_convert_max() == 300_000_000
    monkeypatch.setenv("LLMTOOL_CONVERT_MAX", "lots")
    with pytest.raises(UsageError, match="LLMTOOL_CONVERT_MAX"):
        default_convert_max()


def test_size_limit_when_conversion_is_not_asked_for(models: Models, cache: Path, tmp_path: Path) -> None:
    source = models.copy("bert", tmp_path / "bert")
    size = weights_bytes(source)
    assert size == (source / "model.safetensors").stat().st_size
    assert needs_conversion(source)
    with pytest.raises(ModelError, match=r"llmtool cache add .*--engine ctranslate2") as caught:
        ensure_entry(source, allow_convert=False, convert_max_bytes=size - 1, notify=pytest.fail)
    assert "\n" not in str(caught.value)
    lines: list[str] = []
    entry = ensure_entry(source, allow_convert=False, convert_max_bytes=size, notify=lines.append)
    assert len(lines) == 1 and lines[0].startswith(f"converting {source.resolve()} (<1 MB of weights)")
    assert lines[0].endswith(f"for CTranslate2 into {entry}")
    assert not needs_conversion(source)
    assert ensure_entry(source, allow_convert=False, convert_max_bytes=0, notify=pytest.fail) == entry
    with pytest.raises(UsageError, match="quantization"):
        ensure_entry(source, "int3")
    with pytest.raises(ModelError, match="not a model folder"):
        ensure_entry(tmp_path)


def test_key_follows_content_and_memo(models: Models, cache: Path, tmp_path: Path) -> None:
    one = models.copy("bert", tmp_path / "one")
    two = models.copy("bert", tmp_path / "two")
    past = time.time() - 3600
    for path in [*one.iterdir(), *two.iterdir()]:
        os.utime(path, (past, past))  # old files: the memo keeps their hashes
    key = entry_key(one)
    assert entry_key(two) == key  # content, not place
    assert entry_key(one, "int8") != key
    memo_path = cache / MEMO_FILE
    memo = json.loads(memo_path.read_text())
    weights = str((one / "model.safetensors").resolve())
    assert weights in memo["files"]
    # The memo is trusted while the stat matches: a forged hash shows through...
    memo["files"][weights]["sha256"] = "0" * 64
    memo_path.write_text(json.dumps(memo))
    assert entry_key(one) != key
    # ...and is dropped once the file's stat changes (here only its mtime).
    os.utime(one / "model.safetensors", (past - 10, past - 10))
    assert entry_key(one) == key
    for garbage in ("{not json", json.dumps({"format": "other", "files": {}}), json.dumps([1, 2])):
        memo_path.write_text(garbage)
        assert entry_key(one) == key
    memo_path.write_text(json.dumps({"format": MEMO_FORMAT, "files": {weights: {"stat": "x", "sha256": 5}}}))
    assert entry_key(one) == key


def test_changed_weights_get_a_new_entry(models: Models, cache: Path, tmp_path: Path) -> None:
    import torch
    from transformers import BertForMaskedLM

    source = models.copy("bert", tmp_path / "bert")
    first = ensure_entry(source, notify=lambda line: None)
    size = (source / "model.safetensors").stat().st_size
    model = BertForMaskedLM.from_pretrained(str(source))
    with torch.no_grad():
        model.cls.predictions.transform.dense.weight.mul_(-1.0)
    model.save_pretrained(str(source))  # same shapes, same size: only the bytes differ
    assert (source / "model.safetensors").stat().st_size == size
    lines: list[str] = []
    second = ensure_entry(source, notify=lines.append)
    assert second != first and len(lines) == 1 and "converting" in lines[0]
    tokenizer = load_tokenizer(second)
    batch = tokenizer(["the capital of france is [MASK] ."])
    with torch.inference_mode():
        expected = model.eval()(torch.tensor(batch["input_ids"])).logits[0, 1].numpy()
    got = load_encoder(second, intra_threads=1).mlm_logits(batch["input_ids"], [(0, 1)])[0]
    assert np.abs(got - expected).max() < 1e-4
    assert {e["key"] for e in list_entries()} == {first.name, second.name}


def _damage_flip(entry: Path) -> None:
    path = entry / "model" / "model.bin"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its mtime put back


def _damage_truncate(entry: Path) -> None:
    with open(entry / "heads.safetensors", "r+b") as f:
        f.truncate(100)


def _damage_manifest(entry: Path) -> None:
    (entry / "entry.json").write_text('{"format": 1, "key": "')


def _damage_delete(entry: Path) -> None:
    (entry / "tokenizer.json").unlink()


@pytest.mark.parametrize("damage", [_damage_flip, _damage_truncate, _damage_manifest, _damage_delete])
def test_damaged_entry_is_detected_and_reconverted(models: Models, cache: Path, tmp_path: Path, damage: Any) -> None:
    source = models.copy("bert", tmp_path / "bert")
    entry = ensure_entry(source, notify=lambda line: None)
    good = load_encoder(entry, intra_threads=1).mlm_logits([[2, 10, 11, 3]], [(0, 1)])
    damage(entry)
    assert verify_entry(entry) is not None
    with pytest.raises(ModelError, match="damaged"):
        load_encoder(entry)
    assert needs_conversion(source)
    assert [e["valid"] for e in list_entries()] == [False]
    with pytest.raises(ModelError, match=r"damaged .* removed") as caught:
        ensure_entry(source, allow_convert=False, convert_max_bytes=0, notify=pytest.fail)
    assert "\n" not in str(caught.value) and not entry.exists()
    damage(ensure_entry(source, notify=lambda line: None))  # converted anew, then damaged again
    lines: list[str] = []
    again = ensure_entry(source, notify=lines.append)
    assert again == entry and len(lines) == 1 and verify_entry(again) is None
    assert np.array_equal(load_encoder(again, intra_threads=1).mlm_logits([[2, 10, 11, 3]], [(0, 1)]), good)


def test_touched_entry_is_still_valid(models: Models, cache: Path, tmp_path: Path) -> None:
    source = models.copy("gpt2", tmp_path / "gpt2")
    entry = ensure_entry(source, notify=lambda line: None)
    for path in entry.rglob("*"):
        os.utime(path)
    assert verify_entry(entry) is None  # stat changed, content did not: hashed again, then remembered
    manifest = json.loads((entry / "entry.json").read_text())
    sig = manifest["files"]["model/model.bin"]["stat"]
    st = (entry / "model" / "model.bin").stat()
    assert sig == [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
    assert ensure_entry(source, notify=pytest.fail) == entry


def test_unwritable_cache_raises_cache_error(models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = models["bert"]
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for root in (blocker, blocker / "below", Path("/proc/llmtool-cache")):
        monkeypatch.setenv("LLMTOOL_CACHE", str(root))
        with pytest.raises(CacheError) as caught:
            ensure_entry(source, notify=pytest.fail)
        message = str(caught.value)
        assert isinstance(caught.value, ModelError) and "\n" not in message
        assert message.startswith(f"cannot write the CTranslate2 cache in {root / 'ct2'}: ")
        assert list_entries() == [] and needs_conversion(source)
        with pytest.raises(ModelError, match="llmtool cache add") as refused:  # too big: the cache is not touched
            ensure_entry(source, allow_convert=False, convert_max_bytes=0, notify=pytest.fail)
        assert not isinstance(refused.value, CacheError)


CONVERT_CHILD = """
import os, signal, sys, time
from pathlib import Path
import ctranslate2.converters  # imported before the hook is set: it only watches the conversion
import transformers
from llmtool.engines.ct2.convert import ensure_entry

source, mode, marker = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def notify(line):
    print(line, flush=True)
    if line.startswith("waiting"):
        marker.touch()

def hook(frame, event, arg):
    module = frame.f_globals.get("__name__") or ""
    watched = module == "llmtool.engines.ct2" or module.startswith("llmtool.engines.ct2.")  # every module of the engine
    if event != "call" or not watched:
        return
    name = frame.f_code.co_name
    if mode == "kill-" + name:
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hold" and name == "_write_manifest":
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline:  # until the other process waits for the lock
            time.sleep(0.05)

if mode != "plain":
    sys.setprofile(hook)
entry = ensure_entry(source, notify=notify)
sys.setprofile(None)
print("entry", entry, flush=True)
"""


def _start_child(script: Path, root: Path, source: Path, mode: str, marker: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(source), mode, str(marker)],
        env=child_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_convert_once(models: Models, cache: Path, tmp_path: Path) -> None:
    source = models.copy("bert", tmp_path / "bert")
    script = tmp_path / "child.py"
    script.write_text(CONVERT_CHILD)
    marker = tmp_path / "second-is-waiting"
    first = _start_child(script, cache, source, "hold", marker)
    deadline = time.time() + 120
    while not any(p.name.startswith(".tmp-") for p in (cache / "ct2").glob(".*")) and time.time() < deadline:
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = _start_child(script, cache, source, "plain", marker)  # plain: its notify touches the marker
    out1, err1 = first.communicate(timeout=180)
    out2, err2 = second.communicate(timeout=180)
    assert first.returncode == 0 and second.returncode == 0, (err1, err2)
    conversions = [line for line in (out1 + out2).splitlines() if line.startswith("converting ")]
    assert len(conversions) == 1 and out1.startswith("converting ")
    assert out2.startswith("waiting for another llmtool converting")
    entry_lines = {line for line in (out1 + out2).splitlines() if line.startswith("entry ")}
    assert len(entry_lines) == 1
    assert [e["valid"] for e in list_entries()] == [True]


@pytest.mark.parametrize("where", ["export_tokenizer", "_write_manifest"])
def test_killed_conversion_leaves_no_entry(models: Models, cache: Path, tmp_path: Path, where: str) -> None:
    source = models.copy("bert", tmp_path / "bert")
    other = models.copy("gpt2", tmp_path / "gpt2")
    script = tmp_path / "child.py"
    script.write_text(CONVERT_CHILD)
    child = _start_child(script, cache, source, f"kill-{where}", tmp_path / "unused")
    out, err = child.communicate(timeout=180)
    assert child.returncode == -signal.SIGKILL, err
    assert "converting" in out and "entry" not in out
    key = entry_key(source)
    stale = [p for p in (cache / "ct2").iterdir() if p.name.startswith(".tmp-")]
    assert len(stale) == 1 and stale[0].name.startswith(f".tmp-{key}-") and any(stale[0].rglob("model.bin"))
    assert not (cache / "ct2" / key).exists() and list_entries() == [] and needs_conversion(source)
    ensure_entry(other, notify=lambda line: None)  # any later run clears what is stale
    assert not stale[0].exists()
    lines: list[str] = []
    entry = ensure_entry(source, notify=lines.append)
    assert len(lines) == 1 and entry.name == key and verify_entry(entry) is None
    assert sorted(p.name for p in (cache / "ct2").iterdir() if not p.name.endswith(".lock")) == sorted(
        [key, entry_key(other)]
    )


def test_list_and_remove_entries(models: Models, cache: Path, tmp_path: Path) -> None:
    bert = models.copy("bert", tmp_path / "bert")
    gpt2 = models.copy("gpt2", tmp_path / "gpt2")
    assert list_entries() == [] and remove_entries() == []
    e1 = ensure_entry(bert, notify=lambda line: None)
    e2 = ensure_entry(bert, "int8", notify=lambda line: None)
    e3 = ensure_entry(gpt2, notify=lambda line: None)
    listed = {e["key"]: e for e in list_entries()}
    assert set(listed) == {e1.name, e2.name, e3.name}
    record = listed[e1.name]
    assert record["source"] == str(bert.resolve()) and record["quantization"] == "float32" and record["valid"]
    assert record["size"] > 0 and record["created"] <= time.time() and record["ctranslate2_version"]
    assert remove_entries(e3.name[:8]) == [e3] and not e3.exists()
    assert sorted(remove_entries(str(bert))) == sorted([e1, e2])
    assert list_entries() == []
    ensure_entry(gpt2, notify=lambda line: None)
    assert len(remove_entries(None)) == 1 and list_entries() == []


# -- what the engine runs ------------------------------------------------------------------------


def test_supported(models: Models) -> None:
    def config(name: str) -> dict[str, Any]:
        return dict(json.loads((models[name] / "config.json").read_text()))

    assert supported(config("bert"), "fill-mask") is None
    assert supported(config("bert"), "score-mlm") is None
    assert supported(config("bert"), "next-sentence") is not None
    assert supported(config("bertpre"), "next-sentence") is None
    assert supported(config("bertcls"), "classify") is None
    assert supported(config("robertacls"), "classify") is None
    assert supported(config("roberta"), "fill-mask") is None
    for name in ("gpt2", "llama"):
        assert supported(config(name), "generate") is None and supported(config(name), "score-clm") is None
        assert supported(config(name), "fill-mask") is not None
    assert supported({**config("gpt2"), "architectures": ["GPT2ForSequenceClassification"]}, "classify") == (
        "decoder classifiers need the torch engine"
    )
    # T5 runs on CTranslate2 since issue 24 (translate, summarize); Pegasus still does not
    assert "does not support" in str(
        supported({"model_type": "pegasus", "architectures": ["PegasusModel"]}, "generate")
    )
    assert supported({**config("bert"), "position_embedding_type": "relative_key"}, "fill-mask") is not None
    assert supported({**config("bert"), "architectures": None}, "fill-mask") is not None
    rope = {"rope_type": "yarn", "factor": 4.0}
    assert supported({**config("llama"), "rope_parameters": rope}, "generate") is not None
    assert supported(config("bert"), "translate") is not None
