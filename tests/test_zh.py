# ruff: noqa: RUF001, RUF002
"""Chinese text: fill-mask without special tokens and with WordPiece continuations joined, the GBK
hint for undecodable input, sentence splitting at 。！？ for next-sentence pairs.

A tiny Chinese BERT is built here (a character vocabulary, as bert-base-chinese has) with its
output bias pushed towards [SEP] and the continuation "##京", so the predictions are known."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, run_cli

CHARS = [*"我爱北京天安门中国的首都是很大你去过吗。，！？；", "##京", "##门"]


@pytest.fixture(scope="module")
def zh_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    folder = tmp_path_factory.mktemp("zh") / "bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS]) + "\n")
    tokenizer = BertTokenizer.from_pretrained(str(folder))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    model = BertForMaskedLM(config)
    with torch.no_grad():  # what the model says first: [SEP], then the continuation ##京
        model.cls.predictions.bias[tokenizer.convert_tokens_to_ids("[SEP]")] = 40.0
        model.cls.predictions.bias[tokenizer.convert_tokens_to_ids("##京")] = 20.0
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_fill_mask_leaves_special_tokens_out_and_joins_continuations(
    zh_bert: Path, engine: str, tmp_path: Path
) -> None:
    env = cli_env(LLMTOOL_ENGINE=engine, LLMTOOL_CACHE=str(tmp_path / "cache"))
    args = ["fill-mask", "-m", str(zh_bert), "-k", "5"]
    text = run_cli([*args, "我爱北[MASK]。"], env=env)
    assert text.returncode == 0, text.stderr
    assert text.stdout == "我爱北京。\n"  # "##京" joins 北 without its marker
    spaced = run_cli([*args, "I like bei [MASK] ."], env=env)
    assert spaced.stdout == "I like bei京 .\n"  # a continuation joins the word before the mask
    record = json.loads(run_cli([*args, "--json", "我爱北[MASK]。"], env=env).stdout)
    predictions = record["masks"][0]["predictions"]
    assert len(predictions) == 5 and predictions[0]["token"] == "##京"  # JSON keeps the vocabulary's token
    specials = {"[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"}
    assert not specials & {p["token"] for p in predictions}
    allowed = json.loads(run_cli([*args, "--json", "--allow-special", "我爱北[MASK]。"], env=env).stdout)
    assert allowed["masks"][0]["predictions"][0]["token"] == "[SEP]"
    # Probabilities stay over the whole vocabulary: leaving [SEP] out does not renormalise the rest.
    assert predictions[0]["score"] == pytest.approx(allowed["masks"][0]["predictions"][1]["score"], rel=1e-4)


def test_gbk_input_gets_a_gbk_hint(zh_bert: Path, tmp_path: Path) -> None:
    gbk = tmp_path / "gbk.txt"
    gbk.write_bytes("我爱北[MASK]。\n".encode("gb18030"))
    proc = run_cli(["fill-mask", "-m", str(zh_bert), "-i", str(gbk)])
    assert proc.returncode == 2
    assert "GBK/GB18030" in proc.stderr and "--encoding gb18030" in proc.stderr and "latin" not in proc.stderr
    assert proc.stderr.startswith(f"llmtool: error: {gbk}:1:1: not valid utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café [MASK]\n".encode("latin-1"))
    assert "latin" in run_cli(["fill-mask", "-m", str(zh_bert), "-i", str(latin)]).stderr
    fixed = run_cli(["fill-mask", "-m", str(zh_bert), "-i", str(gbk), "--encoding", "gb18030"])
    assert fixed.returncode == 0 and fixed.stdout == "我爱北京。\n"


def test_sentences_split_at_chinese_and_full_width_marks() -> None:
    from llmtool.training.pretrain_examples import split_sentences

    assert split_sentences("我爱北京。天安门很大！你去过吗？我去过；很好…… Then he left. And came back.") == [
        "我爱北京。",
        "天安门很大！",
        "你去过吗？",
        "我去过；",
        "很好……",
        "Then he left.",
        "And came back.",
    ]
    assert split_sentences("他说：“你好。”然后走了。") == ["他说：“你好。”", "然后走了。"]
    assert split_sentences("It was 3 p.m. and late! Ok?") == ["It was 3 p.m. and late!", "Ok?"]
    assert split_sentences("没有标点的一句话") == ["没有标点的一句话"]


# --------------------------------------------------------------------------- whole-word masking

ZH_CORPUS = "\n\n".join(
    [
        "北京是中国的首都。北京有很多名胜古迹。故宫在北京的中心。",
        "上海是中国最大的城市。上海在长江的入海口。很多公司的总部在上海。",
        "成都是四川的省会。成都人喜欢吃火锅。成都有可爱的熊猫。",
        "我每天早上七点起床。起床以后我先喝一杯水。然后我吃早饭。",
    ]
)


def _shared_bert_tokenizer() -> object:
    from conftest import SHARED_DATA
    from transformers import BertTokenizer

    folder = SHARED_DATA / "tokenizers" / "bert-base-uncased"
    if not folder.is_dir():
        pytest.skip("the shared bert-base-uncased tokenizer is absent")
    return BertTokenizer.from_pretrained(str(folder))


def test_whole_word_masking_masks_words_and_repeats_exactly() -> None:
    import numpy as np

    from llmtool.training.lm_examples import Masker, MlmCollator, WordSplitter

    tokenizer: Any = _shared_bert_tokenizer()
    text = "unbelievably walking 北京是中国的首都"
    ids = tokenizer(text)["input_ids"]
    words = WordSplitter(tokenizer)(ids)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert words[0] == -1 and words[-1] == -1  # [CLS], [SEP]
    un = tokens.index("un")
    assert len({int(w) for w in words[un : un + 5]}) == 1  # un ##bel ##ie ##va ##bly: one word
    if importlib.util.find_spec("jieba") is not None:  # 北京 / 是 / 中国 / 的 / 首都
        bei = tokens.index("北")
        assert words[bei] == words[bei + 1] != words[bei + 2] != words[bei + 3] == words[bei + 4]
    masker = Masker(tokenizer, 0.3, whole_word=True)
    for seed in range(20):  # every word is masked whole or not at all (80/10/10 then applies per token)
        _, labels = masker(ids, np.random.default_rng(seed))
        chosen = np.asarray(labels) != -100
        for word in set(words.tolist()) - {-1}:
            assert len(set(chosen[words == word].tolist())) == 1
    # The training collator: a function of (seed, epoch, tokens), whatever else shares the batch.
    collator = MlmCollator(tokenizer, 0.3, seed=5, whole_word=True)
    other = tokenizer("the capital of france is paris")["input_ids"]
    alone = collator([{"input_ids": ids}])["labels"][0]
    together = collator([{"input_ids": other}, {"input_ids": ids}])["labels"][1][: len(ids)]
    assert alone.tolist() == together.tolist()
    plain = Masker(tokenizer, 0.3)(ids, np.random.default_rng(1))
    assert plain == Masker(tokenizer, 0.3, whole_word=False)(ids, np.random.default_rng(1))


def test_chinese_pretrain_with_whole_word_masks_and_nsp_then_fill_mask_and_next_sentence(tmp_path: Path) -> None:
    corpus = tmp_path / "zh.txt"
    corpus.write_text(ZH_CORPUS + "\n", encoding="utf-8")
    out = tmp_path / "zh-bert"
    flags = "--nsp --whole-word-mask --size tiny --block-size 32 --batch-size 8 --max-steps 6 --seed 1 --json"
    trained = run_cli(["pretrain", str(corpus), *flags.split(), "--output", str(out)])
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["train"]["steps"] == 6
    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["training"]["whole_word_mask"] is True
    filled = run_cli(["fill-mask", "-m", str(out), "北京是中国的首[MASK]。"])
    assert filled.returncode == 0, filled.stderr
    line = filled.stdout.rstrip("\n")
    assert line.startswith("北京是中国的首") and line.endswith("。") and " " not in line and "[" not in line
    pairs = "成都是四川的省会。\t成都人喜欢吃火锅。\n我每天早上七点起床。\t上海在长江的入海口。\n"
    nsp = run_cli(["next-sentence", "-m", str(out)], input=pairs)
    assert nsp.returncode == 0, nsp.stderr
    assert [0 <= float(row.split("\t")[0]) <= 1 for row in nsp.stdout.splitlines()] == [True, True]
    refused = run_cli(["pretrain", str(corpus), "--objective", "clm", "--whole-word-mask", "-o", str(tmp_path / "x")])
    assert refused.returncode == 2 and "--whole-word-mask goes with --objective mlm" in refused.stderr


@pytest.mark.slow
def test_whole_word_masking_resumes_bit_exactly(tmp_path: Path) -> None:
    import signal

    from conftest import interrupt_after_first_epoch

    corpus = tmp_path / "zh.txt"
    corpus.write_text("\n\n".join([ZH_CORPUS] * 6) + "\n", encoding="utf-8")
    flags = (
        "--whole-word-mask --block-size 16 --batch-size 4 --valid-split 0.2 --epochs 8 --save-steps 9 --seed 3 --json"
    )
    common = ["pretrain", str(corpus), *flags.split()]
    env = cli_env(OMP_NUM_THREADS="1")
    whole = run_cli([*common, "--output", str(tmp_path / "whole")], env=env, timeout=900)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "interrupted"
    code, stderr = interrupt_after_first_epoch([*common, "--output", str(out)], signal.SIGINT, env, 900)
    assert code == 130, stderr
    resumed = run_cli([*common, "--output", str(out), "--resume"], env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    expected, got = json.loads(whole.stdout), json.loads(resumed.stdout)
    assert got["history"] == expected["history"] and got["train"]["loss"] == expected["train"]["loss"]
    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
