"""The encoder-decoder engines side by side: CTranslate2's Translator and torch's generate give the same
tokens at float32 (greedy and beam 4, with end tokens met at different steps, a forced prefix,
no-repeat n-grams and length penalties) and the same target log-probabilities (within 1e-3), on tiny
T5, BART and Marian models; and the Transformers 5 converter traps, each tested."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_models

from llmtool.engines import choice
from llmtool.settings import ModelOptions

SOURCES = [
    "The capital of France is Paris.",
    "Once upon a time there lived a king in a castle.",
    "the dog",
    "It was a great movie and I love the story. The cat and the dog are in the house.",
    "今天天气很好。",
]
BUILDERS = {
    "t5": tiny_models.build_t5,
    "t5-untied": lambda folder: tiny_models.build_t5(folder, seed=3, tie_word_embeddings=False),
    "bart": tiny_models.build_bart,
    "marian": tiny_models.build_marian,
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch) -> Path:
    where = tmp_path_factory.mktemp("s2s-ct2-cache")
    monkeypatch_module.setenv("LLMTOOL_CACHE", str(where))
    return where


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def opened(models_dir: Path, cache: Path) -> dict[str, tuple[Any, Any, Any, Any]]:
    """name -> (torch tokenizer, torch engine, ct2 tokenizer, ct2 engine)."""
    from llmtool.tasks.seq2seq import load_torch

    out = {}
    for name, build in BUILDERS.items():
        folder = build(models_dir / f"s2s-{name}")
        pair = []
        for engine in ("torch", "ctranslate2"):
            ref = choice.prepare(ModelOptions(model=str(folder), engine=engine, offline=True))
            pair.extend(choice.open_seq2seq(ref, "translate", load_torch))
        assert pair[1].name == "torch" and pair[3].name == "ctranslate2"
        for engine in pair[1::2]:
            engine.tokenizer_eos = pair[0].eos_token_id  # run() always stops at the model's end token
        out[name] = (pair[0], pair[1], pair[2], pair[3])
    return out


def run(engine: Any, sources: list[list[int]], **kwargs: Any) -> list[list[int]]:
    settings: dict[str, Any] = {
        "max_new_tokens": 10,
        "greedy": True,
        "num_beams": 1,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "length_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "num_return_sequences": 1,
        "seed": None,
        "row_seeds": None,
        "eos_ids": set(),
    }
    settings.update(kwargs)
    settings["eos_ids"] = {*settings["eos_ids"], engine.tokenizer_eos}
    result: list[list[int]] = engine.generate(sources, **settings)
    return result


@pytest.mark.parametrize("name", list(BUILDERS))
def test_tokenizers_agree(name: str, opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    """The CTranslate2 entry's tokenizer (tokenizers-only, or Marian's copied sentencepiece pair) gives the
    torch tokenizer's ids and text, Chinese included."""
    torch_tok, _, ct2_tok, _ = opened[name]
    for text in SOURCES:
        ids = torch_tok(text)["input_ids"]
        assert ct2_tok(text)["input_ids"] == ids
        assert ct2_tok.decode(ids, skip_special_tokens=True) == torch_tok.decode(ids, skip_special_tokens=True)
    assert "今天" in torch_tok.decode(torch_tok("今天天气很好。")["input_ids"], skip_special_tokens=True)


def assert_same(
    torch_engine: Any, sources: list[list[int]], want: list[list[int]], got: list[list[int]], n: int
) -> None:
    """The same tokens; where an n-best list differs, only by hypotheses whose scores tie (within 1e-4,
    the two engines' float32 rounding): random tiny models repeat tokens, and then hypotheses holding the
    same tokens in another order score alike."""
    assert len(got) == len(want)
    for i, (w, g) in enumerate(zip(want, got, strict=True)):
        if w == g:
            continue
        source = [sources[i // n]]
        score_w = float(torch_engine.token_logprobs(source, [w])[0].sum())
        score_g = float(torch_engine.token_logprobs(source, [g])[0].sum())
        assert len(w) == len(g) and score_g == pytest.approx(score_w, abs=1e-4), (i, w, g, score_w, score_g)
    differing = sum(w != g for w, g in zip(want, got, strict=True))
    assert differing <= len(want) // 4, (differing, want, got)


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("beams", [1, 4])
def test_same_tokens_greedy_and_beam(name: str, beams: int, opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    tok, torch_engine, _, ct2_engine = opened[name]
    sources = [tok(text)["input_ids"] for text in SOURCES]
    plain = run(torch_engine, sources, num_beams=beams)
    assert run(ct2_engine, sources, num_beams=beams) == plain
    # End tokens met at different steps: the most frequent tokens of a run that never ends (the model's
    # own end token suppressed: the tiny BART writes it first) stand for end tokens too.
    never = {"suppress": [tok.eos_token_id], "num_beams": beams}
    endless = run(torch_engine, sources, **never)
    assert run(ct2_engine, sources, **never) == endless
    assert all(len(row) == 10 for row in endless)
    common = [t for t, _ in Counter(t for row in endless for t in row[1:]).most_common(2)]
    for eos in ({common[0]}, set(common)):
        got = run(torch_engine, sources, eos_ids=eos, **never)
        assert run(ct2_engine, sources, eos_ids=eos, **never) == got
        if beams == 1:
            assert any(row and row[-1] in eos and len(row) < 10 for row in got)  # some did end early
        for row in got:
            assert not any(t in eos for t in row[:-1])


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_tokens_with_options(name: str, opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    """A forced prefix, no-repeat n-grams, a length penalty, several hypotheses, a suppressed token."""
    tok, torch_engine, _, ct2_engine = opened[name]
    sources = [tok(text)["input_ids"] for text in SOURCES]
    plain = run(torch_engine, sources, suppress=[tok.eos_token_id])
    first = plain[0][0]
    cases: list[dict[str, Any]] = [
        {"prefix": [5]},
        {"no_repeat_ngram_size": 2},
        {"num_beams": 4, "num_return_sequences": 3},
        {"num_beams": 4, "length_penalty": 2.0, "eos_ids": {first}},
        {"num_beams": 4, "length_penalty": 0.5, "eos_ids": {first}, "prefix": [7, 8]},
        {"suppress": [first]},
        {"max_new_tokens": 3},
    ]
    for case in cases:
        got = run(torch_engine, sources, **case)
        assert_same(torch_engine, sources, got, run(ct2_engine, sources, **case), case.get("num_return_sequences", 1))
        if "prefix" in case:
            assert all(row[: len(case["prefix"])] == case["prefix"] for row in got)
        if "suppress" in case:
            assert all(first not in row for row in got)
        if case.get("no_repeat_ngram_size") == 2:
            assert_no_repeated_pair(got)


def assert_no_repeated_pair(rows: list[list[int]]) -> None:
    for row in rows:
        pairs = list(itertools.pairwise(row))
        assert len(pairs) == len(set(pairs)), row


@pytest.mark.parametrize("name", list(BUILDERS))
def test_no_repeat_ngrams_in_beam_search(name: str, opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    """A known difference: with beams, CTranslate2 blocks repeated n-grams in its own way (other beams survive
    than under Transformers), so the two engines may pick different outputs; each keeps the rule."""
    tok, torch_engine, _, ct2_engine = opened[name]
    sources = [tok(text)["input_ids"] for text in SOURCES]
    case = {"no_repeat_ngram_size": 2, "num_beams": 4, "num_return_sequences": 2, "suppress": [tok.eos_token_id]}
    for engine in (torch_engine, ct2_engine):
        assert_no_repeated_pair(run(engine, sources, **case))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_scores(name: str, opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    tok, torch_engine, _, ct2_engine = opened[name]
    sources = [tok(text)["input_ids"] for text in SOURCES]
    targets = [tok(text)["input_ids"] for text in reversed(SOURCES)]
    targets[1] = targets[1][:-1]  # one target without its end token
    want = torch_engine.token_logprobs(sources, targets)
    got = ct2_engine.token_logprobs(sources, targets)
    for w, g, target in zip(want, got, targets, strict=True):
        assert len(w) == len(g) == len(target)
        np.testing.assert_allclose(g, w, atol=1e-3)
        assert (w < 0).all()
    # the greedy output is the argmax: its own log-probabilities beat a changed last token's
    greedy = run(torch_engine, sources[:1])[0]
    best = torch_engine.token_logprobs(sources[:1], [greedy])[0]
    worse = torch_engine.token_logprobs(sources[:1], [[*greedy[:-1], (greedy[-1] + 1) % 50]])[0]
    assert best[-1] >= worse[-1]


def test_sampling_repeats_with_a_seed(opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    tok, torch_engine, _, ct2_engine = opened["marian"]
    sources = [tok(text)["input_ids"] for text in SOURCES]
    kwargs = {"greedy": False, "seed": 7, "row_seeds": list(range(len(sources) * 2)), "num_return_sequences": 2}
    first = run(torch_engine, sources, **kwargs)
    assert run(torch_engine, sources, **kwargs) == first
    # CTranslate2 draws from one generator per run (a later call continues it): a run's samples, not the greedy path
    sampled = run(ct2_engine, sources, **kwargs)
    assert len(sampled) == len(sources) * 2 and sampled != run(ct2_engine, sources, num_return_sequences=2)
    # torch draws each row from its own generator: a source's samples do not depend on its batch
    alone = run(torch_engine, sources[2:3], greedy=False, seed=7, row_seeds=[4, 5], num_return_sequences=2)
    batched = run(torch_engine, sources, greedy=False, seed=7, row_seeds=list(range(10)), num_return_sequences=2)
    assert alone == batched[4:6]


# --------------------------------------------------------------------------- the converter's traps


def entry_of(engine: Any) -> Path:
    return Path(engine.entry)


def test_bart_converts_without_normalize_before(opened: dict[str, tuple[Any, Any, Any, Any]], models_dir: Path) -> None:
    """Transformers 5's BartConfig has no normalize_before (the converter reads it): BART converts, post-norm,
    and gives torch's tokens (a pre-norm conversion would not, as test_same_tokens_* show)."""
    config = json.loads((models_dir / "s2s-bart" / "config.json").read_text())
    assert "normalize_before" not in config
    meta = json.loads((entry_of(opened["bart"][3]) / "model_meta.json").read_text())
    assert meta["kind"] == "seq2seq" and meta["model_type"] == "bart"


def test_t5_output_scaling_follows_scale_decoder_outputs(
    opened: dict[str, tuple[Any, Any, Any, Any]], models_dir: Path
) -> None:
    """Transformers 5 saves tie_word_embeddings true for every T5 and scales the decoder output only when
    scale_decoder_outputs says so; the converter would scale whenever tie_word_embeddings is on. The
    untied model's scores match torch's only because the conversion follows scale_decoder_outputs."""
    config = json.loads((models_dir / "s2s-t5-untied" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["scale_decoder_outputs"] is False
    tok, torch_engine, _, ct2_engine = opened["t5-untied"]
    ids = [tok(SOURCES[0])["input_ids"]]
    want, got = torch_engine.token_logprobs(ids, ids)[0], ct2_engine.token_logprobs(ids, ids)[0]
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_long_inputs_and_outputs_pass_ctranslate2s_defaults(opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    """CTranslate2 cuts inputs at 1024 tokens and outputs at 256 unless told: a T5 (relative positions) reads
    a 1100-token source whole, and writes 300 tokens when asked, as torch does."""
    tok, torch_engine, _, ct2_engine = opened["t5"]
    long = tok(" ".join(["the capital of France is Paris and"] * 150))["input_ids"]
    assert len(long) > 1024
    got = run(ct2_engine, [long], max_new_tokens=300)
    assert len(got[0]) == 300
    assert got == run(torch_engine, [long], max_new_tokens=300)
    cut = run(ct2_engine, [long[:1000] + long[-1:]], max_new_tokens=20)
    assert cut != got[0][:20] or long[:1000] == long  # the tail of the source mattered


def test_marian_entry_keeps_its_sentencepiece_tokenizer(opened: dict[str, tuple[Any, Any, Any, Any]]) -> None:
    entry = entry_of(opened["marian"][3])
    assert (entry / "tokenizer" / "source.spm").is_file() and (entry / "tokenizer" / "target.spm").is_file()
    assert not (entry / "tokenizer.json").exists()
    vocabulary = json.loads((entry / "model" / "shared_vocabulary.json").read_text())
    assert "<pad>" not in vocabulary  # CTranslate2 starts Marian's decoder from zeros instead
