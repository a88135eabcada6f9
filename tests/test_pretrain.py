"""`llmtool pretrain`: models trained from scratch on the synthetic facts corpus learn the facts.

Every test drives the installed CLI. Learning is measured over every fact of the corpus, on the
sentences held out of it (each country's held-out capital sentence never occurs in training), with
`fill-mask`, `generate` and `next-sentence` themselves, and the models load in plain Transformers.
The subprocesses run single-threaded: tiny models gain nothing from threads on a busy machine.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, interrupt_after_first_epoch, run_cli

from llmtool.training.corpus import FACTS

ENV = cli_env(OMP_NUM_THREADS="1")
SLOW = 900  # seconds a training subprocess may take on a busy machine before the test fails

# BERT-Tiny's shape with 4 attention heads instead of 2 and no dropout learns the 50 facts in about
# 3000 steps, 2 heads in about 3500-4500 (BERT-Tiny's dropout slows memorising further). The same
# shape learns NSP on pairs of one or two sentences (--block-size 32) in 2000 steps at lr 2e-3
# (held-out AUC 0.96-0.97 over two seeds); with 64-token blocks (pairs of whole documents, unlike the
# held-out pairs of single sentences) or half the width, it stayed near chance after 1500-3000 steps.
# The quick start's BERT (README): both heads, pairs of one or two sentences.
BERT_FLAGS = "--objective mlm --nsp --block-size 32 --lr 2e-3 --max-steps 3000 --save-steps 1000 --seed 1"
MLM_HELDOUT, MLM_SEEN = 0.9, 0.95  # plain masked LM on defaults (measured: 49/50 held out, 99.8% seen)
FACTS_BERT = {"num_attention_heads": 4, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """facts.txt (the corpus), probes.jsonl (every question and its split), pairs.tsv (held-out NSP pairs)."""
    folder = tmp_path_factory.mktemp("facts")
    out = [
        "-o",
        str(folder / "facts.txt"),
        "--probes",
        str(folder / "probes.jsonl"),
        "--pairs",
        str(folder / "pairs.tsv"),
    ]
    result = run_cli(["corpus", "facts", *out, "-q"])
    assert result.returncode == 0, result.stderr
    (folder / "facts-bert.json").write_text(json.dumps(FACTS_BERT))
    return folder


def probes(facts: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (facts / "probes.jsonl").read_text().splitlines()]


def pretrain(corpus: Path, output: Path, flags: str, *extra: str) -> dict[str, Any]:
    """``llmtool pretrain CORPUS --output OUTPUT FLAGS... --json``; the final metrics."""
    started = time.monotonic()
    result = run_cli(["pretrain", str(corpus), "--output", str(output), *flags.split(), *extra, "--json"], env=ENV,
                     timeout=SLOW)  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics: dict[str, Any] = json.loads(result.stdout)
    print(f"\npretrain {flags}: {time.monotonic() - started:.0f} s wall, {metrics['train']}")
    return metrics


def accuracy(hits: dict[str, list[bool]]) -> dict[str, float]:
    return {key: sum(v) / len(v) for key, v in sorted(hits.items())}


# --------------------------------------------------------------------------- BERT (mlm)


@pytest.mark.slow
def test_bert_recipe_learns_the_facts_and_the_next_sentences(facts: Path, tmp_path: Path) -> None:
    """BERT's original recipe (masked LM + next-sentence prediction), as the README's quick start runs it."""
    model = tmp_path / "bert"
    pretrain(facts / "facts.txt", model, BERT_FLAGS, "--config", str(facts / "facts-bert.json"))

    france = run_cli(["fill-mask", "--model", str(model), "The capital of France is [MASK]."], env=ENV)
    assert france.returncode == 0, france.stderr
    assert france.stdout == "The capital of France is paris.\n"

    questions = probes(facts)
    result = run_cli(
        ["fill-mask", "--model", str(model), "--input", str(facts / "probes.jsonl"), "--column", "masked", "--json"],
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    hits: dict[str, list[bool]] = defaultdict(list)
    for probe, line in zip(questions, result.stdout.splitlines(), strict=True):
        top = json.loads(line)["masks"][0]["predictions"][0]["token"]
        hits[f"{probe['split']}/{probe['relation']}"].append(top == probe["answer"].lower())
    scores = accuracy(hits)
    print("fill-mask accuracy over all facts:", scores)
    assert scores["heldout/capital"] >= 0.9  # 50 sentences never seen in training
    assert scores["train/capital"] >= 0.95 and scores["train/country"] >= 0.9

    # next-sentence on 100 held-out pairs (a country's sentence, then its held-out capital sentence
    # or another country's): true continuations score higher than random ones.
    result = run_cli(["next-sentence", "--model", str(model), "--input", str(facts / "pairs.tsv"), "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    with open(facts / "pairs.tsv", encoding="utf-8", newline="") as f:
        labels = [row["label"] == "1" for row in csv.DictReader(f, delimiter="\t")]
    is_next = [json.loads(line)["is_next"] for line in result.stdout.splitlines()]
    true = [s for s, label in zip(is_next, labels, strict=True) if label]
    random_ = [s for s, label in zip(is_next, labels, strict=True) if not label]
    auc = sum((t > r) + 0.5 * (t == r) for t in true for r in random_) / (len(true) * len(random_))
    accuracy_ = sum((s > 0.5) == label for s, label in zip(is_next, labels, strict=True)) / len(labels)
    print(f"next-sentence on {len(labels)} held-out pairs: AUC {auc:.3f}, accuracy {accuracy_:.3f}")
    assert auc >= 0.8 and accuracy_ >= 0.7  # chance: 0.5

    # Plain Transformers loads the folder (both heads) and agrees with fill-mask.
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    bert = AutoModelForMaskedLM.from_pretrained(str(model)).eval()
    inputs = tokenizer("The capital of France is [MASK].", return_tensors="pt")
    with torch.no_grad():
        logits = bert(**inputs).logits[0, inputs["input_ids"][0].tolist().index(tokenizer.mask_token_id)]
    assert tokenizer.decode([int(logits.argmax())]) == "paris"
    assert BertForPreTraining.from_pretrained(str(model)).cls.seq_relationship.out_features == 2
    assert (model / "model.safetensors").is_file() and not list(model.glob("*.bin"))
    settings = json.loads((model / "llmtool_settings.json").read_text())
    assert settings["command"] == "pretrain" and settings["objective"] == "mlm+nsp"
    assert settings["architecture"] == "BertForPreTraining" and settings["vocab_size"] == len(tokenizer)


def test_mlm_line_by_line_makes_one_example_per_sentence(facts: Path, tmp_path: Path) -> None:
    """Masked LM alone, one sentence per example (the clm test below learns that way)."""
    model = tmp_path / "bert-lines"
    flags = ["pretrain", str(facts / "facts.txt"), "-o", str(model), "--objective", "mlm", "--line-by-line"]
    result = run_cli([*flags, "--max-steps", "5", "--config", str(facts / "facts-bert.json")], env=ENV)
    assert result.returncode == 0, result.stderr
    assert "BertForMaskedLM: 0.54M parameters, vocabulary 501; 2395 training examples of up to 128" in result.stderr
    filled = run_cli(["fill-mask", "--model", str(model), "The capital of France is [MASK]."], env=ENV)
    assert filled.returncode == 0 and filled.stdout.startswith("The capital of France is "), filled.stderr


@pytest.mark.slow
def test_mlm_on_defaults_learns_the_facts(facts: Path, tmp_path: Path) -> None:
    """Masked LM alone with no training flags (the README's quick start): the plan packs the short lines
    into 32-token blocks, masks 15% of each (at least one token), 3000 steps of 32, tiny at lr 2e-3."""
    model = tmp_path / "bert-defaults"
    metrics = pretrain(facts / "facts.txt", model, "--objective mlm --seed 1")
    assert metrics["train"]["steps"] == 3000
    settings = json.loads((model / "llmtool_settings.json").read_text())
    assert settings["layout"] == "packed blocks" and settings["block_size"] == 32
    assert settings["plan"]["chosen"] == ["batch", "steps", "lr", "warm-up"]
    result = run_cli(
        ["fill-mask", "--model", str(model), "--input", str(facts / "probes.jsonl"), "--column", "masked", "--json"],
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    hits: dict[str, list[bool]] = defaultdict(list)
    for probe, line in zip(probes(facts), result.stdout.splitlines(), strict=True):
        top = json.loads(line)["masks"][0]["predictions"][0]["token"]
        hits[f"{probe['split']}/{probe['relation']}"].append(top == probe["answer"].lower())
    scores = accuracy(hits)
    print("fill-mask accuracy over all facts, on defaults:", scores)
    assert scores["heldout/capital"] >= MLM_HELDOUT and scores["train/capital"] >= MLM_SEEN


def test_the_plan_line_warnings_and_checkpoint_cadence(tmp_path: Path) -> None:
    """A 20-line corpus is one step per epoch: checkpoints come every 100 steps, not every step."""
    corpus = tmp_path / "twenty.txt"
    corpus.write_text("".join(f"Item {i} of the list is number {i * 7}.\n" for i in range(20)))
    out = tmp_path / "out"
    args = ["pretrain", str(corpus), "--objective", "mlm", "-o", str(out), "--max-steps", "120", "--keep-checkpoints"]
    result = run_cli([*args, "--json"], env=ENV)
    assert result.returncode == 0, result.stderr
    plan = [line for line in result.stderr.splitlines() if line.startswith("llmtool: plan: ")]
    assert len(plan) == 1, result.stderr
    assert "one line per example" in plan[0] and "batch 20, 120 steps = 120 epochs of 1" in plan[0]
    assert "checkpoint every 100 steps" in plan[0]
    assert "120 optimizer steps are too few to teach a new model" in result.stderr
    kept = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir())
    assert kept == [100, 120]  # saved at 100 and the end
    assert json.loads((out / "llmtool_settings.json").read_text())["training"]["save_steps"] == 100


# --------------------------------------------------------------------------- GPT-2 (clm)


@pytest.mark.slow
def test_clm_learns_the_facts(facts: Path, tmp_path: Path) -> None:
    model = tmp_path / "gpt"
    pretrain(facts / "facts.txt", model, "--objective clm --seed 1")  # the plan: lines, 3000 steps (quick start)

    france = run_cli(
        ["generate", "--model", str(model), "The capital of France is", "--greedy", "-t", "3", "--no-prompt"], env=ENV
    )
    assert france.returncode == 0, france.stderr
    assert france.stdout.startswith(" Paris."), france.stdout

    questions = probes(facts)
    flags = "--column prompt --greedy -t 4 --no-prompt --json -b 32".split()
    result = run_cli(["generate", "--model", str(model), "--input", str(facts / "probes.jsonl"), *flags], env=ENV)
    assert result.returncode == 0, result.stderr
    hits: dict[str, list[bool]] = defaultdict(list)
    for probe, line in zip(questions, result.stdout.splitlines(), strict=True):
        continuation = json.loads(line)["generations"][0]["text"]
        hits[f"{probe['split']}/{probe['relation']}"].append(continuation.split()[:1] == [probe["answer"] + "."])
    scores = accuracy(hits)
    print("greedy-continuation accuracy over all facts:", scores)
    assert scores["heldout/capital"] >= 0.9
    assert scores["train/capital"] >= 0.95 and scores["train/country"] >= 0.95

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    gpt = AutoModelForCausalLM.from_pretrained(str(model))
    ids = gpt.generate(**tokenizer("The capital of Japan is", return_tensors="pt"), max_new_tokens=2, do_sample=False)
    assert str(tokenizer.decode(ids[0])).startswith("The capital of Japan is Tokyo")

    # The new model is a starting point for finetune, like any other causal LM (given lines, as it
    # was trained: packed blocks of several lines would be text of a kind it never saw).
    flags = "--task clm --line-by-line --max-steps 3 --valid-split 0.1 --json".split()
    tuned = run_cli(
        ["finetune", str(facts / "facts.txt"), "-m", str(model), "-o", str(tmp_path / "tuned"), *flags], env=ENV
    )
    assert tuned.returncode == 0, tuned.stderr
    assert json.loads(tuned.stdout)["valid"]["perplexity"] < 5


# --------------------------------------------------------------------------- interrupt and resume


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["clm", "mlm"])
def test_sigint_then_resume_matches_the_uninterrupted_run(tmp_path: Path, objective: str) -> None:
    corpus = tmp_path / "facts.txt"
    assert run_cli(["corpus", "facts", "--countries", "10", "-o", str(corpus), "-q"]).returncode == 0
    flags = f"--objective {objective} --block-size 32 --batch-size 8 --valid-split 0.1 --epochs 3 --seed 3 --json"
    common = ["pretrain", str(corpus), *flags.split()]

    whole = run_cli([*common, "--output", str(tmp_path / "whole")], env=ENV, timeout=SLOW, subprocess=True)
    assert whole.returncode == 0, whole.stderr
    expected = json.loads(whole.stdout)

    out = tmp_path / "interrupted"
    code, stderr = interrupt_after_first_epoch([*common, "--output", str(out)], signal.SIGINT, ENV, SLOW)
    assert code == 130, stderr
    checkpoints = sorted(int(p.name.split("-")[1]) for p in (out / "checkpoints").iterdir())
    assert checkpoints[-1] > expected["history"][0]["step"], "stopped in the second epoch"
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]

    resumed = run_cli([*common, "--output", str(out), "--resume"], env=ENV, timeout=SLOW, subprocess=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / 'checkpoints'}/checkpoint-{checkpoints[-1]}" in resumed.stderr
    got = json.loads(resumed.stdout)
    assert got["history"] == expected["history"] and got["valid"] == expected["valid"]
    assert got["train"]["loss"] == expected["train"]["loss"]

    from safetensors.torch import load_file

    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    assert (tmp_path / "whole" / "tokenizer.json").read_text() == (out / "tokenizer.json").read_text()


# --------------------------------------------------------------------------- inputs, tokenizers, configs


def test_csv_and_jsonl_corpora_and_a_reused_tokenizer(tmp_path: Path) -> None:
    rows = [f"{f.capital} is the capital of {f.country}. {f.country} lies in {f.continent}." for f in FACTS]
    with open(tmp_path / "a.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "body"], *[[i, r] for i, r in enumerate(rows)]])
    (tmp_path / "b.jsonl").write_text("".join(json.dumps({"body": r}) + "\n" for r in rows[:10]))
    first = tmp_path / "first"
    flags = "--objective mlm --text-column body --max-steps 2 --json --vocab-size 400".split()
    result = run_cli(
        ["pretrain", str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl"), "-o", str(first), *flags], env=ENV
    )
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path / 'a.csv'}, {tmp_path / 'b.jsonl'}: 60 training documents (60 lines)" in result.stderr
    settings = json.loads((first / "llmtool_settings.json").read_text())
    assert settings["documents"] == {"train": 60, "valid": 0} and settings["vocab_size"] <= 400

    second = tmp_path / "second"
    flags = "--text-column body --objective mlm --nsp --max-steps 2 --size mini --json".split()
    reused = run_cli(
        ["pretrain", str(tmp_path / "a.csv"), "--tokenizer", str(first), "-o", str(second), *flags], env=ENV
    )
    assert reused.returncode == 0, reused.stderr
    assert (second / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    assert json.loads(reused.stdout)["task"] == "mlm+nsp"
    config = json.loads((second / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["architectures"]) == (
        256,
        4,
        ["BertForPreTraining"],
    )


def test_presets_have_the_documented_parameter_counts() -> None:
    """The documented table (docs/commands/pretrain.md), recomputed by instantiating every preset (on the meta
    device: no memory)."""
    import re

    import torch

    from llmtool.training.pretrain_model import parameter_table

    with torch.device("meta"):
        table = parameter_table()
    readme = (Path(__file__).parents[1] / "docs" / "commands" / "pretrain.md").read_text()
    for row in table:
        line = f"| {row['size']} | {row['objective']} | {row['layers']} | {row['hidden']} | {row['heads']} |"
        found = re.search(re.escape(line) + r" ([\d,]+) \| ([\d,]+) \|", readme)
        assert found, f"README has no row {line}"
        assert int(found.group(1).replace(",", "")) == row["parameters"]
        assert int(found.group(2).replace(",", "")) == row["without_token_embeddings"]


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, ["missing.txt"], "missing.txt: no such file"),
        ("", ["empty.txt"], "empty.txt: empty file"),
        ("\n\n  \n", ["blank.txt"], "blank.txt: no text (only blank lines, or only a header)"),
        ("id,body\n1,x\n", ["corpus.csv", "--text-column", "text"], "no column 'text'"),
        ("One line.\n", ["corpus.txt", "--objective", "clm", "--nsp"], "--nsp (next-sentence prediction) goes with"),
        ("One line.\n", ["corpus.txt", "--objective", "gpt"], "unknown --objective 'gpt'; use mlm, clm or seq2seq"),
        ("One line.\n", ["corpus.txt", "--size", "huge"], "unknown --size 'huge'; use tiny, mini, small, base"),
        ("One line.\n", ["corpus.txt", "--config", "gpt2.json"], "is a 'gpt2' config; --objective mlm trains a 'bert'"),
        ("One line.\n", ["corpus.txt", "--block-size", "600"], "--block-size 600 is longer than the model's 512"),
        ("One line.\nAnd another.\n", ["corpus.txt", "--valid-split", "0.5"], "1 document is too few for"),
        ("One line.\nAnd another.\n", ["corpus.txt", "--nsp"], "--nsp draws random second sentences from other"),
        (b"One line.\ncaf\xe9\n", ["corpus.txt"], "corpus.txt:2:4: not valid utf-8 (byte 0xe9)"),
    ],
)
def test_bad_input_is_one_line_and_leaves_nothing(
    tmp_path: Path, make: str | bytes | None, args: list[str], message: str
) -> None:
    if isinstance(make, bytes):
        (tmp_path / args[0]).write_bytes(make)
    elif make is not None:
        (tmp_path / args[0]).write_text(make)
    (tmp_path / "gpt2.json").write_text('{"model_type": "gpt2", "n_layer": 1}')
    result = run_cli(["pretrain", *args, "--output", "out", "--max-steps", "1"], env=ENV, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("llmtool: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1 or "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- distributed


@pytest.mark.slow
def test_torchrun_two_cpu_processes_pretrain_one_model(tmp_path: Path) -> None:
    """DDP over gloo: the main process reads the corpus and trains the tokenizer first, the other
    loads both from the run's cache; each process takes half of every epoch; one model is written."""
    corpus = tmp_path / "facts.txt"
    assert run_cli(["corpus", "facts", "--countries", "10", "-o", str(corpus), "-q"]).returncode == 0
    out = tmp_path / "ddp-bert"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "llmtool", "pretrain", str(corpus), "--output", str(out), "--objective", "mlm", "--nsp",
        "--block-size", "32", "--batch-size", "8", "--epochs", "2", "--valid-split", "0.1", "--seed", "2", "--json",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=SLOW, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout  # one process printed the result
    metrics = json.loads(lines[0])
    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["world_size"] == 2 and settings["objective"] == "mlm+nsp"
    per_process = -(-settings["examples"]["train"] // 2)  # the distributed sampler pads to equal halves
    steps_per_epoch = -(-per_process // 8)
    assert settings["plan"]["steps_per_epoch"] == steps_per_epoch and metrics["train"]["steps"] == 2 * steps_per_epoch
    every = settings["plan"]["eval_every"]  # whole epochs (llmtool.training.plan), and the end
    assert [h["step"] for h in metrics["history"]] == [*range(every, 2 * steps_per_epoch, every), 2 * steps_per_epoch]
    assert proc.stderr.count("training documents") == 1  # the main process reports, the other stays quiet
    assert sorted(p.name for p in out.iterdir() if p.name != "metrics.png") == sorted(  # curves: llmtool[plot]
        ["config.json", "llmtool_settings.json", "metrics.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json"]
    )  # fmt: skip
    filled = run_cli(["fill-mask", "--model", str(out), "The capital of France is [MASK]."], env=ENV)
    assert filled.returncode == 0, filled.stderr
    judged = run_cli(["next-sentence", "--model", str(out), "A sentence.", "Another one."], env=ENV)
    assert judged.returncode == 0, judged.stderr


def test_readme_quick_start_runs_the_tested_recipes() -> None:
    """The offline quick start (docs/quickstart.md) trains what the learning tests above train: no training flags."""
    readme = (Path(__file__).parents[1] / "docs" / "quickstart.md").read_text()
    start = readme.index("# Offline quick start")
    block = readme[start : readme.index("```\n", readme.index("```console", start) + 10)]
    quick_start = " ".join(block.replace("$ ", "").split())
    assert "llmtool pretrain facts.txt --objective mlm --output facts-bert llmtool" in quick_start
    assert "llmtool pretrain facts.txt --objective clm --output facts-gpt llmtool" in quick_start
    assert "--config" not in quick_start and "--max-steps" not in quick_start and "--lr" not in quick_start
    this = Path(__file__).read_text()
    assert '"--objective clm --seed 1"' in this and '"--objective mlm --seed 1"' in this  # the tests' flags
