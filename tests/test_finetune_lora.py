"""``finetune --lora`` (PEFT adapters), adapter folders as ``--model``, ``llmtool merge``, and
prompt/response data for ``--task clm`` (loss on the response tokens only).

Real Trainer runs on the tiny local models, through the installed CLI; plain PEFT loads what llmtool writes.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from conftest import cli_env, interrupt_after_first_epoch, run_cli
from synthetic import sentiment_rows, write_sentiment_csv

ENV = cli_env(OMP_NUM_THREADS="1")
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "config.json", "llmtool_settings.json",
                 "metrics.json", "tokenizer_config.json"}  # fmt: skip
QA = [(f"q{i}: what is the colour of thing {i}?", f" colour {i % 3}.") for i in range(60)]


def _ok(result: object) -> str:
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    return str(result.stdout)  # type: ignore[attr-defined]


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


# --------------------------------------------------------------------------- classify


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("lora-classify")
    train = write_sentiment_csv(tmp / "train.csv", 600, seed=1)
    out = tmp / "adapter"
    args = ["finetune", str(train), "--model", str(tiny_bert), "--output", str(out), "--lora"]
    result = run_cli([*args, "--epochs", "6", "--lr", "5e-3", "--json"], env=ENV)
    return out, json.loads(_ok(result))


def test_lora_classify_learns_and_writes_a_standard_adapter(classifier: tuple[Path, dict], tmp_path: Path) -> None:
    out, metrics = classifier
    assert metrics["valid"]["accuracy"] >= 0.95, metrics["history"]
    names = {p.name for p in out.iterdir()}
    assert names >= ADAPTER_FILES, names
    assert "model.safetensors" not in names and "checkpoints" not in names
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 8
    assert Path(config["base_model_name_or_path"]).is_absolute()
    assert "classifier" in config["modules_to_save"]  # the head is trained in full
    settings = json.loads((out / "llmtool_settings.json").read_text())
    assert settings["training"]["lora"] is True and settings["training"]["lr"] == 0.005

    rows = sentiment_rows(200, seed=99)
    test_csv = tmp_path / "test.csv"
    test_csv.write_text("text,label\n" + "".join(f"{t},{label}\n" for t, label in rows), encoding="utf-8")
    got = _json_lines(_ok(run_cli(["classify", "-m", str(out), "-i", str(test_csv), "--json"], env=ENV)))
    predicted = [r["label"] for r in got]
    assert sum(p == y for p, (_, y) in zip(predicted, rows, strict=True)) / len(rows) >= 0.95

    # Plain PEFT code loads the folder and agrees.
    import torch
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoTokenizer

    model = AutoPeftModelForSequenceClassification.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        probs = model(**tokenizer([t for t, _ in rows], padding=True, return_tensors="pt")).logits.softmax(-1)
    assert [["negative", "positive"][int(i)] for i in probs.argmax(-1)] == predicted
    assert [r["score"] for r in got] == pytest.approx([float(p.max()) for p in probs], abs=1e-5)

    # The fast engine refuses an adapter with the reason; merged, it runs there and agrees within 1e-4.
    refused = run_cli(["classify", "-m", str(out), "--engine", "ctranslate2", "-i", str(test_csv)], env=ENV)
    assert refused.returncode == 2 and "LoRA adapter" in refused.stderr and "llmtool merge" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    merged = tmp_path / "merged"
    assert _ok(run_cli(["merge", str(out), "--output", str(merged)], env=ENV)).strip() == str(merged)
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    for engine in ("torch", "ctranslate2"):
        again = _json_lines(
            _ok(run_cli(["classify", "-m", str(merged), "-i", str(test_csv), "--json", "--engine", engine], env=ENV))
        )
        assert [r["label"] for r in again] == predicted
        assert [r["score"] for r in again] == pytest.approx([r["score"] for r in got], abs=1e-4)

    # --resume into the finished adapter folder says what it holds, and leaves it as it was.
    before = sorted(p.name for p in out.iterdir())
    train = write_sentiment_csv(tmp_path / "train.csv", 40, seed=2)
    resumed = run_cli(["finetune", str(train), "-m", "unused", "-o", str(out), "--lora", "--resume"], env=ENV)
    assert resumed.returncode == 2, resumed.stderr
    assert "holds a finished LoRA adapter and no checkpoint to resume; pass --overwrite" in resumed.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_dry_run_counts_trainable_and_total_parameters(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 60, seed=1)
    args = ["finetune", str(train), "--model", str(tiny_bert), "--dry-run", "--json"]
    full = json.loads(_ok(run_cli(args, env=ENV)))["parameters"]
    lora = json.loads(_ok(run_cli([*args, "--lora"], env=ENV)))["parameters"]
    assert full["trainable"] == full["total"]
    assert 0 < lora["trainable"] < full["total"] / 5
    assert "params   " in _ok(run_cli([*args[:-1], "--lora"], env=ENV))
    assert list(tmp_path.iterdir()) == [train]


# --------------------------------------------------------------------------- prompt/response (clm)


def _write_qa(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"q": q, "a": a}) + "\n" for q, a in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def qa_adapter(tmp_path_factory: pytest.TempPathFactory, tiny_gpt2: Path) -> Path:
    tmp = tmp_path_factory.mktemp("lora-qa")
    train = _write_qa(tmp / "qa.jsonl", QA)
    out = tmp / "adapter"
    args = ["finetune", str(train), "-t", "clm", "-m", str(tiny_gpt2), "-o", str(out), "--lora"]
    _ok(run_cli([*args, "--prompt-column", "q", "--response-column", "a", "--epochs", "2", "--lr", "1e-2"], env=ENV))
    return out


def test_clm_adapter_loads_in_generate_and_score_and_merges_to_the_same_outputs(
    qa_adapter: Path, tmp_path: Path
) -> None:
    assert {p.name for p in qa_adapter.iterdir()} >= ADAPTER_FILES
    prompts = "\n".join(q for q, _ in QA[:4])
    gen = ["generate", "--greedy", "--max-new-tokens", "6", "--json"]
    adapted = _json_lines(_ok(run_cli([*gen, "-m", str(qa_adapter)], input=prompts, env=ENV)))
    scored = _json_lines(_ok(run_cli(["score", "-m", str(qa_adapter), "--json"], input=prompts, env=ENV)))
    merged = tmp_path / "merged"
    _ok(run_cli(["merge", str(qa_adapter), "-o", str(merged)], env=ENV))
    assert _json_lines(_ok(run_cli([*gen, "-m", str(merged)], input=prompts, env=ENV))) == adapted
    again = _json_lines(_ok(run_cli(["score", "-m", str(merged), "--json"], input=prompts, env=ENV)))
    for a, b in zip(scored, again, strict=True):
        assert a["log_likelihood"] == pytest.approx(b["log_likelihood"], abs=1e-4)
    ct2 = _json_lines(_ok(run_cli([*gen, "-m", str(merged), "--engine", "ctranslate2"], input=prompts, env=ENV)))
    assert [r["generations"] for r in ct2] == [r["generations"] for r in adapted]
    # The base model's outputs differ: the adapter did change the model.
    base = json.loads((qa_adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    plain = _json_lines(_ok(run_cli(["score", "-m", base, "--json"], input=prompts, env=ENV)))
    assert [r["log_likelihood"] for r in plain] != pytest.approx([r["log_likelihood"] for r in scored], abs=1e-3)


def test_response_only_labels_checked_by_hand(tiny_gpt2: Path, tiny_chat_gpt2: Path) -> None:
    from transformers import AutoTokenizer

    from llmtool.training.chat_data import ChatEncoder

    messages = [{"role": "user", "content": "what is two?"}, {"role": "assistant", "content": "two is 2"}]
    plain = AutoTokenizer.from_pretrained(str(tiny_gpt2))
    ids, labels = ChatEncoder(plain, None).encode(messages)
    prompt = plain("what is two?")["input_ids"]
    answer = plain("\ntwo is 2", add_special_tokens=False)["input_ids"] + [plain.eos_token_id]
    assert ids == prompt + answer
    assert labels == [-100] * len(prompt) + answer

    chat = AutoTokenizer.from_pretrained(str(tiny_chat_gpt2))
    ids, labels = ChatEncoder(chat, None).encode(messages)
    head = chat.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert head == "<|user|>what is two?\n<|assistant|>"
    head_ids = chat(head, add_special_tokens=False)["input_ids"]
    answer = chat("two is 2\n", add_special_tokens=False)["input_ids"] + [chat.eos_token_id]
    assert ids == head_ids + answer and labels == [-100] * len(head_ids) + answer

    # A batch as training collates it: -100 exactly on the prompt positions and the padding.
    from llmtool.training.chat_data import collator  # the collator finetune uses for conversations

    encoder = ChatEncoder(plain, 64)
    batch_in = encoder({"messages": [json.dumps(messages), json.dumps([messages[0], {**messages[1], "content": "2"}])]})
    answers = [plain(text, add_special_tokens=False)["input_ids"] for text in ("\ntwo is 2", "\n2")]
    assert batch_in["length"] == [len(prompt) + len(a) + 1 for a in answers]  # untruncated, EOS included
    features = [{k: batch_in[k][i] for k in batch_in if k != "length"} for i in range(2)]  # as training keeps them
    from llmtool.models import ensure_pad_token

    ensure_pad_token(plain, "tiny")
    batch = collator(plain)(features)
    for row, feature in enumerate(features):
        n_prompt = len(prompt)
        got = batch["labels"][row].tolist()
        assert got[:n_prompt] == [-100] * n_prompt
        assert got[n_prompt : len(feature["input_ids"])] == feature["input_ids"][n_prompt:]
        assert set(got[len(feature["input_ids"]) :]) <= {-100}


def test_messages_train_and_generate_chat_answers(tmp_path: Path, tiny_chat_gpt2: Path) -> None:
    train = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a.strip()}]} for q, a in QA]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "chat-adapter"
    args = ["finetune", str(train), "-t", "clm", "-m", str(tiny_chat_gpt2), "-o", str(out), "--lora"]
    # --valid-split 0.4: 24 validation conversations (10% of 60, 6, is too few to split: every row would train)
    flags = ["--epochs", "3", "--lr", "2e-2", "--valid-split", "0.4", "--json", "--eval-on-start"]
    metrics = json.loads(_ok(run_cli([*args, *flags], env=ENV)))
    assert metrics["valid"]["loss"] < metrics["history"][0]["loss"]
    # The adapter answers through the chat template (a tiny model trained for seconds: the form, not the facts).
    _ok(run_cli(["generate", "-m", str(out), "--chat", "--greedy", "--max-new-tokens", "4"], input=QA[0][0], env=ENV))


def test_conversations_cut_by_block_size_are_said(tmp_path: Path, tiny_gpt2: Path) -> None:
    long = " ".join(f"word{i}" for i in range(40))  # far more than 16 tokens: no answer token fits
    rows = [(long, "yes.")] * 6 + [("short?", " a rather long answer " * 4)] * 4 + [("hi?", "ok.")] * 20
    train = tmp_path / "qa.csv"
    train.write_text("q,a\n" + "".join(f"{q},{a}\n" for q, a in rows), encoding="utf-8")
    args = ["finetune", str(train), "-t", "clm", "-m", str(tiny_gpt2), "--prompt-column", "q", "--response-column", "a",
            "--block-size", "16", "--max-steps", "2", "--valid-split", "0", "--seed", "0"]  # fmt: skip
    result = run_cli([*args, "-o", str(tmp_path / "out")], env=ENV)
    _ok(result)
    assert "6 of 30 training conversations have no response token within --block-size 16 and are left out" in (
        result.stderr
    ), result.stderr
    assert "4 of 30 training conversations are cut at --block-size 16" in result.stderr, result.stderr
    report = json.loads(_ok(run_cli([*args, "-o", str(tmp_path / "dry"), "--dry-run", "--json"], env=ENV)))
    assert report["tokens"]["truncated_rows"] == 10 and report["steps"]["examples"] == 30, report
    only_long = tmp_path / "long.csv"
    only_long.write_text("q,a\n" + "".join(f"{long},yes.\n" for _ in range(5)), encoding="utf-8")
    args[1] = str(only_long)
    failed = run_cli([*args, "-o", str(tmp_path / "none")], env=ENV)
    assert failed.returncode == 2, failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert (
        last
        == "llmtool: error: no training conversation has a response token within --block-size 16; raise --block-size"
    )
    assert failed.stderr.count("error") == 1, failed.stderr
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("qa.csv", "question,answer\nhi,there\n", ["--prompt-column", "prompt", "--response-column", "answer"],
         "qa.csv:1: no column 'prompt'"),
        ("qa.csv", "q,a\nhi,there\nho,\n", ["--prompt-column", "q", "--response-column", "a"],
         "qa.csv:3:2: empty response in 'a'"),
        ("qa.jsonl", '{"q": "hi", "a": "x"}\n{"q": "ho"}\n', ["--prompt-column", "q", "--response-column", "a"],
         "qa.jsonl:2: no field 'a' (--response-column)"),
        ("chat.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n', [],
         "chat.jsonl:1: the conversation has no assistant turn"),
        ("qa.csv", "q,a\nhi,there\n", ["--prompt-column", "q"], "--prompt-column and --response-column go together"),
    ],
)  # fmt: skip
def test_bad_prompt_response_data_is_one_line_before_any_model_loads(
    tmp_path: Path, name: str, content: str, extra: list[str], message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    missing_model = tmp_path / "no-such-model"  # the data error must come first
    result = run_cli(["finetune", str(path), "-t", "clm", "-m", str(missing_model), "-o", str(tmp_path / "o"), *extra],
                     env=ENV)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- mlm, resume


def test_mlm_adapter_loads_in_fill_mask(tmp_path: Path, tiny_bert: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("".join(f"the {w} sat on the mat .\n" for w in ("cat", "dog", "king") * 40), encoding="utf-8")
    out = tmp_path / "mlm-adapter"
    args = ["finetune", str(text), "-t", "mlm", "-m", str(tiny_bert), "--lora", "--max-steps", "6"]
    args += ["--block-size", "16"]
    _ok(run_cli([*args, "-o", str(out)], env=ENV))
    fill = ["fill-mask", "--json", "-k", "3"]
    lines = "the [MASK] sat on the mat .\nthe cat [MASK] on the mat ."
    adapted = _json_lines(_ok(run_cli([*fill, "-m", str(out)], input=lines, env=ENV)))
    base = _json_lines(_ok(run_cli([*fill, "-m", str(tiny_bert)], input=lines, env=ENV)))
    merged = tmp_path / "merged"
    _ok(run_cli(["merge", str(out), "-o", str(merged)], env=ENV))
    again = _json_lines(_ok(run_cli([*fill, "-m", str(merged)], input=lines, env=ENV)))

    def predictions(records: list[dict]) -> list[tuple[str, float]]:
        return [(p["token"], p["score"]) for r in records for m in r["masks"] for p in m["predictions"]]

    assert [t for t, _ in predictions(again)] == [t for t, _ in predictions(adapted)]
    assert [s for _, s in predictions(again)] == pytest.approx([s for _, s in predictions(adapted)], abs=1e-4)
    assert predictions(adapted) != predictions(base)  # six steps of LoRA changed the masked LM
    # finetune --lora --merge writes the same full model as training, then `llmtool merge`.
    _ok(run_cli([*args, "--merge", "-o", str(tmp_path / "merged-at-once")], env=ENV))
    assert not (tmp_path / "merged-at-once" / "adapter_config.json").exists()
    at_once = _json_lines(_ok(run_cli([*fill, "-m", str(tmp_path / "merged-at-once")], input=lines, env=ENV)))
    assert [s for _, s in predictions(at_once)] == pytest.approx([s for _, s in predictions(again)], abs=1e-5)


def test_mlm_adapter_on_a_pretraining_bert_answers_next_sentence(tmp_path: Path) -> None:
    """An mlm adapter on a BertForPreTraining base changes the shared encoder: next-sentence uses it,
    and the merged model gives the same probabilities."""
    import tiny_models

    base = tiny_models.build_bert_pretraining(tmp_path / "bert-pretraining", steps=5)
    text = tmp_path / "text.txt"
    text.write_text("".join(f"the {w} sat on the mat .\n" for w in ("cat", "dog", "king") * 40), encoding="utf-8")
    out = tmp_path / "nsp-adapter"
    args = ["finetune", str(text), "-t", "mlm", "-m", str(base), "--lora", "--max-steps", "40", "--lr", "2e-2"]
    _ok(run_cli([*args, "--block-size", "16", "-o", str(out)], env=ENV))
    pairs = "the cat sat.\tthe dog ran.\nthe king sat.\ton the mat."

    def probabilities(model: Path) -> list[float]:
        lines = _ok(run_cli(["next-sentence", "-m", str(model), "--json"], input=pairs, env=ENV))
        return [r["is_next"] for r in _json_lines(lines)]

    adapted = probabilities(out)
    assert adapted != pytest.approx(probabilities(base), abs=1e-4)  # the adapter is not ignored
    # Merged, it stays a pre-training BERT (the base's pooler and next-sentence head kept), by
    # `llmtool merge` and by `finetune --lora --merge` alike; fill-mask agrees with the adapter too.
    merged = tmp_path / "merged"
    _ok(run_cli(["merge", str(out), "-o", str(merged)], env=ENV))
    at_once = tmp_path / "merged-at-once"
    _ok(run_cli([*args, "--block-size", "16", "--merge", "-o", str(at_once)], env=ENV))
    fill = ["fill-mask", "--json", "-k", "3"]
    masked = "the [MASK] sat on the mat ."
    for folder in (merged, at_once):
        assert json.loads((folder / "config.json").read_text())["architectures"] == ["BertForPreTraining"]
        assert probabilities(folder) == pytest.approx(adapted, abs=1e-4)
        filled = _json_lines(_ok(run_cli([*fill, "-m", str(folder)], input=masked, env=ENV)))
        expected = _json_lines(_ok(run_cli([*fill, "-m", str(out)], input=masked, env=ENV)))
        assert [p["token"] for p in filled[0]["masks"][0]["predictions"]] == [
            p["token"] for p in expected[0]["masks"][0]["predictions"]
        ]


@pytest.mark.slow
def test_lora_sigint_then_resume_matches_the_uninterrupted_run(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 1200, seed=3)
    common = ["finetune", str(train), "--model", str(tiny_bert), "--lora", "--epochs", "3", "--seed", "7", "--json"]
    whole = run_cli([*common, "--output", str(tmp_path / "whole")], env=ENV, subprocess=True)
    expected = json.loads(_ok(whole))
    out = tmp_path / "interrupted"
    code, stderr = interrupt_after_first_epoch([*common, "--output", str(out)], signal.SIGINT, ENV, 120)
    assert code == 130, stderr
    resumed = run_cli([*common, "--output", str(out), "--resume"], env=ENV, subprocess=True)
    got = json.loads(_ok(resumed))
    assert "resuming from" in resumed.stderr
    assert got["history"] == expected["history"] and got["train"]["loss"] == expected["train"]["loss"]
    from safetensors.torch import load_file

    a = load_file(tmp_path / "whole" / "adapter_model.safetensors")
    b = load_file(out / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)


@pytest.mark.slow
def test_lora_under_torchrun_two_cpu_processes(tmp_path: Path, tiny_bert: Path) -> None:
    import subprocess
    import sys

    train = write_sentiment_csv(tmp_path / "train.csv", 640, seed=6)  # 576 training rows: 18 steps of 2 x 16
    out = tmp_path / "ddp-adapter"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "llmtool", "finetune", str(train), "--model", str(tiny_bert), "--output", str(out),
        "--lora", "--epochs", "2", "--lr", "5e-3", "--batch-size", "16", "--save-steps", "18", "--json",
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    assert [h["step"] for h in json.loads(lines[0])["history"]] == [18, 36]
    assert proc.stderr.count("LoRA: ") == 1  # the main process speaks
    assert {p.name for p in out.iterdir()} >= ADAPTER_FILES
    assert json.loads((out / "llmtool_settings.json").read_text())["world_size"] == 2
