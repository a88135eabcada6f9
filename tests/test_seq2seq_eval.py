"""score and evaluate on encoder-decoders: log P(target | source) on both engines and as plain
Transformers computes it; evaluate's BLEU and chrF equal sacrebleu's and its ROUGE rouge-score's, on the
same files (the model's own outputs against the references); the kept ROUGE against rouge-score on
varied texts; pair files in each layout, and their errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import tiny_models
from conftest import cli_env, run_cli

PAIRS = [
    ("The capital of France is Paris.", "La capitale de la France est Paris."),
    ("the dog", "le chien"),
    ("Once upon a time there lived a king in a castle.", "Il était une fois un roi dans un château."),
    ("It was a great movie.", "C'était un grand film."),
    ("今天天气很好。", "今天天气很好。"),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {**cli_env(LLMTOOL_CACHE=str(tmp_path_factory.mktemp("s2s-eval-ct2"))), "LLMTOOL_ENGINE": "auto"}


@pytest.fixture(scope="module")
def marian(models_dir: Path) -> Path:
    return tiny_models.build_marian(models_dir / "eval-marian")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("pairs")
    tab = where / "pairs.txt"
    tab.write_text("".join(f"{s}\t{t}\tCC-BY 2.0 (France) Attribution: tatoeba.org\n" for s, t in PAIRS), "utf-8")
    csv = where / "pairs.csv"
    csv.write_text("id,source,target\n" + "".join(f'{i},"{s}","{t}"\n' for i, (s, t) in enumerate(PAIRS)), "utf-8")
    jsonl = where / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"src": s, "tgt": t}) + "\n" for s, t in PAIRS), "utf-8")
    return {"txt": tab, "csv": csv, "jsonl": jsonl}


def jsonl(args: list[str], env: dict[str, str], input: str | None = None) -> list[dict[str, Any]]:
    result = run_cli([*args, "--json"], input=input, env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def reference_logprob(folder: Path, source: str, target: str) -> float:
    """Plain Transformers: -loss * tokens with the tokenizer's labels (text_target)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForSeq2SeqLM.from_pretrained(str(folder)).eval()
    batch = tokenizer(source, text_target=target, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits.float()
    pad = model.config.pad_token_id
    logits[..., pad] = float("-inf")  # OPUS-MT never writes its pad (bad_words_ids; CTranslate2 drops it)
    logprobs = logits.log_softmax(-1)[0, torch.arange(batch["labels"].shape[1]), batch["labels"][0]]
    return float(logprobs.sum())


@pytest.mark.parametrize("layout", ["txt", "csv", "jsonl", "stdin"])
def test_score_pairs_on_both_engines(layout: str, marian: Path, files: dict[str, Path], env: dict[str, str]) -> None:
    given = ["--input", str(files[layout])] if layout != "stdin" else []
    text = "".join(f"{s}\t{t}\n" for s, t in PAIRS) if layout == "stdin" else None
    out = {}
    for engine in ("torch", "ctranslate2"):
        out[engine] = jsonl(["score", "-m", str(marian), *given, "--total", "--engine", engine], env, text)
    for t, c in zip(out["torch"], out["ctranslate2"], strict=True):
        assert t.get("input") == c.get("input") and t["tokens"] == c["tokens"]
        assert c["log_likelihood"] == pytest.approx(t["log_likelihood"], abs=1e-3 * t["tokens"])
    records, total = out["torch"][:-1], out["torch"][-1]
    assert [(r["input"], r["target"]) for r in records] == PAIRS
    assert total["total"] and total["lines"] == len(PAIRS) and total["tokens"] == sum(r["tokens"] for r in records)
    for record in records[:2]:
        want = reference_logprob(marian, record["input"], record["target"])
        assert record["log_likelihood"] == pytest.approx(want, abs=1e-3)
        assert record["perplexity"] == pytest.approx(math.exp(-want / record["tokens"]), rel=1e-3)


def test_score_pair_errors(marian: Path, files: dict[str, Path], env: dict[str, str]) -> None:
    no_tab = run_cli(["score", "-m", str(marian), "just a source"], env=env)
    assert no_tab.returncode == 2 and no_tab.stderr.count("\n") == 1
    assert "expected SOURCE<TAB>TARGET" in no_tab.stderr
    bad = files["csv"].parent / "bad.csv"
    bad.write_text("source,target\nthe dog,\n", encoding="utf-8")
    result = run_cli(["score", "-m", str(marian), "--input", str(bad)], env=env)
    assert result.returncode == 2
    assert result.stderr.strip() == f"llmtool: error: {bad}:2: empty text in column 'target'"


def test_evaluate_equals_sacrebleu_and_rouge_score(marian: Path, files: dict[str, Path], env: dict[str, str]) -> None:
    """The model's translations of the same file, scored by sacrebleu and rouge-score, give evaluate's figures."""
    import sacrebleu
    from rouge_score import rouge_scorer

    sources = "\n".join(s for s, _ in PAIRS)
    predictions = [r["generations"][0]["text"] for r in jsonl(["translate", "-m", str(marian)], env, sources)]
    references = [t for _, t in PAIRS]
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    want_bleu = bleu.corpus_score(predictions, [references]).score
    want_chrf = chrf.corpus_score(predictions, [references]).score
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    scores = [scorer.score(r, p) for r, p in zip(references, predictions, strict=True)]
    for layout in ("txt", "csv", "jsonl"):
        for engine in ("torch", "ctranslate2"):
            (result,) = jsonl(["evaluate", str(files[layout]), "-m", str(marian), "--engine", engine], env)
            assert result["task"] == "seq2seq" and result["generation"] == "translate" and result["pairs"] == len(PAIRS)
            assert result["bleu"] == pytest.approx(want_bleu, abs=1e-9)
            assert result["chrf"] == pytest.approx(want_chrf, abs=1e-9)
            assert result["bleu_signature"] == str(bleu.get_signature())
            assert result["chrf_signature"] == str(chrf.get_signature())
            for kind in ("rouge1", "rouge2", "rougeL"):
                mean = sum(s[kind].fmeasure for s in scores) / len(scores)
                assert result[kind] == pytest.approx(mean, abs=1e-12)
    text = run_cli(["evaluate", str(files["txt"]), "-m", str(marian)], env=env)
    assert text.returncode == 0 and text.stdout.splitlines()[0] == f"pairs: {len(PAIRS)}"
    assert f"BLEU signature: {bleu.get_signature()}" in text.stdout


def test_evaluate_on_perfect_outputs_is_perfect(tmp_path: Path) -> None:
    """The metrics' own end: predictions equal to the references score 100 BLEU, 100 chrF, ROUGE 1."""
    from llmtool.tasks.evaluate_seq2seq import corpus_scores

    references = [t for _, t in PAIRS[:4]]
    scores = corpus_scores(references, references)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert scores["rouge1"] == scores["rouge2"] == scores["rougeL"] == pytest.approx(1.0)
    chinese = corpus_scores(["今天天气很好。"], ["今天天气很好。"])
    assert "tok:zh" in chinese["bleu_signature"] and chinese["bleu"] == pytest.approx(100.0)


ROUGE_CASES = [
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the cat sat on the mat", "a cat was sitting on a mat"),
    ("The quick brown fox jumps over the lazy dog.", "the lazy dog was jumped over by a quick brown fox!"),
    ("Police killed the gunman.", "The gunman was shot down by police."),
    ("", "something"),
    ("a a a b b", "a b a b a b"),
    ("Numbers 1, 2 and 3,000 count; café?", "numbers one two 3 000 cafe"),
    ("今天天气很好", "今天天气很好"),
    ("x " * 60, "x y " * 40),
]


@pytest.mark.parametrize(("reference", "prediction"), ROUGE_CASES)
def test_kept_rouge_equals_rouge_score(reference: str, prediction: str) -> None:
    from rouge_score import rouge_scorer

    from llmtool.tasks.rouge import rouge

    want = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"]).score(reference, prediction)
    got = rouge(reference, prediction)
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert got[kind] == pytest.approx(tuple(want[kind]), abs=1e-12), kind


def test_evaluate_on_summaries_runs_summarize(models_dir: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """Columns named dialogue/summary (DialogSum's) mean summaries: the model's summarization prefix applies."""
    t5 = tiny_models.build_t5(models_dir / "eval-t5")
    data = tmp_path / "dialogsum.jsonl"
    rows = [{"dialogue": s, "summary": t} for s, t in PAIRS[:3]]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (result,) = jsonl(["evaluate", str(data), "-m", str(t5), "--engine", "torch"], env)
    assert result["generation"] == "summarize" and result["pairs"] == 3


def test_evaluate_on_real_tatoeba_pairs(marian: Path, shared_data: Path, tmp_path: Path, env: dict[str, str]) -> None:
    """The shared Tatoeba file as it comes (English<TAB>French<TAB>attribution), its first 20 pairs."""
    lines = (shared_data / "translation" / "tatoeba_fra_eng" / "fra-eng.txt").read_text("utf-8").splitlines()[:20]
    data = tmp_path / "fra-eng-20.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (result,) = jsonl(["evaluate", str(data), "-m", str(marian), "--engine", "ctranslate2"], env)
    assert result["pairs"] == 20 and 0 <= result["chrf"] < 100
