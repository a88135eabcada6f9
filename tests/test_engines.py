"""The two engines through the installed CLI: the same records at float32, a torch-free run once a model
is converted, the engine choice (auto, explicit, reasons under -v), and ``llmtool cache``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import tiny_models
from conftest import cli_env, run_cli

LINES = ["the capital of [MASK] is paris .", "a [MASK] day in the [MASK] .", "the dog and the [MASK] ."]
TEXTS = ["the cat sat on the mat .", "once upon a time there lived a king .", "paris"]
PROMPTS = ["Once upon a time", "The capital of France is", "the dog"]


def auto_env(**extra: str) -> dict[str, str]:
    """The CLI's environment with the default engine, auto (the other tests pin torch)."""
    return {**cli_env(**extra), "LLMTOOL_ENGINE": "auto"}


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return auto_env(LLMTOOL_CACHE=str(tmp_path_factory.mktemp("ct2-cache")))


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> Path:
    return tiny_models.build_bert_classifier(models_dir / "engines-classifier")


@pytest.fixture(scope="module")
def nsp_model(models_dir: Path) -> Path:
    return tiny_models.build_bert_pretraining(models_dir / "engines-pretraining")


def both(args: list[str], env: dict[str, str], input: str | None = None) -> tuple[list[Any], list[Any]]:
    """The --json records of the torch and the ctranslate2 engine for the same command."""
    out = []
    for engine in ("torch", "ctranslate2"):
        result = run_cli([*args, "--json", "--engine", engine], input=input, env=env)
        assert result.returncode == 0, result.stderr
        out.append([json.loads(line) for line in result.stdout.splitlines()])
    return out[0], out[1]


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_roberta"])
def test_fill_mask_same_top_k(fixture: str, cache_env: dict[str, str], request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    lines = [line.replace("[MASK]", "<mask>") if fixture == "tiny_roberta" else line for line in LINES]
    torch_out, ct2_out = both(["fill-mask", "-m", str(model), "-k", "5"], cache_env, "\n".join(lines))
    for t, c in zip(torch_out, ct2_out, strict=True):
        assert t["output"] == c["output"]
        for tm, cm in zip(t["masks"], c["masks"], strict=True):
            assert [p["token_id"] for p in tm["predictions"]] == [p["token_id"] for p in cm["predictions"]]
            for tp, cp in zip(tm["predictions"], cm["predictions"], strict=True):
                assert cp["score"] == pytest.approx(tp["score"], abs=1e-4)


def test_generate_greedy_identical_and_sampling_repeatable(tiny_gpt2: Path, cache_env: dict[str, str]) -> None:
    args = ["generate", "-m", str(tiny_gpt2), "-t", "12", "--greedy"]
    torch_out, ct2_out = both(args, cache_env, "\n".join(PROMPTS))
    assert torch_out == ct2_out
    penalized = [*args, "--repetition-penalty", "1.3", "--stop", " the"]
    torch_out, ct2_out = both(penalized, cache_env, "\n".join(PROMPTS))
    assert torch_out == ct2_out
    sampled = ["generate", "-m", str(tiny_gpt2), "-t", "12", "--seed", "7", "-n", "2", "--json", "--engine"]
    first = run_cli([*sampled, "ctranslate2"], input="\n".join(PROMPTS), env=cache_env)
    again = run_cli([*sampled, "ctranslate2"], input="\n".join(PROMPTS), env=cache_env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout  # repeatable within the engine (the two engines sample differently)


@pytest.fixture(scope="module")
def tiny_llama(models_dir: Path) -> Path:
    from test_ct2 import build_llama

    return build_llama(models_dir / "engines-llama")


def test_llama_generate_chat_and_score(tiny_llama: Path, cache_env: dict[str, str]) -> None:
    for extra in ([], ["--chat"], ["--repetition-penalty", "1.2", "-n", "1"]):
        args = ["generate", "-m", str(tiny_llama), "-t", "10", "--greedy", *extra]
        torch_out, ct2_out = both(args, cache_env, "\n".join(PROMPTS))
        assert torch_out == ct2_out, extra
    torch_out, ct2_out = both(["score", "-m", str(tiny_llama), "--total"], cache_env, "\n".join(TEXTS))
    for t, c in zip(torch_out, ct2_out, strict=True):
        assert c["log_likelihood"] == pytest.approx(t["log_likelihood"], abs=1e-3)


def test_roberta_classifier(models_dir: Path, cache_env: dict[str, str]) -> None:
    from test_ct2 import build_roberta_classifier

    model = build_roberta_classifier(models_dir / "engines-roberta-classifier")
    torch_out, ct2_out = both(["classify", "-m", str(model), "-k", "2"], cache_env, "\n".join(TEXTS))
    for t, c in zip(torch_out, ct2_out, strict=True):
        assert [p["id"] for p in t["predictions"]] == [p["id"] for p in c["predictions"]]
        assert [p["score"] for p in c["predictions"]] == pytest.approx([p["score"] for p in t["predictions"]], abs=1e-4)


def test_score_within_1e_3(tiny_gpt2: Path, tiny_bert: Path, cache_env: dict[str, str]) -> None:
    for model, extra in ((tiny_gpt2, ["--total", "--max-length", "6", "--stride", "3"]), (tiny_bert, [])):
        torch_out, ct2_out = both(["score", "-m", str(model), *extra], cache_env, "\n".join(TEXTS))
        for t, c in zip(torch_out, ct2_out, strict=True):
            assert c["tokens"] == t["tokens"]
            assert c["log_likelihood"] == pytest.approx(t["log_likelihood"], abs=1e-3)


def test_classify_and_next_sentence_within_1e_4(classifier: Path, nsp_model: Path, cache_env: dict[str, str]) -> None:
    torch_out, ct2_out = both(["classify", "-m", str(classifier), "-k", "2"], cache_env, "\n".join(TEXTS))
    for t, c in zip(torch_out, ct2_out, strict=True):
        assert [p["label"] for p in t["predictions"]] == [p["label"] for p in c["predictions"]]
        assert [p["score"] for p in c["predictions"]] == pytest.approx([p["score"] for p in t["predictions"]], abs=1e-4)
    pairs = "\n".join(f"{a}\t{b}" for a, b in zip(TEXTS, reversed(TEXTS), strict=True))
    torch_out, ct2_out = both(["next-sentence", "-m", str(nsp_model)], cache_env, pairs)
    assert [c["is_next"] for c in ct2_out] == pytest.approx([t["is_next"] for t in torch_out], abs=1e-4)


def test_a_converted_model_runs_without_torch(tiny_gpt2: Path, tiny_bert: Path, cache_env: dict[str, str]) -> None:
    """With torch and transformers made unimportable, the converted models still answer, the same way."""
    blocker = Path(cache_env["LLMTOOL_CACHE"]) / "no-torch"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor name in ('torch', 'transformers'):\n    sys.modules[name] = None\n", encoding="utf-8"
    )
    assert run_cli(["cache", "add", str(tiny_gpt2)], env=cache_env).returncode == 0
    assert run_cli(["cache", "add", str(tiny_bert)], env=cache_env).returncode == 0
    no_torch = {**cache_env, "PYTHONPATH": str(blocker)}
    for args, text in (
        (["generate", "-m", str(tiny_gpt2), "-t", "8", "--greedy"], "\n".join(PROMPTS)),
        (["fill-mask", "-m", str(tiny_bert)], "\n".join(LINES)),
        (["score", "-m", str(tiny_gpt2), "--total"], "\n".join(TEXTS)),
    ):
        blocked = run_cli([*args, "-v"], input=text, env=no_torch)
        assert blocked.returncode == 0, blocked.stderr
        assert "engine: ctranslate2" in blocked.stderr
        assert blocked.stdout == run_cli([*args, "--engine", "ctranslate2"], input=text, env=cache_env).stdout
    failed = run_cli(["generate", "-m", str(tiny_gpt2), "--engine", "torch", "x"], env=no_torch)
    assert failed.returncode != 0  # the block is real: the torch engine cannot run there


def test_the_choice_of_engine(tiny_gpt2: Path, classifier: Path, cache_env: dict[str, str]) -> None:
    verbose = run_cli(["generate", "-m", str(tiny_gpt2), "-t", "2", "--greedy", "-v", "x"], env=cache_env)
    assert "llmtool: engine: ctranslate2 (float32 on cpu;" in verbose.stderr
    torch_dtype = run_cli(
        ["generate", "-m", str(tiny_gpt2), "-t", "2", "--dtype", "bfloat16", "-v", "x"], env=cache_env
    )
    assert torch_dtype.returncode == 0, torch_dtype.stderr
    assert "engine: torch (--dtype bfloat16 on the CPU runs under torch" in torch_dtype.stderr
    explicit = run_cli(["generate", "-m", str(tiny_gpt2), "--dtype", "bfloat16", "--engine", "ctranslate2", "x"])
    assert explicit.returncode == 2
    assert explicit.stderr.startswith(f"llmtool: error: --engine ctranslate2 cannot run {tiny_gpt2}: --dtype bfloat16")
    from_env = run_cli(
        ["generate", "-m", str(tiny_gpt2), "-t", "2", "-v", "x"], env={**cache_env, "LLMTOOL_ENGINE": "torch"}
    )
    assert "engine: torch (--engine torch)" in from_env.stderr
    quiet = run_cli(["generate", "-m", str(tiny_gpt2), "-t", "2", "--greedy", "x"], env=cache_env)
    assert quiet.stderr == ""  # auto says nothing without -v
    tpu = run_cli(["generate", "-m", str(tiny_gpt2), "--device", "tpu", "x"], env=cache_env)
    assert tpu.returncode == 2 and "unknown --device 'tpu'" in tpu.stderr
    bad = run_cli(["generate", "-m", str(tiny_gpt2), "--engine", "tensorrt", "x"])
    assert bad.returncode == 2 and "unknown --engine 'tensorrt'" in bad.stderr
    both_flags = run_cli(["generate", "-m", str(tiny_gpt2), "--engine", "torch", "--quantize", "int8", "x"])
    assert both_flags.returncode == 2 and "--quantize applies to the CTranslate2 engine" in both_flags.stderr


def test_int8_runs_close_to_float32(tiny_bert: Path, cache_env: dict[str, str]) -> None:
    args = ["fill-mask", "-m", str(tiny_bert), "--json", "--engine", "ctranslate2"]
    f32 = run_cli(args, input="\n".join(LINES), env=cache_env)
    int8 = run_cli([*args, "--quantize", "int8"], input="\n".join(LINES), env=cache_env)
    assert int8.returncode == 0, int8.stderr
    for a, b in zip(f32.stdout.splitlines(), int8.stdout.splitlines(), strict=True):
        pa, pb = json.loads(a)["masks"][0]["predictions"][0], json.loads(b)["masks"][0]["predictions"][0]
        assert pb["score"] == pytest.approx(pa["score"], abs=0.05)


def test_unusable_cache_falls_back_to_torch_or_refuses(tiny_gpt2: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    env = auto_env(LLMTOOL_CACHE=str(blocked / "cache"))
    auto = run_cli(["generate", "-m", str(tiny_gpt2), "-t", "3", "--greedy", "-v", "x"], env=env)
    assert auto.returncode == 0, auto.stderr
    assert "engine: torch (the CTranslate2 cache cannot be used:" in auto.stderr
    explicit = run_cli(["generate", "-m", str(tiny_gpt2), "-t", "3", "--engine", "ctranslate2", "x"], env=env)
    assert explicit.returncode == 3
    assert str(blocked) in explicit.stderr and len(explicit.stderr.strip().splitlines()) == 1


def test_a_large_model_is_not_converted_unasked(tiny_gpt2: Path, tmp_path: Path) -> None:
    env = auto_env(LLMTOOL_CACHE=str(tmp_path / "cache"), LLMTOOL_CONVERT_MAX="1000")
    auto = run_cli(["generate", "-m", str(tiny_gpt2), "-t", "3", "--greedy", "x"], env=env)
    assert auto.returncode == 0, auto.stderr
    assert "llmtool cache add" in auto.stderr and "--engine ctranslate2" in auto.stderr
    assert not list((tmp_path / "cache").rglob("entry.json"))
    asked = run_cli(["generate", "-m", str(tiny_gpt2), "-t", "3", "--greedy", "--engine", "ctranslate2", "x"], env=env)
    assert asked.returncode == 0, asked.stderr
    assert "converting" in asked.stderr


def test_cache_list_add_rm(tiny_bert: Path, tmp_path: Path) -> None:
    env = auto_env(LLMTOOL_CACHE=str(tmp_path / "cache"))
    added = run_cli(["cache", "add", str(tiny_bert), "-q"], env=env)
    assert added.returncode == 0, added.stderr
    entry = Path(added.stdout.strip())
    assert (entry / "entry.json").is_file()
    listed = run_cli(["cache", "list", "--json"], env=env)
    records = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["source"], r["valid"], r["quantization"]) for r in records] == [
        (str(tiny_bert.resolve()), True, "float32")
    ]
    text = run_cli(["cache", "list"], env=env).stdout.split("\t")
    assert text[1:4] == ["float32", text[2], "ok"]
    usage = run_cli(["cache", "rm"], env=env)
    assert usage.returncode == 2
    removed = run_cli(["cache", "rm", str(tiny_bert)], env=env)
    assert removed.returncode == 0 and removed.stdout.strip() == str(entry)
    assert run_cli(["cache", "list"], env=env).stdout == ""


# -- the engines in this process: hidden states ----------------------------------------------------


def open_both(model: Path) -> list[Any]:
    """(tokenizer, encoder) for fill-mask on each engine, opened as the commands open them."""
    from transformers import AutoModelForMaskedLM

    from llmtool.engines import choice
    from llmtool.models import load
    from llmtool.settings import ModelOptions

    opened = []
    for engine in ("torch", "ctranslate2"):
        ref = choice.prepare(ModelOptions(model=str(model), engine=engine, device="cpu"))
        opened.append(choice.open_encoder(ref, "fill-mask", lambda ref: load(AutoModelForMaskedLM, ref)))
    return opened


def test_hidden_states_equal_on_both_engines_and_do_not_depend_on_padding(tiny_bert: Path) -> None:
    import numpy as np

    (tokenizer, torch_encoder), (_, ct2_encoder) = open_both(tiny_bert)
    assert (torch_encoder.name, ct2_encoder.name) == ("torch", "ctranslate2")
    single = tokenizer(TEXTS)
    pair = tokenizer("the dog", "the cat sat on the mat")
    keys = ("input_ids", "token_type_ids")
    rows = [{k: single[k][i] for k in keys} for i in range(len(TEXTS))] + [{k: pair[k] for k in keys}]
    lengths = [len(row["input_ids"]) for row in rows]
    assert len(set(lengths)) == len(lengths)  # rows of different lengths: all but the longest are padded
    states = []
    for encoder in (torch_encoder, ct2_encoder):
        hidden, mask = encoder.hidden_states(rows)
        assert hidden.dtype == np.float32 and hidden.shape == (len(rows), max(lengths), 32)
        assert mask.dtype == np.int64 and mask.tolist() == [[1] * n + [0] * (max(lengths) - n) for n in lengths]
        assert not hidden[mask == 0].any()  # padding holds zeros
        for i, row in enumerate(rows):  # a row alone: the same states as in the batch with longer rows
            alone, alone_mask = encoder.hidden_states([row])
            assert alone.shape == (1, lengths[i], 32) and alone_mask.tolist() == [[1] * lengths[i]]
            assert np.abs(alone[0] - hidden[i, : lengths[i]]).max() < 1e-4
        empty, empty_mask = encoder.hidden_states([])
        assert empty.shape == (0, 0, 32) and empty_mask.shape == (0, 0)
        states.append(hidden)
    assert np.abs(states[0] - states[1]).max() < 1e-4
