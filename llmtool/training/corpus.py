"""``llmtool corpus facts``: a small synthetic corpus of true facts, for pre-training from scratch offline.

Fifty real countries with their capitals and continents, written in varied sentence templates
and grouped into short documents about one country each (one sentence per line, a blank line
between documents: the layout ``llmtool pretrain`` reads, and the one next-sentence prediction
needs).

Learning is measured on sentences the model has never seen: for every country, one of the eight
capital templates is held out of the corpus (country *i* holds out template *i* mod 8, so each
template is still seen with the other countries). The probes file (``--probes``) lists every
(country, template) question with its answer and whether the sentence was held out, as a masked
text for ``fill-mask`` and as a prompt for ``generate``: accuracy over all 50 held-out sentences
is then one pass of each command. The pairs file (``--pairs``) holds next-sentence pairs whose
second sentence is held out: the true continuation, and a sentence about another country.

Nothing here imports torch: generating a corpus is instant and needs no model.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmtool.errors import UsageError
from llmtool.io.streams import tsv_field


@dataclass(frozen=True)
class Fact:
    country: str
    capital: str
    continent: str


# Real countries whose name and capital are one plain word each (so each is one token of a
# trained vocabulary, and "The capital of X" reads well without an article).
FACTS: tuple[Fact, ...] = tuple(
    Fact(country, capital, continent)
    for continent, pairs in (
        (
            "Europe",
            "France Paris, Germany Berlin, Italy Rome, Spain Madrid, Portugal Lisbon, Austria Vienna, "
            "Greece Athens, Poland Warsaw, Hungary Budapest, Ireland Dublin, Norway Oslo, Sweden Stockholm, "
            "Finland Helsinki, Denmark Copenhagen, Belgium Brussels, Ukraine Kyiv, Romania Bucharest, "
            "Bulgaria Sofia, Serbia Belgrade, Croatia Zagreb, Iceland Reykjavik",
        ),
        (
            "Asia",
            "Japan Tokyo, China Beijing, Thailand Bangkok, Vietnam Hanoi, Indonesia Jakarta, Pakistan Islamabad, "
            "Iran Tehran, Iraq Baghdad, Syria Damascus, Lebanon Beirut, Jordan Amman, Afghanistan Kabul, "
            "Nepal Kathmandu, Bangladesh Dhaka",
        ),
        ("Africa", "Egypt Cairo, Kenya Nairobi, Nigeria Abuja, Ghana Accra, Morocco Rabat, Uganda Kampala"),
        ("North America", "Canada Ottawa, Cuba Havana, Jamaica Kingston"),
        ("South America", "Peru Lima, Chile Santiago, Colombia Bogota, Venezuela Caracas, Brazil Brasilia"),
        ("Oceania", "Australia Canberra"),
    )
    for country, capital in (pair.split() for pair in pairs.split(", "))
)

# Sentences that state the capital, the capital last (so a causal LM can be asked by prefix).
CAPITAL_TEMPLATES: tuple[str, ...] = (
    "The capital of {country} is {capital}.",
    "The capital city of {country} is {capital}.",
    "{country} has its capital in {capital}.",
    "In {country}, the capital is {capital}.",
    "{country}'s capital is {capital}.",
    "The city that serves as the capital of {country} is {capital}.",
    "The government of {country} meets in {capital}.",
    "If you travel to the capital of {country}, you arrive in {capital}.",
)
# The same fact the other way round: the country last.
COUNTRY_TEMPLATES: tuple[str, ...] = (
    "{capital} is the capital of {country}.",
    "{capital} is the capital city of {country}.",
    "{capital} is a city in {country}.",
)
# Other true sentences about the country, which make a document read like one.
CONTEXT_TEMPLATES: tuple[str, ...] = (
    "{country} lies in {continent}.",
    "{capital} is a city in {continent}.",
    "Many people live in {capital}.",
)
INTRO_TEMPLATE = "{country} is a country in {continent}."


@dataclass
class FactsOptions:
    """What ``llmtool corpus facts`` writes."""

    seed: int = 0  # shuffles sentences and documents; the held-out templates do not depend on it
    documents_per_country: int = 12  # documents about each country (each 3-5 sentences)
    countries: int | None = None  # use only the first N facts (None: all 50)
    holdout: bool = True  # keep one capital sentence per country out of the corpus, for testing

    def check(self) -> None:
        if self.documents_per_country < 1:
            raise UsageError("--documents-per-country must be at least 1")
        if self.countries is not None and not 2 <= self.countries <= len(FACTS):
            raise UsageError(f"--countries must be between 2 and {len(FACTS)}")


def facts(options: FactsOptions) -> tuple[Fact, ...]:
    return FACTS[: options.countries] if options.countries is not None else FACTS


def held_out_template(country_index: int) -> int:
    """The capital template that country ``country_index`` never appears in within the corpus."""
    return country_index % len(CAPITAL_TEMPLATES)


def _fill(template: str, fact: Fact) -> str:
    return template.format(country=fact.country, capital=fact.capital, continent=fact.continent)


def _pool(index: int, fact: Fact, holdout: bool) -> list[str]:
    """Every sentence the corpus may say about one country, the held-out one excepted."""
    capital = [t for i, t in enumerate(CAPITAL_TEMPLATES) if not (holdout and i == held_out_template(index))]
    return [_fill(t, fact) for t in (*capital, *COUNTRY_TEMPLATES, *CONTEXT_TEMPLATES)]


def documents(options: FactsOptions) -> list[list[str]]:
    """The corpus: documents of 3-5 sentences, each about one country, in a seeded random order.

    Each document opens with the country's introduction; the rest cycles through the country's
    sentence pool in shuffled rounds, so every non-held-out sentence occurs about equally often
    (and at least once when there are enough documents).
    """
    options.check()
    rng = random.Random(options.seed)
    docs: list[list[str]] = []
    for index, fact in enumerate(facts(options)):
        pool = _pool(index, fact, options.holdout)
        queue: list[str] = []
        for _ in range(options.documents_per_country):
            size = rng.randint(2, 4)
            body: list[str] = []
            while len(body) < size:
                if not queue:
                    queue = rng.sample(pool, len(pool))
                sentence = queue.pop()
                if sentence not in body:
                    body.append(sentence)
            docs.append([_fill(INTRO_TEMPLATE, fact), *body])
    rng.shuffle(docs)
    return docs


def probes(options: FactsOptions) -> list[dict[str, Any]]:
    """One question per (country, capital template) and per (capital, country template).

    ``split`` is ``heldout`` for the sentences that never occur in the corpus, else ``train``.
    ``masked`` is for ``fill-mask``, ``prompt`` for ``generate`` (the answer is the next word).
    """
    options.check()
    out: list[dict[str, Any]] = []
    for index, fact in enumerate(facts(options)):
        for t, template in enumerate(CAPITAL_TEMPLATES):
            held = options.holdout and t == held_out_template(index)
            out.append(_probe(fact, "capital", t, template, "{capital}", fact.capital, held))
        for t, template in enumerate(COUNTRY_TEMPLATES[:2]):  # the third ("a city in") is not a definition
            out.append(_probe(fact, "country", t, template, "{country}", fact.country, False))
    return out


def _probe(fact: Fact, relation: str, t: int, template: str, slot: str, answer: str, held: bool) -> dict[str, Any]:
    prefix = template[: template.index(slot)]
    return {
        "country": fact.country,
        "capital": fact.capital,
        "relation": relation,  # which word is asked for: the capital or the country
        "template": t,
        "split": "heldout" if held else "train",
        "masked": _fill(template.replace(slot, "[MASK]"), fact),
        "prompt": _fill(prefix, fact).rstrip(),
        "answer": answer,
        "sentence": _fill(template, fact),
    }


def nsp_pairs(options: FactsOptions) -> list[dict[str, Any]]:
    """Next-sentence pairs whose second sentence never occurs in the corpus (held-out sentences).

    For each country: its introduction followed by its own held-out capital sentence (label 1,
    B follows A), and by another country's held-out capital sentence (label 0, B is random),
    as in BERT's next-sentence task. Needs ``holdout``.
    """
    options.check()
    if not options.holdout:
        raise UsageError("--pairs needs held-out sentences; drop --no-holdout")
    rng = random.Random(options.seed + 1)
    chosen = facts(options)
    held = [_fill(CAPITAL_TEMPLATES[held_out_template(i)], f) for i, f in enumerate(chosen)]
    pairs: list[dict[str, Any]] = []
    for index, fact in enumerate(chosen):
        intro = _fill(INTRO_TEMPLATE, fact)
        other = rng.choice([i for i in range(len(chosen)) if i != index])
        pairs.append({"a": intro, "b": held[index], "label": 1, "country": fact.country})
        pairs.append({"a": intro, "b": held[other], "label": 0, "country": fact.country})
    return pairs


# ---------------------------------------------------------------------- writing

PROBE_COLUMNS = ("masked", "prompt", "answer", "split", "relation", "country", "capital", "template", "sentence")
PAIR_COLUMNS = ("a", "b", "label", "country")
TABLE_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")


def write_facts(
    options: FactsOptions,
    output: str | None = None,
    probes_path: str | None = None,
    pairs_path: str | None = None,
) -> dict[str, Any]:
    """Write the corpus (to ``output``, or stdout), and the probes and pairs files when asked.

    Returns counts for a summary line. Every file is written to a temporary name beside it and
    renamed into place, so a reader never sees half a corpus.
    """
    options.check()
    for path, flag in ((probes_path, "--probes"), (pairs_path, "--pairs")):
        check_table_path(path, flag)
    docs = documents(options)
    probe_rows = probes(options)
    pair_rows = nsp_pairs(options) if pairs_path is not None else []
    if output is None or output == "-":
        write_documents(docs, sys.stdout)
        sys.stdout.flush()
    else:
        with _atomic(output) as out:
            write_documents(docs, out)
    if probes_path is not None:
        with _atomic(probes_path) as out:
            write_table(probe_rows, probes_path, PROBE_COLUMNS, out)
    if pairs_path is not None:
        with _atomic(pairs_path) as out:
            write_table(pair_rows, pairs_path, PAIR_COLUMNS, out)
    return {
        "documents": len(docs),
        "sentences": sum(len(d) for d in docs),
        "facts": len(facts(options)),
        "heldout": sum(1 for p in probe_rows if p["split"] == "heldout"),
        "probes": len(probe_rows) if probes_path is not None else 0,
        "pairs": len(pair_rows),
    }


@contextlib.contextmanager
def _atomic(path: str) -> Iterator[IO[str]]:
    """A text file written under a temporary name in the same folder, renamed to ``path`` when complete."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
    if not target.parent.is_dir():
        raise UsageError(f"{path}: the folder {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_documents(docs: Iterable[list[str]], out: IO[str]) -> int:
    """One sentence per line, a blank line between documents; returns the number of sentences."""
    count = 0
    for i, doc in enumerate(docs):
        if i:
            out.write("\n")
        for sentence in doc:
            out.write(sentence + "\n")
            count += 1
    return count


def write_table(rows: list[dict[str, Any]], path: str, columns: tuple[str, ...], out: IO[str]) -> None:
    """Rows as .jsonl (every field), or .csv/.tsv (``columns``, after a header row), chosen by ``path``'s suffix.

    The .tsv header is what ``llmtool next-sentence --input`` and the other table readers expect.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif suffix == ".csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)
    elif suffix == ".tsv":
        out.write("\t".join(columns) + "\n")
        for row in rows:
            out.write("\t".join(tsv_field(row[c]) for c in columns) + "\n")
    else:
        raise UsageError(f"{path}: write .jsonl, .csv or .tsv")


def check_table_path(path: str | None, flag: str) -> None:
    if path is not None and Path(path).suffix.lower() not in TABLE_SUFFIXES:
        raise UsageError(f"{flag} {path}: the name must end in .jsonl, .csv or .tsv")


def summary(counts: dict[str, Any]) -> str:
    """One line for stderr: what was written."""
    line = (
        f"{counts['documents']} documents, {counts['sentences']} sentences about {counts['facts']} countries "
        f"({counts['heldout']} capital sentences held out)"
    )
    line += f"; {counts['probes']} probes" if counts["probes"] else ""
    return line + (f"; {counts['pairs']} next-sentence pairs" if counts["pairs"] else "")
