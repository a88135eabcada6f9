"""``finetune --task tag``: CoNLL (IOB1, IOB2, BIOES/BMES), JSON Lines tokens and doccano spans read into
IOB2, first-subword labelling (and --label-all-subwords), malformed files refused with one line naming
file and line (exit 2, no folder), a trained tagger that ``llmtool tag`` runs, and LoRA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import SHARED_DATA, cli_env, run_cli

from llmtool.training.recipes.tag import IGNORED, TagEncoder
from llmtool.training.tag_data import TagLayout, label_order, scheme_of, sentences, tag_layout, to_iob2

ENV = cli_env(OMP_NUM_THREADS="1")
CONLL = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
and CC O O
Paris NNP I-NP I-LOC
Rome NNP I-NP B-LOC
"""


def rows(path: Path) -> list[dict[str, Any]]:
    layout = tag_layout(str(path), "utf-8")
    return list(sentences(layout, scheme_of({t for r in sentences(layout, "plain") for t in r["tags"]})))


def test_tag_schemes_become_iob2() -> None:
    assert to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-LOC",
        "B-ORG",
    ]  # IOB1
    assert to_iob2(["B-PER", "I-PER", "B-PER", "O"]) == ["B-PER", "I-PER", "B-PER", "O"]  # IOB2 stays
    assert to_iob2(["B-ORG", "I-ORG", "E-ORG", "S-LOC", "S-LOC", "E-PER"]) == [
        "B-ORG",
        "I-ORG",
        "I-ORG",
        "B-LOC",
        "B-LOC",
        "B-PER",
    ]  # BIOES
    assert to_iob2(["B-NAME", "M-NAME", "E-NAME", "O", "S-ORG"]) == ["B-NAME", "I-NAME", "I-NAME", "O", "B-ORG"]  # BMES
    assert scheme_of({"O", "B-PER"}) == "iob" and scheme_of({"NN", "VB"}) == "plain" and scheme_of({"O", "NN", "B-X"})
    assert label_order({"O", "B-PER", "I-LOC", "B-LOC"}) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_the_three_formats(tmp_path: Path) -> None:
    conll = tmp_path / "train.conll"
    conll.write_text(CONLL, encoding="utf-8")
    read = rows(conll)
    assert [r["line"] for r in read] == [3, 9]  # -DOCSTART- dropped, each sentence at its first line
    assert read[0]["text"] == "EU rejects German call ."
    assert read[0]["tags"] == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert read[1]["tags"] == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert [read[0]["text"][s:e] for s, e in zip(read[0]["starts"], read[0]["ends"], strict=True)] == [
        "EU",
        "rejects",
        "German",
        "call",
        ".",
    ]
    tokens = tmp_path / "train.jsonl"
    tokens.write_text(json.dumps({"tokens": ["张", "三", "好"], "tags": ["B-PER", "E-PER", "O"]}) + "\n")
    (row,) = rows(tokens)
    assert row["text"] == "张 三 好" and row["tags"] == ["B-PER", "I-PER", "O"]
    spans = tmp_path / "spans.jsonl"
    records = [
        {"text": "张三住在北京。", "label": [[0, 2, "PER"], [4, 6, "LOC"]]},
        {"text": "Angela Merkel visited Paris.", "entities": [{"start_offset": 22, "end_offset": 27, "label": "LOC"}]},
        {"text": "Off by one: Parisian", "label": [[12, 17, "LOC"]]},
        {"text": "nothing here"},
    ]
    spans.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    read = rows(spans)
    assert read[0]["tags"] == ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]  # a word per character
    assert read[1]["tags"] == ["O", "O", "O", "B-LOC", "O"]
    assert read[2]["tags"][-1] == "B-LOC"  # off the word boundary: the word it touches is labelled ...
    warnings: list[str] = []
    from llmtool.training.tag_data import raw_sentences

    list(raw_sentences(tag_layout(str(spans), "utf-8"), warnings))
    assert warnings == [  # ... and reported
        f"{spans}:3: span [12, 17) 'Paris' (LOC) does not fall on word boundaries; the words it touches are labelled"
    ]
    assert read[3]["tags"] == ["O", "O"]


def test_first_subword_and_all_subwords(tiny_bert: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    labels = ["O", "B-PER", "I-PER"]
    label2id = {name: i for i, name in enumerate(labels)}
    batch = {"text": ["kings ran"], "starts": [[0, 6]], "ends": [[5, 9]], "tags": [["B-PER", "O"]]}
    tokens = tokenizer.convert_ids_to_tokens(tokenizer("kings ran")["input_ids"])
    assert tokens == ["[CLS]", "king", "##s", "r", "##a", "##n", "[SEP]"]
    first = TagEncoder(tokenizer, 64, label2id, all_subwords=False)(batch)["labels"][0]
    assert first == [IGNORED, 1, IGNORED, 0, IGNORED, IGNORED, IGNORED]
    every = TagEncoder(tokenizer, 64, label2id, all_subwords=True)(batch)["labels"][0]
    assert every == [IGNORED, 1, 2, 0, 0, 0, IGNORED]  # B- made I- on the continuation


MALFORMED = [
    ("bad.conll", "EU NNP B-ORG\nrejects\n", 2, "expected a token and its tag"),
    ("mixed.conll", "EU B-ORG\nrejects VBZ\n", 2, "tag 'VBZ' is neither O nor B-/I-/E-/S-/M- and a type"),
    ("bad.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', 1, "2 tokens but 1 tags"),
    ("ids.jsonl", '{"tokens": ["a"], "tags": [3]}\n', 1, '"tags" must be a list of tag names'),
    ("broken.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": \n', 2, "not valid JSON"),
    ("outside.jsonl", '{"text": "abc", "label": [[1, 9, "X"]]}\n', 1, "span [1, 9) is outside the text"),
    ("nested.jsonl", '{"text": "a b c", "label": [[0, 3, "X"], [2, 5, "Y"]]}\n', 1, "overlaps another"),
    ("shape.jsonl", '{"text": "a b c", "label": [[0, 3]]}\n', 1, 'a span must be [start, end, "TYPE"]'),
]


@pytest.mark.parametrize(("name", "content", "line", "message"), MALFORMED)
def test_malformed_files_exit_2_naming_file_and_line(
    tmp_path: Path, tiny_bert: Path, name: str, content: str, line: int, message: str
) -> None:
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    result = run_cli(["finetune", str(data), "--task", "tag", "-m", str(tiny_bert), "-o", str(out)], env=ENV)
    assert result.returncode == 2, result.stderr
    (only,) = result.stderr.strip().splitlines()
    assert only.startswith(f"llmtool: error: {data}:{line}: ") and message in only
    assert not out.exists()


def test_unknown_validation_tags_are_refused(tmp_path: Path, tiny_bert: Path) -> None:
    train, valid = tmp_path / "train.conll", tmp_path / "valid.conll"
    train.write_text(CONLL, encoding="utf-8")
    valid.write_text("a O\nb B-ORG\n\nc B-FOO\n", encoding="utf-8")
    args = ["finetune", str(train), "--valid", str(valid), "--task", "tag", "-m", str(tiny_bert), "-o", "unused"]
    result = run_cli(args, env=ENV)
    assert result.returncode == 2
    assert f"{valid}:4: tag 'B-FOO' does not occur in the training data" in result.stderr


def ner_data(folder: Path, sentences: int = 60) -> Path:
    """A small IOB1 CoNLL file the tiny models can learn: names, places and plain words."""
    people, places = ["king", "queen"], ["paris", "rome", "berlin", "tokyo"]
    lines = []
    for i in range(sentences):
        person, place = people[i % 2], places[i % 4]
        lines += [f"the O\n{person} I-PER\nlived O\nin O\n{place} I-LOC\n.\tO\n\n"]
    path = folder / "train.conll"
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    folder = tmp_path_factory.mktemp("tag-finetune")
    out = folder / "ner"
    args = ["finetune", str(ner_data(folder)), "--task", "tag", "-m", str(tiny_bert), "-o", str(out)]
    result = run_cli([*args, "--max-steps", "60", "--lr", "5e-3", "--seed", "1", "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["labels"] == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert metrics["valid"]["f1"] > 0.9, metrics["valid"]
    return out


def test_a_trained_tagger_tags(trained: Path) -> None:
    config = json.loads((trained / "config.json").read_text())
    assert config["architectures"] == ["BertForTokenClassification"]
    result = run_cli(["tag", "-m", str(trained), "--json", "the queen lived in rome ."], env=ENV)
    assert result.returncode == 0, result.stderr
    entities = json.loads(result.stdout)["entities"]
    assert [(e["text"], e["label"]) for e in entities] == [("queen", "PER"), ("rome", "LOC")]
    conll = run_cli(["tag", "-m", str(trained), "-f", "conll", "the king lived in paris ."], env=ENV)
    assert conll.stdout == "the O\nking B-PER\nlived O\nin O\nparis B-LOC\n. O\n\n"


def test_lora_tagger(tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "lora"
    args = ["finetune", str(ner_data(tmp_path)), "--task", "tag", "-m", str(tiny_bert), "-o", str(out), "--lora"]
    result = run_cli([*args, "--max-steps", "60", "--lr", "2e-2", "--seed", "1", "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    assert (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"
    tagged = run_cli(["tag", "-m", str(out), "--json", "the king lived in berlin ."], env=ENV)
    assert tagged.returncode == 0, tagged.stderr
    assert {e["label"] for e in json.loads(tagged.stdout)["entities"]} <= {"PER", "LOC"}


def test_dry_run_reports_the_format_and_tags(tmp_path: Path, tiny_bert: Path) -> None:
    data = ner_data(tmp_path, 20)
    result = run_cli(["finetune", str(data), "--task", "tag", "-m", str(tiny_bert), "--dry-run", "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["columns"] == {"format": "CoNLL columns (token ... tag)"}
    assert report["rows"] == {"train": 18, "valid": 2}
    assert set(report["labels"]["train"]) == {"O", "B-PER", "B-LOC"}


@pytest.mark.skipif(not (SHARED_DATA / "ner" / "resume_zh").is_dir(), reason="needs ../shared/data/ner")
def test_resume_ner_bmes_reads_as_iob2() -> None:
    layout = tag_layout(str(SHARED_DATA / "ner" / "resume_zh" / "dev.char.bmes"), "utf-8")
    assert isinstance(layout, TagLayout) and layout.format == "conll"
    read = list(sentences(layout, "iob"))
    assert len(read) == 463
    assert sum(len(r["tags"]) for r in read) == 13890
    tags = {t for r in read for t in r["tags"]}
    assert all(t == "O" or t[:2] in ("B-", "I-") for t in tags)
    assert all(len(r["text"][s:e]) == 1 for r in read[:50] for s, e in zip(r["starts"], r["ends"], strict=True))


@pytest.mark.slow
def test_sigint_then_resume_matches_the_uninterrupted_run(tmp_path: Path, tiny_bert: Path) -> None:
    import signal

    from conftest import interrupt_after_first_epoch

    data = ner_data(tmp_path, 1200)
    common = ["finetune", str(data), "--task", "tag", "--model", str(tiny_bert), "--epochs", "3", "--lr", "1e-3"]
    common += ["--batch-size", "16", "--seed", "7", "--json"]
    whole = run_cli([*common, "--output", str(tmp_path / "whole")], env=ENV, subprocess=True)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)
    out = tmp_path / "interrupted"
    code, stderr = interrupt_after_first_epoch([*common, "--output", str(out)], signal.SIGINT, ENV, 120)
    assert code == 130, stderr
    resumed = run_cli([*common, "--output", str(out), "--resume"], env=ENV, subprocess=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr
    got = json.loads(resumed.stdout)
    assert got["valid"] == expected["valid"] and got["history"] == expected["history"]
