# ruff: noqa: RUF001, RUF002
"""Chinese text: fill-mask without special tokens and with WordPiece continuations joined, the GBK
hint for undecodable input, sentence splitting at 。！？ for next-sentence pairs.

A tiny Chinese BERT is built here (a character vocabulary, as bert-base-chinese has) with its
output bias pushed towards [SEP] and the continuation "##京", so the predictions are known."""

from __future__ import annotations

import json
from pathlib import Path

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
    from llmtool.pretrain import split_sentences

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
