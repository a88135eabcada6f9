"""generate: greedy output equals Transformers, seeds are per prompt, batching keeps order."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest
from conftest import cli_env, llmtool_executable, run_cli

PROMPTS = ["Once upon a time", "The capital of France is", "It was a great movie and I", "The dog"]


def reference_greedy(model_dir: Path, prompt: str, n: int) -> str:
    """The plain Transformers way: one prompt, model.generate, greedy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1] :].tolist()
    if tok.eos_token_id in new:
        new = new[: new.index(tok.eos_token_id)]
    return prompt + tok.decode(new, skip_special_tokens=True)


def jsonl(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_greedy_batched_equals_transformers_one_at_a_time(tiny_gpt2: Path) -> None:
    records = jsonl(
        run_cli(
            ["generate", "-m", str(tiny_gpt2), "--greedy", "-t", "12", "--json", "-b", "4"], input="\n".join(PROMPTS)
        )
    )
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(tiny_gpt2), device="cpu")
    for prompt, record in zip(PROMPTS, records, strict=True):
        assert record["input"] == prompt
        expected = reference_greedy(tiny_gpt2, prompt, 12)
        assert record["generations"][0]["text"] == expected
        piped = pipe(prompt, max_new_tokens=12, do_sample=False)[0]["generated_text"]
        assert piped.startswith(expected)


def test_seeded_sampling_is_the_same_alone_or_in_a_batch(tiny_gpt2: Path) -> None:
    args = ["generate", "-m", str(tiny_gpt2), "-t", "10", "--seed", "7", "--json"]
    batch = jsonl(run_cli([*args, "-b", "4"], input="\n".join(PROMPTS)))
    again = jsonl(run_cli([*args, "-b", "2"], input="\n".join(reversed(PROMPTS))))
    alone = jsonl(run_cli([*args, PROMPTS[2]]))
    texts = {r["input"]: r["generations"][0]["text"] for r in batch}
    assert {r["input"]: r["generations"][0]["text"] for r in again} == texts
    assert alone[0]["generations"][0]["text"] == texts[PROMPTS[2]]
    other_seed = jsonl(run_cli(["generate", "-m", str(tiny_gpt2), "-t", "10", "--seed", "8", "--json", PROMPTS[2]]))
    assert other_seed[0]["generations"][0]["text"] != texts[PROMPTS[2]]


def test_num_return_sequences_and_no_prompt(tiny_gpt2: Path) -> None:
    records = jsonl(
        run_cli(
            ["generate", PROMPTS[0], "-m", str(tiny_gpt2), "-n", "3", "-t", "6", "--seed", "1", "--no-prompt", "--json"]
        )
    )
    gens = records[0]["generations"]
    assert len(gens) == 3
    assert len({g["text"] for g in gens}) > 1  # three independent samples
    assert all(not g["text"].startswith(PROMPTS[0]) for g in gens)
    assert all(g["finish_reason"] in ("length", "eos") and 0 < g["new_tokens"] <= 6 for g in gens)


def test_stop_string_cuts_output(tiny_gpt2: Path) -> None:
    base = jsonl(
        run_cli(["generate", PROMPTS[1], "-m", str(tiny_gpt2), "--greedy", "-t", "20", "--no-prompt", "--json"])
    )[0]["generations"][0]["text"]
    assert len(base) > 4
    stop = base[2:4]
    cut = jsonl(
        run_cli(
            [
                "generate",
                PROMPTS[1],
                "-m",
                str(tiny_gpt2),
                "--greedy",
                "-t",
                "20",
                "--no-prompt",
                "--json",
                "--stop",
                stop,
            ]
        )
    )[0]["generations"][0]
    assert cut["text"] == base[: base.find(stop)]
    assert cut["finish_reason"] == "stop"


def test_text_and_tsv_formats(tiny_gpt2: Path) -> None:
    args = ["generate", "-m", str(tiny_gpt2), "--greedy", "-t", "5"]
    records = jsonl(run_cli([*args, "--json"], input="\n".join(PROMPTS[:2])))
    text = run_cli(args, input="\n".join(PROMPTS[:2]))
    assert text.stdout == "".join(r["generations"][0]["text"] + "\n" for r in records)
    tsv = run_cli([*args, "-f", "tsv"], input="\n".join(PROMPTS[:2])).stdout.splitlines()
    assert tsv[0] == "index\tsequence\tfinish_reason\tnew_tokens\ttext"
    assert [row.split("\t")[0] for row in tsv[1:]] == ["0", "1"]


def test_chat_template(tiny_chat_gpt2: Path, tiny_gpt2: Path) -> None:
    records = jsonl(
        run_cli(["generate", "hello", "-m", str(tiny_chat_gpt2), "--chat", "--greedy", "-t", "4", "--json"])
    )
    assert records[0]["input"] == "hello"
    assert not records[0]["generations"][0]["text"].startswith("hello")  # the reply only
    no_template = run_cli(["generate", "hello", "-m", str(tiny_gpt2), "--chat"])
    assert no_template.returncode == 2
    assert "has no chat template; drop --chat" in no_template.stderr


def test_prompt_longer_than_context_is_bad_input(tiny_gpt2: Path) -> None:
    proc = run_cli(["generate", "-m", str(tiny_gpt2), "-t", "10"], input="ok\n" + "the dog " * 100 + "\n")
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmtool: error: <stdin>:2: the prompt is ")
    assert "context of 128 tokens" in proc.stderr


def test_streams_to_a_terminal(tiny_gpt2: Path) -> None:
    """One prompt with stdout on a terminal: text is printed as produced, then a newline."""
    expected = reference_greedy(tiny_gpt2, PROMPTS[0], 8)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [llmtool_executable(), "generate", PROMPTS[0], "-m", str(tiny_gpt2), "--greedy", "-t", "8"],
        stdout=follower,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli_env(),
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=120) == 0
    os.close(leader)
    out = b"".join(chunks).decode().replace("\r\n", "\n")
    assert out == expected + "\n"


@pytest.mark.parametrize("bad", [["--temperature", "0"], ["--top-p", "1.5"], ["--stop", ""]])
def test_bad_sampling_flags_are_usage_errors(bad: list[str]) -> None:
    proc = run_cli(["generate", "hi", "-m", "unused", *bad])
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmtool: error: --")


def test_python_api(tiny_gpt2: Path) -> None:
    import llmtool

    records = list(llmtool.generate(PROMPTS[:2], model=str(tiny_gpt2), greedy=True, max_new_tokens=5))
    assert [r["generations"][0]["text"] for r in records] == [reference_greedy(tiny_gpt2, p, 5) for p in PROMPTS[:2]]
