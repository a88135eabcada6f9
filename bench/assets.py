"""What the benchmarks run on: models built here (random init, real shapes) and real input text.

Nothing is downloaded. Models get the shapes of bert-base-uncased (110M) and gpt2 (124M), plus
"tiny" and "small" sizes for the scaling row; their tokenizers come from the real vocabulary files
in /work/shared/data when present, else are trained here on whatever text is at hand. Inputs are
SST-2 sentences and tinyshakespeare lines when present, else sentences made from a word list.
Everything is cached under ``bench/out/`` (gitignored) and rebuilt only when missing.
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"
SHARED_DATA = BENCH_DIR.parent.parent.parent / "shared" / "data"  # /work/shared/data beside the worktrees
if not SHARED_DATA.is_dir():
    SHARED_DATA = Path("/work/shared/data")

SIZES = ("tiny", "small", "base")

# (layers, hidden, heads, intermediate): base is the library default = bert-base / gpt2.
SHAPES: dict[str, tuple[int, int, int, int] | None] = {
    "tiny": (2, 128, 2, 512),
    "small": (4, 512, 8, 2048),
    "base": None,
}

FALLBACK_WORDS = (
    "the a of to and in is was it that this with for on as at by from film movie story love time "
    "good bad great funny dull long short best worst king queen lord night day world heart life man "
    "woman one never ever more most very not all some every thing make made see seen play played"
).split()


@dataclass(frozen=True)
class Assets:
    """Paths of the models and inputs one benchmark run uses."""

    bert: dict[str, Path]  # size -> model folder
    gpt2: dict[str, Path]
    sentences: list[str]  # real sentences, the raw material of the inputs
    prompts: list[str]
    real_data: bool  # True when /work/shared/data supplied text and tokenizers


def prepare(sizes: tuple[str, ...] = SIZES, out_dir: Path = OUT_DIR) -> Assets:
    """Build (or reuse) the models of each size and load the raw text."""
    models = out_dir / "models"
    bert = {s: build_bert(models / f"bert-{s}", s) for s in sizes}
    gpt2 = {s: build_gpt2(models / f"gpt2-{s}", s) for s in sizes}
    sentences, prompts, real = load_text()
    return Assets(bert, gpt2, sentences, prompts, real)


# ---------------------------------------------------------------------------- text


def load_text() -> tuple[list[str], list[str], bool]:
    """SST-2 sentences (for masks) and tinyshakespeare lines (for prompts); word salad without them."""
    sst = SHARED_DATA / "classification" / "sst2" / "train.csv"
    shakespeare = SHARED_DATA / "lm" / "tinyshakespeare.txt"
    if sst.is_file() and shakespeare.is_file():
        with sst.open(encoding="utf-8", newline="") as f:
            sentences = [row["sentence"].strip() for row in csv.DictReader(f) if row["sentence"].strip()]
        lines = shakespeare.read_text(encoding="utf-8").splitlines()
        prompts = [ln.strip() for ln in lines if len(ln.split()) >= 6 and not ln.endswith(":")]
        return sentences, prompts, True
    rng = random.Random(0)
    sentences = [" ".join(rng.choices(FALLBACK_WORDS, k=rng.randint(3, 30))) for _ in range(4000)]
    return sentences, [s for s in sentences if len(s.split()) >= 6], False


def mask_lines(sentences: list[str], n: int, min_words: int = 5, max_words: int = 60, seed: int = 0) -> list[str]:
    """``n`` lines of ``min_words``-``max_words`` words (uniform), each with one [MASK].

    Consecutive sentences are joined until the drawn length is reached, so long lines are real
    running text too; one word, chosen at random, becomes the mask.
    """
    rng = random.Random(seed)
    words = [w for s in sentences for w in s.split()]
    out = []
    for _ in range(n):
        length = rng.randint(min_words, max_words)
        start = rng.randrange(0, len(words) - length)
        line = words[start : start + length]
        line[rng.randrange(length)] = "[MASK]"
        out.append(" ".join(line))
    return out


def prompt_lines(prompts: list[str], n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [prompts[rng.randrange(len(prompts))] for _ in range(n)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------- models


def _done(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _shape_kwargs(size: str, names: tuple[str, str, str, str]) -> dict[str, Any]:
    shape = SHAPES[size]
    return {} if shape is None else dict(zip(names, shape, strict=True))


def build_bert(folder: Path, size: str = "base", seed: int = 0) -> Path:
    """A BertForMaskedLM of the given size, random init, with the bert-base-uncased tokenizer."""
    return _build_bert(folder, "BertForMaskedLM", size, seed)


def _build_bert(folder: Path, architecture: str, size: str, seed: int, **config: Any) -> Path:
    if _done(folder):
        return folder
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _bert_tokenizer(folder)
    torch.manual_seed(seed)
    kwargs = _shape_kwargs(size, ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size"))
    # vocab_size stays 30522 (bert-base-uncased) whatever tokenizer is used, so the shapes are real.
    model = getattr(transformers, architecture)(transformers.BertConfig(**kwargs, **config))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_gpt2(folder: Path, size: str = "base", seed: int = 0) -> Path:
    """A GPT2LMHeadModel of the given size, random init, with the gpt2 tokenizer."""
    if _done(folder):
        return folder
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _gpt2_tokenizer(folder)
    torch.manual_seed(seed)
    kwargs = _shape_kwargs(size, ("n_layer", "n_embd", "n_head", "n_inner"))
    config = GPT2Config(**kwargs)
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


def build_bert_classifier(folder: Path, size: str = "base", seed: int = 0) -> Path:
    """A BertForSequenceClassification (two named labels) of the given size, random init: every weight
    present, so llmtool's check for a trained head passes; the speed is that of a real one."""
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    return _build_bert(folder, "BertForSequenceClassification", size, seed, **labels)


def _bert_tokenizer(folder: Path) -> Any:
    from transformers import BertTokenizer

    vocab = SHARED_DATA / "tokenizers" / "bert-base-uncased" / "vocab.txt"
    if vocab.is_file():
        (folder / "vocab.txt").write_bytes(vocab.read_bytes())
        return BertTokenizer.from_pretrained(str(folder), do_lower_case=True, model_max_length=512)
    from tokenizers import BertWordPieceTokenizer

    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(load_text()[0], vocab_size=8000)
    trainer.save_model(str(folder))
    return BertTokenizer.from_pretrained(str(folder), do_lower_case=True, model_max_length=512)


def _gpt2_tokenizer(folder: Path) -> Any:
    from transformers import GPT2Tokenizer

    source = SHARED_DATA / "tokenizers" / "gpt2"
    if (source / "vocab.json").is_file() and (source / "merges.txt").is_file():
        for name in ("vocab.json", "merges.txt"):
            (folder / name).write_bytes((source / name).read_bytes())
        return GPT2Tokenizer.from_pretrained(str(folder), model_max_length=1024)
    from tokenizers import ByteLevelBPETokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(load_text()[0], vocab_size=8000, special_tokens=["<|endoftext|>"])
    trainer.save_model(str(folder))
    return GPT2Tokenizer.from_pretrained(str(folder), model_max_length=1024)


def dump_manifest(assets: Assets, path: Path) -> None:
    path.write_text(json.dumps({"bert": {k: str(v) for k, v in assets.bert.items()}}, indent=1), encoding="utf-8")
