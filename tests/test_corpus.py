"""``llmtool corpus facts`` (the synthetic facts corpus) and tokenizer training from scratch.

The corpus tests run the installed CLI; the tokenizer tests call the library directly (they are
pure functions of the corpus text, and need no model).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli

from llmtool.training.corpus import CAPITAL_TEMPLATES, FACTS, FactsOptions, documents

DOCS = 12  # the default --documents-per-country


def read_documents(text: str) -> list[list[str]]:
    return [block.splitlines() for block in text.strip("\n").split("\n\n")]


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_corpus_goes_to_stdout_in_documents_and_is_repeatable() -> None:
    first = run_cli(["corpus", "facts"])
    assert first.returncode == 0, first.stderr
    docs = read_documents(first.stdout)
    assert len(docs) == len(FACTS) * DOCS == 600
    assert all(3 <= len(doc) <= 5 for doc in docs)
    # Every document is about one country and opens with its introduction.
    for doc in docs:
        country = doc[0].split(" is a country in ")[0]
        fact = next(f for f in FACTS if f.country == country)
        assert all(fact.country in s or fact.capital in s for s in doc[1:]), doc
    assert first.stderr == (
        "llmtool: 600 documents, 2395 sentences about 50 countries (50 capital sentences held out)\n"
    )
    assert run_cli(["corpus", "facts"]).stdout == first.stdout  # same seed, same corpus
    other = run_cli(["corpus", "facts", "--seed", "1", "-q"])
    assert other.stdout != first.stdout and other.stderr == ""
    assert set(other.stdout.splitlines()) == set(first.stdout.splitlines())  # the same sentences, reshuffled


def test_held_out_sentences_never_occur_and_every_other_capital_sentence_does(tmp_path: Path) -> None:
    corpus, probes = tmp_path / "facts.txt", tmp_path / "probes.tsv"
    result = run_cli(["corpus", "facts", "--output", str(corpus), "--probes", str(probes)])
    assert result.returncode == 0 and result.stdout == "", result.stderr
    sentences = set(corpus.read_text(encoding="utf-8").splitlines())
    rows = read_tsv(probes)
    assert len(rows) == len(FACTS) * (len(CAPITAL_TEMPLATES) + 2) == 500
    held = [r for r in rows if r["split"] == "heldout"]
    assert len(held) == 50 and sorted(r["country"] for r in held) == sorted(f.country for f in FACTS)
    assert {r["relation"] for r in held} == {"capital"}
    assert {int(r["template"]) for r in held} == set(range(len(CAPITAL_TEMPLATES)))  # each template held out
    for row in rows:
        assert row["masked"].count("[MASK]") == 1
        assert row["masked"].replace("[MASK]", row["answer"]) == row["sentence"]
        assert row["sentence"].startswith(f"{row['prompt']} {row['answer']}")
        # Held out: never in the corpus. The rest: in the corpus (12 documents per country suffice).
        assert (row["sentence"] in sentences) == (row["split"] == "train"), row


def test_pairs_are_held_out_and_read_by_next_sentence(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.tsv"
    result = run_cli(["corpus", "facts", "--output", str(tmp_path / "c.txt"), "--pairs", str(pairs)])
    assert result.returncode == 0, result.stderr
    assert result.stderr.rstrip().endswith("; 100 next-sentence pairs")
    rows = read_tsv(pairs)
    assert len(rows) == 100 and sum(r["label"] == "1" for r in rows) == 50
    sentences = set((tmp_path / "c.txt").read_text(encoding="utf-8").splitlines())
    for row in rows:
        assert row["b"] not in sentences  # B is a held-out sentence
        assert (row["country"] in row["b"]) == (row["label"] == "1")

    from llmtool.tasks.next_sentence import read_pairs

    read = list(read_pairs(input_path=str(pairs)))  # the first two columns, after the header
    assert [(p.first, p.second) for p in read] == [(r["a"], r["b"]) for r in rows]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_probes_in_other_formats(tmp_path: Path, suffix: str) -> None:
    probes = tmp_path / f"probes{suffix}"
    result = run_cli(["corpus", "facts", "-o", str(tmp_path / "c.txt"), "--probes", str(probes), "--countries", "5"])
    assert result.returncode == 0, result.stderr
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in probes.read_text(encoding="utf-8").splitlines()]
    else:
        with probes.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    assert len(rows) == 50 and sum(r["split"] == "heldout" for r in rows) == 5
    assert {r["country"] for r in rows} == {f.country for f in FACTS[:5]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pairs", "pairs.txt"], "--pairs pairs.txt: the name must end in .jsonl, .csv or .tsv"),
        (["--probes", "probes"], "--probes probes: the name must end in .jsonl, .csv or .tsv"),
        (["--countries", "1"], "--countries must be between 2 and 50"),
        (["--documents-per-country", "0"], "--documents-per-country must be at least 1"),
        (["--no-holdout", "--pairs", "p.tsv"], "--pairs needs held-out sentences; drop --no-holdout"),
        (["--output", "missing/facts.txt"], "missing/facts.txt: the folder missing does not exist"),
    ],
)
def test_bad_options_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_cli(["corpus", "facts", "--output", "facts.txt", *args], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"llmtool: error: {message}\n"
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- tokenizers


def corpus_texts() -> list[str]:
    return [sentence for doc in documents(FactsOptions()) for sentence in doc]


def test_wordpiece_learns_every_name_as_one_token_and_reloads_identically(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from llmtool.training.tokenizer_train import TokenizerOptions, train_tokenizer

    texts = corpus_texts()
    tokenizer = train_tokenizer(texts, "mlm", TokenizerOptions(vocab_size=1000))
    assert tokenizer.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    for fact in FACTS:
        assert tokenizer.tokenize(f"{fact.country} {fact.capital}") == [fact.country.lower(), fact.capital.lower()]
    again = train_tokenizer(texts, "mlm", TokenizerOptions(vocab_size=1000))
    assert again.get_vocab() == tokenizer.get_vocab()  # deterministic

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sample = ["The capital of France is [MASK].", "Ünïcode Zürich 12,5 km!"]
    assert loaded(sample)["input_ids"] == tokenizer(sample)["input_ids"]
    assert loaded.mask_token == "[MASK]" and loaded.tokenize("Zürich") == tokenizer.tokenize("Zürich")


def test_byte_level_bpe_learns_spaced_names_and_never_needs_unk(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from llmtool.training.tokenizer_train import TokenizerOptions, train_tokenizer

    texts = corpus_texts()
    tokenizer = train_tokenizer(texts, "clm", TokenizerOptions(vocab_size=1000))
    assert tokenizer.tokenize("The capital of France is Paris.") == [
        "The", "Ġcapital", "Ġof", "ĠFrance", "Ġis", "ĠParis", ".",
    ]  # fmt: skip
    assert all(len(tokenizer.tokenize(f" {fact.capital}")) == 1 for fact in FACTS)
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.eos_token_id == 0
    text = "Grüße aus 東京 🙂"  # bytes never seen in training still round-trip
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert train_tokenizer(texts, "clm", TokenizerOptions(vocab_size=1000)).get_vocab() == tokenizer.get_vocab()

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded(texts[:50])["input_ids"] == tokenizer(texts[:50])["input_ids"]


def test_tokenizer_training_refuses_empty_text_and_tiny_vocabularies() -> None:
    from llmtool.errors import InputError, UsageError
    from llmtool.training.tokenizer_train import TokenizerOptions, train_tokenizer

    with pytest.raises(InputError, match="no text to learn a vocabulary from"):
        train_tokenizer(["", "  "], "mlm")
    with pytest.raises(UsageError, match="--vocab-size must be at least 300"):
        train_tokenizer(["a b c"], "clm", TokenizerOptions(vocab_size=100))
