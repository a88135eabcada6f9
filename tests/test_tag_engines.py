"""The per-token heads on both engines: ``token_logits`` of tiny BERT and RoBERTa token classifiers and
question-answering models equal within 1e-4, and the converter telling a BERT token classifier (which has
a ``classifier.weight`` too) from a sequence classifier by ``config.architectures``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_models

from llmtool.engines.ct2.convert import ensure_entry
from llmtool.engines.ct2.encoder import load_encoder
from llmtool.engines.ct2.support import supported
from llmtool.engines.ct2.tokenizer import load_tokenizer
from llmtool.engines.torch_engine import TorchEncoder
from llmtool.errors import ModelError

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
TEXTS = [
    "the capital of france is paris .",
    "once upon a time there lived a king in a castle",
    "a",
    "你好 world, the dog and the cat are in the house",
]
BASES: dict[str, Callable[[Path], Path]] = {"bert": tiny_models.build_bert, "roberta": tiny_models.build_roberta}
HEADS = {"tag": "ForTokenClassification", "qa": "ForQuestionAnswering"}


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("tag-ct2-cache")
        mp.setenv("LLMTOOL_CACHE", str(root))
        yield root


def build(models_dir: Path, family: str, task: str) -> Path:
    folder = models_dir / f"tag-engines-{family}-{task}"
    if not (folder / "config.json").is_file():
        head = ("Bert" if family == "bert" else "Roberta") + HEADS[task]
        tiny_models.build_with_head(folder, BASES[family], head, labels=LABELS if task == "tag" else None, seed=3)
    return folder


def torch_engine(folder: Path) -> TorchEncoder:
    import transformers

    auto = transformers.AutoModelForTokenClassification
    if json.loads((folder / "config.json").read_text())["architectures"][0].endswith("ForQuestionAnswering"):
        auto = transformers.AutoModelForQuestionAnswering
    model = auto.from_pretrained(str(folder)).eval()
    return TorchEncoder(transformers.AutoTokenizer.from_pretrained(str(folder)), model)


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("task", ["tag", "qa"])
def test_token_logits_equal_across_engines(models_dir: Path, cache_root: Path, family: str, task: str) -> None:
    folder = build(models_dir, family, task)
    entry = ensure_entry(folder, "float32", notify=lambda line: None)
    meta = json.loads((entry / "model_meta.json").read_text())
    head = ("Bert" if family == "bert" else "Roberta") + HEADS[task]
    assert meta["loaded_class"] == head
    assert meta["token_head"] == ("classifier" if task == "tag" else "qa_outputs")
    assert meta["heads"]["classifier"] is None  # not taken for a sequence classifier
    ct2 = load_encoder(entry, intra_threads=1, task=task)
    tokenizer = load_tokenizer(entry)
    enc = tokenizer(TEXTS)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    rows = [{k: enc[k][i] for k in keys} for i in range(len(TEXTS))]
    got = ct2.token_logits(rows)
    expected = torch_engine(folder).token_logits(rows)
    outputs = len(LABELS) if task == "tag" else 2
    assert len(got) == len(expected) == len(rows)
    for g, e, row in zip(got, expected, rows, strict=True):
        assert g.dtype == e.dtype == np.float32
        assert g.shape == e.shape == (len(row["input_ids"]), outputs)
        assert np.abs(g - e).max() < 1e-4
    # a row's logits do not depend on the rows batched with it
    alone = torch_engine(folder).token_logits(rows[2:3])[0]
    assert np.abs(alone - expected[2]).max() < 1e-5
    assert ct2.token_logits([]) == []
    if task == "tag":
        assert ct2.id2label == dict(enumerate(LABELS))
    assert supported(json.loads((folder / "config.json").read_text()), task) is None
    other = "qa" if task == "tag" else "tag"
    assert supported(json.loads((folder / "config.json").read_text()), other) is not None


def test_sequence_models_have_no_token_head(models_dir: Path, cache_root: Path) -> None:
    folder = tiny_models.build_bert_classifier(models_dir / "tag-engines-bertcls", steps=5)
    entry = ensure_entry(folder, "float32", notify=lambda line: None)
    meta = json.loads((entry / "model_meta.json").read_text())
    assert meta["loaded_class"] == "BertForSequenceClassification" and meta["heads"]["classifier"] == "bert"
    assert meta["token_head"] is None
    ct2 = load_encoder(entry, intra_threads=1)
    with pytest.raises(ModelError, match="no token-classification"):
        ct2.token_logits([{"input_ids": [2, 10, 3]}])
    with pytest.raises(ModelError, match="no per-token head"):
        torch_engine_for_classifier(folder).token_logits([{"input_ids": [2, 10, 3]}])


def torch_engine_for_classifier(folder: Path) -> TorchEncoder:
    import transformers

    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(folder)).eval()
    return TorchEncoder(transformers.AutoTokenizer.from_pretrained(str(folder)), model)
