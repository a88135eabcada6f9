# ruff: noqa: RUF001
"""``llmtool tag``: the five aggregation strategies agree with Transformers' token-classification pipeline
(labels, offsets, scores) on tiny BERT, RoBERTa and Chinese character models, long lines in windows as the
pipeline's ``stride`` reads them, both engines the same, and the output formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tiny_models
from conftest import cli_env, run_cli

from llmtool.settings import ModelOptions, TagOptions
from llmtool.tasks.tag import tag
from llmtool.tasks.tag_entities import bio, group_entities, merge_windows, word_tags

STRATEGIES = ("none", "simple", "first", "average", "max")
TEXTS = {
    "bert": [
        "The capital of France is Paris, said the king of Rome.",
        "Once upon a time there lived a happy king in a castle in Spain",
        "Zyxwv Café in Tokyo: the dogs and the cats are singing!",
        "a",
    ],
    "roberta": [
        "The capital of France is Paris, said the king of Rome.",
        "It was a great movie and I love the story of the queen.",
        "Zyxwv lived in Berlin  with  two cats",
    ],
    "zh": ["张三住在北京天安门。", "李四去过上海吗？我爱中国的首都。", "张三 lived in 北京 with the king"],
}
BASES: dict[str, Callable[[Path], Path]] = {
    "bert": tiny_models.build_bert,
    "roberta": tiny_models.build_roberta,
    "zh": tiny_models.build_zh_bert,
}


@pytest.fixture(scope="module")
def taggers(models_dir: Path) -> dict[str, Path]:
    return {name: tiny_models.build_token_classifier(models_dir / f"tag-{name}", base) for name, base in BASES.items()}


def pipeline_entities(folder: Path, texts: list[str], strategy: str, **kwargs: Any) -> list[list[dict[str, Any]]]:
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    if "max_length" in kwargs:
        tokenizer.model_max_length = kwargs.pop("max_length")
    model = transformers.AutoModelForTokenClassification.from_pretrained(str(folder))
    pipe = transformers.pipeline("token-classification", model=model, tokenizer=tokenizer)
    return [pipe(text, aggregation_strategy=strategy, **kwargs) for text in texts]


def ours(folder: Path, texts: list[str], engine: str = "torch", **options: Any) -> list[dict[str, Any]]:
    return list(tag(texts, options=TagOptions(**options), model_options=ModelOptions(model=str(folder), engine=engine)))


def assert_same(records: list[dict[str, Any]], expected: list[list[dict[str, Any]]], texts: list[str]) -> None:
    assert len(records) == len(expected)
    for record, theirs, text in zip(records, expected, texts, strict=True):
        assert record["input"] == text
        mine = record["entities"]
        assert [(e["label"], e["start"], e["end"]) for e in mine] == [
            (e.get("entity_group", e.get("entity")), e["start"], e["end"]) for e in theirs
        ]
        for m, t in zip(mine, theirs, strict=True):
            assert m["score"] == pytest.approx(float(t["score"]), abs=1e-5)
            assert m["text"] == text[m["start"] : m["end"]]
            if "index" in t:
                assert m["index"] == t["index"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["bert", "roberta", "zh"])
def test_every_strategy_agrees_with_the_pipeline(taggers: dict[str, Path], name: str, strategy: str) -> None:
    texts = TEXTS[name]
    records = ours(taggers[name], texts, aggregation=strategy)
    assert_same(records, pipeline_entities(taggers[name], texts, strategy), texts)
    assert any(r["entities"] for r in records)  # the tiny models do find entities


@pytest.mark.parametrize("strategy", ["simple", "first", "average", "max"])
@pytest.mark.parametrize("name", ["bert", "zh"])
def test_long_lines_are_read_in_windows_as_the_pipeline_strides(
    taggers: dict[str, Path], name: str, strategy: str
) -> None:
    texts = [" ".join(TEXTS[name][:3]) * 2]
    records = ours(taggers[name], texts, aggregation=strategy, max_length=12, stride=3)
    expected = pipeline_entities(taggers[name], texts, strategy, max_length=12, stride=3)
    assert_same(records, expected, texts)
    # nothing is truncated: entities come from the line's end too
    assert max(e["end"] for e in records[0]["entities"]) > len(texts[0]) * 3 // 4


@pytest.mark.parametrize("name", ["bert", "roberta", "zh"])
def test_both_engines_give_the_same_entities(
    taggers: dict[str, Path], name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    env = cli_env(LLMTOOL_CACHE=str(tmp_path_factory.mktemp("tag-cache")))
    text = "\n".join(TEXTS[name])
    out = {}
    for engine in ("torch", "ctranslate2"):
        for strategy in ("none", "simple", "average"):
            args = ["tag", "-m", str(taggers[name]), "--json", "--engine", engine, "-a", strategy, "-v"]
            result = run_cli(args, input=text, env=env)
            assert result.returncode == 0, result.stderr
            assert f"engine: {engine}" in result.stderr
            out[engine, strategy] = [json.loads(line) for line in result.stdout.splitlines()]
    for strategy in ("none", "simple", "average"):
        torch_records, ct2_records = out["torch", strategy], out["ctranslate2", strategy]
        assert len(torch_records) == len(ct2_records) == len(TEXTS[name])
        for t, c in zip(torch_records, ct2_records, strict=True):
            key = [(e["label"], e["start"], e["end"], e["text"]) for e in t["entities"]]
            assert key == [(e["label"], e["start"], e["end"], e["text"]) for e in c["entities"]]
            for te, ce in zip(t["entities"], c["entities"], strict=True):
                assert ce["score"] == pytest.approx(te["score"], abs=1e-4)


def test_formats(taggers: dict[str, Path]) -> None:
    text = TEXTS["bert"][0]
    records = ours(taggers["bert"], [text])
    entities = records[0]["entities"]
    marked = run_cli(["tag", "-m", str(taggers["bert"]), text])
    assert marked.returncode == 0, marked.stderr
    rebuilt = marked.stdout.rstrip("\n")
    for e in entities:
        assert f"[{e['text']}]({e['label']})" in rebuilt
    words = ours(taggers["bert"], [text], aggregation="first")[0]["entities"]  # one label per word
    args = ["tag", "-m", str(taggers["bert"]), "-f", "conll", "-a", "first"]
    conll = run_cli(args, input=f"{text}\n{TEXTS['bert'][1]}\n")
    assert conll.returncode == 0, conll.stderr
    blocks = conll.stdout.split("\n\n")
    assert len(blocks) == 3 and blocks[2] == ""  # a blank line after each input
    rows = [line.split(" ") for line in blocks[0].splitlines()]
    assert [w for w, _ in rows] == "The capital of France is Paris , said the king of Rome .".split()
    tags = [t for _, t in rows]
    assert all(t == "O" or t[:2] in ("B-", "I-") for t in tags)
    assert sum(t.startswith("B-") for t in tags) == len(words)  # one B- per entity
    tsv = run_cli(["tag", "-m", str(taggers["bert"]), "-f", "tsv", text])
    lines = tsv.stdout.splitlines()
    assert lines[0] == "index\tstart\tend\tlabel\tscore\ttext\terror" and len(lines) == 1 + len(entities)


def test_chinese_offsets_point_at_the_characters(taggers: dict[str, Path]) -> None:
    text = "张三住在北京天安门。"
    (record,) = ours(taggers["zh"], [text], aggregation="none")
    assert [e["text"] for e in record["entities"]] == [text[e["start"] : e["end"]] for e in record["entities"]]
    assert all(len(e["text"]) == 1 for e in record["entities"])  # one character per token
    conll = run_cli(["tag", "-m", str(taggers["zh"]), "-f", "conll", text])
    assert [line.split(" ")[0] for line in conll.stdout.splitlines() if line] == list(text)


def test_bad_options_exit_2_with_one_line(taggers: dict[str, Path]) -> None:
    model = str(taggers["bert"])
    for args, message in (
        (["-a", "longest"], "unknown --aggregation 'longest'"),
        (["--max-length", "8", "--stride", "6"], "--stride 6 must be below the 6 tokens"),
        (["-f", "xml"], "unknown --format 'xml'"),
    ):
        result = run_cli(["tag", "-m", model, *args, "a line"])
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_grouping_rules() -> None:
    def e(label: str, start: int, score: float = 0.5) -> dict[str, Any]:
        return {"label": label, "score": score, "start": start, "end": start + 1}

    groups = group_entities([e("B-PER", 0), e("I-PER", 1), e("B-PER", 2), e("PER", 3), e("O", 4), e("I-LOC", 5)])
    assert [(g["label"], g["start"], g["end"]) for g in groups] == [
        ("PER", 0, 2),
        ("PER", 2, 4),
        ("O", 4, 5),
        ("LOC", 5, 6),
    ]
    assert bio("B-LOC") == ("B", "LOC") and bio("MISC") == ("I", "MISC")
    merged = merge_windows([e("LOC", 0), {**e("LOC", 0), "end": 3}, e("PER", 5, 0.4), e("PER", 5, 0.9)])
    assert [(m["start"], m["end"], m["score"]) for m in merged] == [(0, 3, 0.5), (5, 6, 0.9)]
    words = [(0, 3), (4, 9), (10, 12), (13, 18)]
    assert word_tags(words, [{"label": "PER", "start": 4, "end": 12}]) == ["O", "B-PER", "I-PER", "O"]
    tokens = [{"label": "B-PER", "start": 4, "end": 9}, {"label": "I-PER", "start": 10, "end": 12}]
    assert word_tags(words, tokens) == ["O", "B-PER", "I-PER", "O"]
