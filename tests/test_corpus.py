"""`llmtool corpus facts`: the synthetic facts corpus, its held-out sentences, probes and sentence pairs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli

from llmtool import corpus


def documents_of(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.strip("\n").split("\n\n")]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("facts")
    result = run_cli(
        [
            "corpus", "facts", "-o", str(folder / "facts.txt"), "--probes", str(folder / "probes.jsonl"),
            "--pairs", str(folder / "pairs.tsv"),
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr == "llmtool: 600 documents, 2395 sentences; 500 probes (50 held out); 100 sentence pairs\n"
    return folder


def test_the_facts_are_fifty_real_one_word_pairs() -> None:
    assert len(corpus.FACTS) == 50
    assert len({f.country for f in corpus.FACTS}) == 50 and len({f.capital for f in corpus.FACTS}) == 50
    known = {f.country: f.capital for f in corpus.FACTS}
    assert known["France"] == "Paris" and known["Japan"] == "Tokyo" and known["Kenya"] == "Nairobi"
    assert known["Australia"] == "Canberra" and known["Brazil"] == "Brasilia" and known["Canada"] == "Ottawa"
    for fact in corpus.FACTS:
        assert fact.country.isalpha() and fact.capital.isalpha(), fact


def test_corpus_is_documents_of_one_country_each(written: Path) -> None:
    docs = documents_of((written / "facts.txt").read_text(encoding="utf-8"))
    assert len(docs) == 600 and all(3 <= len(d) <= 5 for d in docs)
    for doc in docs:
        country = doc[0].split(" is a country in ")[0]
        fact = next(f for f in corpus.FACTS if f.country == country)
        assert all(fact.country in s or fact.capital in s for s in doc), doc
    per_country = {f.country: sum(d[0].startswith(f.country + " ") for d in docs) for f in corpus.FACTS}
    assert set(per_country.values()) == {12}


def test_held_out_sentences_never_occur_and_every_training_sentence_does(written: Path) -> None:
    sentences = set((written / "facts.txt").read_text(encoding="utf-8").splitlines())
    probes = [json.loads(line) for line in (written / "probes.jsonl").read_text().splitlines()]
    assert len(probes) == 500
    held = [p for p in probes if p["split"] == "heldout"]
    assert len(held) == 50 and {p["country"] for p in held} == {f.country for f in corpus.FACTS}
    assert {p["template"] for p in held} == set(range(len(corpus.CAPITAL_TEMPLATES)))  # every phrasing held out
    assert not [p["sentence"] for p in held if p["sentence"] in sentences]
    assert not [p["sentence"] for p in probes if p["split"] == "train" and p["sentence"] not in sentences]
    france = next(p for p in probes if p["country"] == "France" and p["relation"] == "capital" and p["template"] == 0)
    assert france["masked"] == "The capital of France is [MASK]."
    assert france["prompt"] == "The capital of France is" and france["answer"] == "Paris"


def test_probes_are_consistent(written: Path) -> None:
    for line in (written / "probes.jsonl").read_text().splitlines():
        p = json.loads(line)
        assert p["masked"].count("[MASK]") == 1
        assert p["masked"].replace("[MASK]", p["answer"]) == p["sentence"]
        assert p["sentence"].startswith(p["prompt"] + " " + p["answer"])


def test_pairs_are_held_out_and_balanced(written: Path) -> None:
    sentences = set((written / "facts.txt").read_text(encoding="utf-8").splitlines())
    with open(written / "pairs.tsv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 100 and sum(r["label"] == "1" for r in rows) == 50
    for row in rows:
        assert row["b"] not in sentences and row["a"] in sentences
        country = row["a"].split(" is a country")[0]
        assert (country in row["b"]) == (row["label"] == "1")


def test_seed_shuffles_and_is_repeatable() -> None:
    a = run_cli(["corpus", "facts", "--seed", "1", "-q"])
    b = run_cli(["corpus", "facts", "--seed", "1", "-q"])
    c = run_cli(["corpus", "facts", "--seed", "2", "-q"])
    assert a.returncode == 0 and a.stderr == ""
    assert a.stdout == b.stdout and a.stdout != c.stdout


def test_small_corpus_and_csv_probes(tmp_path: Path) -> None:
    result = run_cli(
        ["corpus", "facts", "--countries", "3", "--documents-per-country", "2", "--probes", str(tmp_path / "p.csv")]
    )
    assert result.returncode == 0, result.stderr
    docs = documents_of(result.stdout)
    assert len(docs) == 6 and {d[0].split()[0] for d in docs} == {"France", "Germany", "Italy"}
    with open(tmp_path / "p.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["masked", "prompt", "answer", "split", "relation", "country"] and len(rows) == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--probes", "p.txt"], "--probes p.txt: the name must end in .jsonl, .csv or .tsv"),
        (["--countries", "1"], "Invalid value for '--countries'"),
        (["--no-holdout", "--pairs", "x.tsv"], "--pairs needs held-out sentences; drop --no-holdout"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(["corpus", "facts", *args], cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and result.stdout == ""
    assert list(tmp_path.iterdir()) == []
