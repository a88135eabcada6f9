"""Does ``llmtool pretrain`` learn a small corpus of facts on its defaults (issue 12)?

A corpus unlike ``llmtool corpus facts``: invented people, each with a home town, a job and a
pet, stated in five phrasings per relation, one short sentence per line, shuffled, no blank lines.
For every (person, relation) one phrasing is held out of the corpus (each phrasing is still seen
with the other people). The script trains with NO training flags (``pretrain CORPUS --objective
mlm|clm --output DIR``) and judges the model with llmtool's own ``fill-mask`` and ``generate``:

- mlm: top-1 of ``fill-mask`` on the answer masked, on phrasings seen in the corpus and on the
  held-out ones (the issue's bar: >= 80 % seen, >= 50 % held out);
- clm: greedy continuation of a seen phrasing's prefix starts with the answer (bar: >= 80 %).

Usage: ``python -m bench.learns [--corpus people|facts] [--objective mlm|clm|both] [--people N] [--seed S]
[--dir DIR] [-- EXTRA PRETRAIN FLAGS]``; ``--corpus facts`` judges the README's quick start the same way.
It prints one JSON line per objective: accuracies, training steps, epochs, examples, seconds.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAMES = (
    "Alice Bruno Carla Dmitri Elena Farid Greta Hugo Ines Jonas Karim Lena Marco Nadia Oskar Paula "
    "Rosa Stefan Tara Umar Vera Walter Xenia Yusuf Zoe Anton Bianca Cyril Daria Emil Fiona Gustav "
    "Hanna Igor Julia Kevin Laura Mateo Nora Pablo"
).split()
CITIES = "Boston Lyon Madrid Denver Oslo Cairo Dublin Lima Seoul Perth Quebec Naples Munich Bergen Tunis".split()
JOBS = "baker pilot doctor teacher farmer painter lawyer nurse chef dentist plumber singer".split()
PETS = "cat dog parrot rabbit horse goat turtle hamster".split()
RELATIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "city": (
        tuple(CITIES),
        (
            "{n} lives in {a}.",
            "The home town of {n} is {a}.",
            "{n} has a house in {a}.",
            "Every morning {n} walks through {a}.",
            "The address of {n} is in {a}.",
        ),
    ),
    "job": (
        tuple(JOBS),
        (
            "{n} works as a {a}.",
            "The job of {n} is {a}.",
            "{n} earns a living as a {a}.",
            "By trade, {n} is a {a}.",
            "People in town know {n} as a {a}.",
        ),
    ),
    "pet": (
        tuple(PETS),
        (
            "{n} owns a {a}.",
            "The pet of {n} is a {a}.",
            "At home {n} feeds a {a}.",
            "{n} takes care of a {a}.",
            "The animal that lives with {n} is a {a}.",
        ),
    ),
}


def make_corpus(people: int, seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """The corpus lines and the probes (masked text, prompt, answer, held out?)."""
    rng = random.Random(seed)
    lines, probes = [], []
    for i, name in enumerate(NAMES[:people]):
        for r, (relation, (answers, templates)) in enumerate(RELATIONS.items()):
            answer = rng.choice(answers)
            held = (i + r) % len(templates)
            for t, template in enumerate(templates):
                sentence = template.format(n=name, a=answer)
                prefix = template.split("{a}")[0].format(n=name).rstrip()
                probes.append(
                    {"masked": template.format(n=name, a="[MASK]"), "prompt": prefix, "answer": answer,
                     "heldout": t == held, "relation": relation}
                )  # fmt: skip
                if t != held:
                    lines.append(sentence)
    rng.shuffle(lines)
    return lines, probes


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmtool", *args], input=stdin, capture_output=True, text=True, check=False
    )


def judge(objective: str, folder: Path, probes: list[dict[str, Any]]) -> dict[str, float]:
    """Top-1 accuracy on the probes seen in the corpus and on those held out of it."""
    if objective == "mlm":
        out = cli("fill-mask", "-m", str(folder), "--json", "--top-k", "1",
                  stdin="".join(p["masked"] + "\n" for p in probes))  # fmt: skip
        assert out.returncode == 0, out.stderr
        guesses = [json.loads(line)["masks"][0]["predictions"][0]["token"].strip() for line in out.stdout.splitlines()]
    else:
        out = cli("generate", "-m", str(folder), "--greedy", "-t", "4", "--no-prompt", "--json",
                  stdin="".join(p["prompt"] + "\n" for p in probes))  # fmt: skip
        assert out.returncode == 0, out.stderr
        guesses = [_first_word(json.loads(line)["generations"][0]["text"]) for line in out.stdout.splitlines()]
    assert len(guesses) == len(probes), out.stderr
    scores: dict[str, list[bool]] = {"seen": [], "heldout": []}
    for probe, guess in zip(probes, guesses, strict=True):
        scores["heldout" if probe["heldout"] else "seen"].append(guess.lower() == probe["answer"].lower())
    return {k: round(sum(v) / len(v), 3) for k, v in scores.items() if v}


def _first_word(text: str) -> str:
    words = text.replace(".", " ").replace(",", " ").split()
    return words[0] if words else ""


def facts_corpus(work: Path) -> tuple[Path, list[dict[str, Any]]]:
    """``llmtool corpus facts`` (the README's quick start) and its probes, in this script's form."""
    corpus, probes = work / "facts.txt", work / "probes.jsonl"
    made = cli("corpus", "facts", "-o", str(corpus), "--probes", str(probes), "-q")
    assert made.returncode == 0, made.stderr
    rows = [json.loads(line) for line in probes.read_text().splitlines()]
    return corpus, [{**r, "heldout": r["split"] == "heldout"} for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", default="both", choices=["mlm", "clm", "both"])
    parser.add_argument(
        "--corpus",
        default="people",
        choices=["people", "facts"],
        help="people: this script's; facts: llmtool corpus facts (the README's quick start).",
    )
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="Work folder (default: a temporary one).")
    parser.add_argument("extra", nargs="*", help="Extra pretrain flags (the judged runs give none).")
    args = parser.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="learns-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.corpus == "facts":
        corpus, probes = facts_corpus(work)
    else:
        lines, probes = make_corpus(args.people, args.seed)
        corpus = work / "people.txt"
        corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for objective in ("mlm", "clm") if args.objective == "both" else (args.objective,):
        folder = work / f"{args.corpus}-{objective}"
        started = time.monotonic()
        trained = cli("pretrain", str(corpus), "--objective", objective, "--output", str(folder), "--overwrite",
                      "--json", *args.extra)  # fmt: skip
        seconds = time.monotonic() - started
        if trained.returncode != 0:
            print(trained.stderr, file=sys.stderr)
            return 1
        metrics = json.loads(trained.stdout)
        plan = [line for line in trained.stderr.splitlines() if "plan:" in line]
        print(json.dumps({
            "objective": objective, "corpus": args.corpus, **judge(objective, folder, probes),
            "steps": metrics["train"]["steps"], "epochs": metrics["train"]["epochs"],
            "loss": metrics["train"]["loss"], "seconds": round(seconds, 1), "plan": plan[0] if plan else None,
            "extra": args.extra,
        }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
