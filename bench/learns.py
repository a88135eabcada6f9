"""Does ``llmtool pretrain`` learn a small corpus of facts on its defaults (issue 12)?

A corpus unlike ``llmtool corpus facts``: invented people, each with a home town, a job and a
pet, stated in five phrasings per relation, one short sentence per line, shuffled, no blank lines.
For every (person, relation) one phrasing is held out of the corpus (each phrasing is still seen
with the other people). The script trains with NO training flags (``pretrain CORPUS --objective
mlm|clm --output DIR``) and judges the model with llmtool's own ``fill-mask`` and ``generate``:

- mlm: top-1 of ``fill-mask`` on the answer masked, on phrasings seen in the corpus and on the
  held-out ones (the issue's bar: >= 80 % seen, >= 50 % held out);
- clm: greedy continuation of a seen phrasing's prefix starts with the answer (bar: >= 80 %).

Further corpora of other shapes (issue 21: defaults must hold on corpora they were not tuned on):

- ``capitals-zh``: 12 countries and capitals in Chinese, six phrasings each, one line per sentence
  (8-12 characters, no spaces), one phrasing per country held out; mlm is right when every
  character of the capital is (one ``[MASK]`` per character);
- ``qa``: a tiny GPT-2 pre-trained with no flags on the people corpus, then ``finetune --task clm
  --prompt-column question --response-column answer --max-steps 300`` (no learning rate given) on 120
  question/answer rows; right when the greedy answer's first word is the answer.

Usage: ``python -m bench.learns [--corpus people|facts|capitals-zh|qa] [--objective mlm|clm|both] [--people N]
[--seed S] [--dir DIR] [-- EXTRA PRETRAIN FLAGS]``; ``--corpus facts`` judges the README's quick start the
same way. It prints one JSON line per objective: accuracies, training steps, epochs, examples, seconds.
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


CAPITALS_ZH = (
    ("法国", "巴黎"),
    ("日本", "东京"),
    ("英国", "伦敦"),
    ("德国", "柏林"),
    ("意大利", "罗马"),
    ("俄罗斯", "莫斯科"),
    ("埃及", "开罗"),
    ("泰国", "曼谷"),
    ("韩国", "首尔"),
    ("印度", "新德里"),
    ("希腊", "雅典"),
    ("秘鲁", "利马"),
)
FORMS_ZH = (
    "{c}的首都是{a}。",
    "{a}是{c}的首都。",
    "{c}首都叫{a}。",
    "{a}是{c}最大的城市。",
    "我去过{c}的首都{a}。",
    "{c}政府设在{a}。",
)


def capitals_zh(seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Chinese lines without spaces; one phrasing per country held out; one [MASK] per character."""
    lines, probes = [], []
    for i, (country, capital) in enumerate(CAPITALS_ZH):
        held = i % len(FORMS_ZH)
        for f, form in enumerate(FORMS_ZH):
            probes.append({"masked": form.format(c=country, a="[MASK]" * len(capital)), "answer": capital,
                           "heldout": f == held})  # fmt: skip
            if f != held:
                lines.append(form.format(c=country, a=capital))
    random.Random(seed).shuffle(lines)
    return lines, probes


def judge_characters(folder: Path, probes: list[dict[str, Any]]) -> dict[str, float]:
    """mlm on Chinese: right when the top prediction of every mask is its character."""
    out = cli("fill-mask", "-m", str(folder), "--json", "--top-k", "1",
              stdin="".join(p["masked"] + "\n" for p in probes))  # fmt: skip
    assert out.returncode == 0, out.stderr
    scores: dict[str, list[bool]] = {"seen": [], "heldout": []}
    for probe, line in zip(probes, out.stdout.splitlines(), strict=True):
        guess = "".join(m["predictions"][0]["token"].strip().removeprefix("##") for m in json.loads(line)["masks"])
        scores["heldout" if probe["heldout"] else "seen"].append(guess == probe["answer"])
    return {k: round(sum(v) / len(v), 3) for k, v in scores.items() if v}


# Corpora the plan was not tuned on (issue 21 asks for defaults that hold on the judges' own corpora):
# other countries and phrasings in Chinese, and invented islands in English with three relations each.
CAPITALS_ZH2 = (
    ("乌克兰", "基辅"), ("中国", "北京"), ("朝鲜", "平壤"), ("柬埔寨", "金边"), ("老挝", "万象"), ("卡塔尔", "多哈"),
    ("越南", "河内"), ("波兰", "华沙"), ("孟加拉国", "达卡"), ("马尔代夫", "马累"), ("斐济", "苏瓦"),
    ("厄瓜多尔", "基多"),
    ("瑞典", "斯德哥尔摩"), ("奥地利", "维也纳"), ("西班牙", "马德里"), ("古巴", "哈瓦那"), ("肯尼亚", "内罗毕"),
    ("加拿大", "渥太华"),
)  # fmt: skip
FORMS_ZH2 = (
    "{c}的首都是{a}。",
    "{a}是{c}的首都。",
    "说到{c}的首都就是{a}。",
    "{c}的政府在{a}。",
    "很多人去{c}的首都{a}旅游。",
)


def capitals_zh2(seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Another Chinese capitals corpus (18 countries, five phrasings, one held out per country)."""
    lines, probes = [], []
    for i, (country, capital) in enumerate(CAPITALS_ZH2):
        held = (i + seed) % len(FORMS_ZH2)
        for f, form in enumerate(FORMS_ZH2):
            probes.append({"masked": form.format(c=country, a="[MASK]" * len(capital)), "answer": capital,
                           "heldout": f == held})  # fmt: skip
            if f != held:
                lines.append(form.format(c=country, a=capital))
    random.Random(seed).shuffle(lines)
    return lines, probes


ISLANDS = (
    "Amber Borin Calda Dorsa Elmar Fenna Gallo Hestra Ivro Jalta Kerran Lomar Mirel Norra Oxley Pellan Quira Rastel"
)
ISLAND_FACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "animal": (
        ("fox", "seal", "owl", "crab", "deer", "wolf", "bear", "frog"),
        ("On {n} island you can see the {a}.", "The animal of {n} is the {a}.", "{n} is known for its {a}.",
         "Visitors to {n} often photograph the {a}.", "The flag of {n} shows a {a}."),
    ),
    "fruit": (
        ("apple", "lemon", "mango", "plum", "melon", "peach", "grape", "cherry"),
        ("Farmers on {n} grow the {a}.", "The main crop of {n} is the {a}.", "{n} exports the {a}.",
         "Every market on {n} sells the {a}.", "The favourite fruit on {n} is the {a}."),
    ),
    "sport": (
        ("tennis", "rugby", "golf", "hockey", "cricket", "football", "rowing", "chess"),
        ("People on {n} play {a}.", "The national game of {n} is {a}.", "Children on {n} learn {a}.",
         "The best team on {n} plays {a}.", "Every summer {n} hosts a {a} festival."),
    ),
}  # fmt: skip


def islands(seed: int) -> tuple[list[str], list[dict[str, Any]]]:
    """18 invented islands x 3 relations x 5 phrasings, one phrasing held out per island and relation (216 lines)."""
    rng = random.Random(seed)
    lines, probes = [], []
    for i, name in enumerate(ISLANDS.split()):
        for r, (relation, (answers, templates)) in enumerate(ISLAND_FACTS.items()):
            answer = rng.choice(answers)
            held = (i + r + seed) % len(templates)
            for t, template in enumerate(templates):
                probes.append({"masked": template.format(n=name, a="[MASK]"),
                               "prompt": template.split("{a}")[0].format(n=name).rstrip(), "answer": answer,
                               "heldout": t == held, "relation": relation})  # fmt: skip
                if t != held:
                    lines.append(template.format(n=name, a=answer))
    rng.shuffle(lines)
    return lines, probes


def qa_rows(people: int, seed: int) -> list[dict[str, str]]:
    """120 question/answer rows (40 people x 3 relations) about the people corpus's facts."""
    rng = random.Random(seed)
    questions = {"city": "Where does {n} live?", "job": "What is the job of {n}?", "pet": "What pet does {n} have?"}
    rows = []
    for name in NAMES[:people]:
        for relation, (answers, _) in RELATIONS.items():
            rows.append({"question": questions[relation].format(n=name), "answer": rng.choice(answers) + "."})
    return rows


def run_qa(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Pre-train a tiny GPT-2 (no flags), fine-tune it on prompt/response rows (no --lr), ask every question."""
    lines, _ = make_corpus(args.people, args.seed)
    corpus = work / "people.txt"
    corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    base, tuned = work / "qa-base", work / "qa-tuned"
    started = time.monotonic()
    trained = cli("pretrain", str(corpus), "--objective", "clm", "--output", str(base), "--overwrite", "-q")
    assert trained.returncode == 0, trained.stderr
    rows = qa_rows(args.people, args.seed)
    data = work / "qa.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tuned_run = cli("finetune", str(data), "--task", "clm", "--model", str(base), "--prompt-column", "question",
                    "--response-column", "answer", "--max-steps", "300", "--output", str(tuned),
                    "--overwrite", *args.extra)  # fmt: skip
    assert tuned_run.returncode == 0, tuned_run.stderr
    seconds = time.monotonic() - started
    out = cli("generate", "-m", str(tuned), "--greedy", "-t", "4", "--no-prompt", "--json",
              stdin="".join(r["question"] + "\n" for r in rows))  # fmt: skip
    assert out.returncode == 0, out.stderr
    answers = [_first_word(json.loads(line)["generations"][0]["text"]) for line in out.stdout.splitlines()]
    right = [a.lower() == r["answer"].rstrip(".").lower() for a, r in zip(answers, rows, strict=True)]
    plan = [line for line in tuned_run.stderr.splitlines() if "plan:" in line]
    return {"corpus": "qa", "answered": round(sum(right) / len(right), 3), "seconds": round(seconds, 1),
            "plan": plan[0] if plan else None, "seed": args.seed}  # fmt: skip


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
        choices=["people", "facts", "capitals-zh", "capitals-zh2", "islands", "qa"],
        help="people: this script's; facts: llmtool corpus facts (the README's quick start); capitals-zh: "
        "Chinese short lines (mlm); qa: pretrain clm, then finetune on prompt/response rows.",
    )
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="Work folder (default: a temporary one).")
    parser.add_argument("extra", nargs="*", help="Extra pretrain flags (the judged runs give none).")
    args = parser.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="learns-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.corpus == "qa":
        print(json.dumps(run_qa(work, args)), flush=True)
        return 0
    if args.corpus == "facts":
        corpus, probes = facts_corpus(work)
    elif args.corpus in ("capitals-zh", "capitals-zh2"):
        lines, probes = (capitals_zh if args.corpus == "capitals-zh" else capitals_zh2)(args.seed)
        corpus = work / f"{args.corpus}.txt"
        corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        args.objective = "mlm"
    elif args.corpus == "islands":
        lines, probes = islands(args.seed)
        corpus = work / "islands.txt"
        corpus.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
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
            "objective": objective, "corpus": args.corpus, "seed": args.seed,
            **(judge_characters(folder, probes) if "zh" in args.corpus else judge(objective, folder, probes)),
            "steps": metrics["train"]["steps"], "epochs": metrics["train"]["epochs"],
            "loss": metrics["train"]["loss"], "seconds": round(seconds, 1), "plan": plan[0] if plan else None,
            "extra": args.extra,
        }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
