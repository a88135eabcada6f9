"""``finetune --task seq2seq``: an encoder-decoder (a tiny local BART) fine-tuned on (source, target) pairs.

The pair readers (headerless TAB-separated text with numbered fields, tables with a header, JSON
Lines), the examples (loss on the target only), training into a folder that ``AutoModelForSeq2SeqLM``
loads, LoRA, --resume, --dry-run and the plan line; malformed files are refused with one line naming
file and line, exit 2, and no output folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models
from conftest import invoke

PAIRS = [
    ("the cat sleeps", "le chat dort"),
    ("the dog runs", "le chien court"),
    ("a red house", "une maison rouge"),
    ("good morning", "bonjour"),
    ("thank you very much", "merci beaucoup"),
]


@pytest.fixture(scope="module")
def tiny_bart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.build_bart(tmp_path_factory.mktemp("seq2seq") / "bart")


def write_pairs(path: Path, rows: int = 40) -> Path:
    """English TAB French (TAB attribution), the layout of Tatoeba's fra-eng.txt."""
    lines = [f"{en}\t{fr}\tCC-BY 2.0 #{i}" for i, (en, fr) in enumerate(PAIRS * (rows // len(PAIRS)))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def finetune(data: Path, model: Path, out: Path, *extra: str) -> dict[str, object]:
    result = invoke(["finetune", str(data), "--task", "seq2seq", "-m", str(model), "-o", str(out), "--json", *extra])
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- the readers


def test_the_three_layouts_read_the_same_pairs(tmp_path: Path) -> None:
    from llmtool.training.seq2seq_data import iter_pairs, resolve_layout

    plain = write_pairs(tmp_path / "pairs.txt", rows=5)
    table = tmp_path / "pairs.tsv"
    table.write_text("id\tsrc\ttgt\n" + "".join(f"{i}\t{s}\t{t}\n" for i, (s, t) in enumerate(PAIRS)), encoding="utf-8")
    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in PAIRS), encoding="utf-8")
    want = [{"source": s, "target": t} for s, t in PAIRS]
    for layout in (
        resolve_layout(str(plain), None, None),
        resolve_layout(str(table), "src", "tgt"),
        resolve_layout(str(jsonl), None, None),
    ):
        assert [{k: p[k] for k in ("source", "target")} for p in iter_pairs(layout)] == want
    reverse = resolve_layout(str(plain), "2", "1")  # French -> English: fields by number
    assert [(p["source"], p["target"]) for p in iter_pairs(reverse)] == [(t, s) for s, t in PAIRS]
    assert reverse.describe() == "TAB-separated pairs, source=field 2, target=field 1"


@pytest.mark.parametrize(
    ("name", "text", "flags", "message"),
    [
        ("short.txt", "a\tb\nc d\n", [], "short.txt:2: 1 TAB-separated fields; the first line has 2"),
        ("empty.txt", "a\tb\nc\t \n", [], "short.txt"),
        ("pairs.jsonl", '{"source": "a", "target": "b"}\n{"source": "c"}\n', [], "pairs.jsonl:2: no field 'target'"),
        ("pairs.jsonl", '{"source": "a", "target": "b"}\n{"source": "c", "target": 3}\n', [], "is not a string"),
        ("pairs.csv", "source,target\na,b\n", ["--source-column", "src"], "no column 'src'"),
        ("pairs.txt", "a\tb\n", ["--source-column", "3"], "--source-column '3'"),
        ("pairs.txt", "a\tb\n", ["--source-column", "2", "--target-column", "2"], "name the same column"),
        ("one.txt", "just one field\n", [], "one.txt:1: expected a source and a target separated by a TAB"),
    ],
)
def test_malformed_pairs_exit_2_with_one_line_and_no_folder(
    tmp_path: Path, tiny_bart: Path, name: str, text: str, flags: list[str], message: str
) -> None:
    data = tmp_path / name
    data.write_text(text, encoding="utf-8")
    if name == "empty.txt":
        message = "empty.txt:2:2: empty target"
    out = tmp_path / "out"
    result = invoke(["finetune", str(data), "--task", "seq2seq", "-m", str(tiny_bart), "-o", str(out), *flags])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_flags_of_other_tasks_are_refused(tmp_path: Path, tiny_bart: Path) -> None:
    data = write_pairs(tmp_path / "pairs.txt")
    for flags, message in (
        (["--block-size", "16"], "--block-size and --line-by-line apply to --task clm and mlm"),
        (["--task", "clm", "--source-column", "1"], "--source-column and --target-column apply to --task seq2seq"),
    ):
        result = invoke(["finetune", str(data), "--task", "seq2seq", "-m", str(tiny_bart), "--dry-run", *flags])
        assert result.returncode == 2 and message in result.stderr, result.stderr


# --------------------------------------------------------------------------- examples


def test_the_loss_covers_the_target_only(tiny_bart: Path) -> None:
    from transformers import AutoTokenizer

    from llmtool.training.seq2seq_data import PairEncoder, collator

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bart))
    batch = {"source": [s for s, _ in PAIRS[:2]], "target": ["le chat", "un très long texte de plusieurs mots"]}
    encoded = PairEncoder(tokenizer, 12)(batch)
    assert encoded["input_ids"][0] == tokenizer(PAIRS[0][0])["input_ids"]
    assert encoded["labels"][0] == tokenizer(text_target="le chat")["input_ids"]
    assert len(encoded["labels"][1]) == 12  # truncated at --max-length
    rows = [{k: encoded[k][i] for k in encoded} for i in range(2)]
    padded = collator(tokenizer)(rows)
    short = len(encoded["labels"][0])
    assert padded["labels"][0, short:].tolist() == [-100] * (12 - short)  # padding is never learned
    assert padded["labels"][0, :short].tolist() == encoded["labels"][0]
    assert "decoder_input_ids" not in padded  # the model shifts the labels behind its decoder start token


# --------------------------------------------------------------------------- training


def test_finetune_trains_a_folder_that_auto_model_for_seq2seq_loads(tmp_path: Path, tiny_bart: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    data = write_pairs(tmp_path / "pairs.txt")
    out = tmp_path / "model"
    result = invoke(["finetune", str(data), "--task", "seq2seq", "-m", str(tiny_bart), "-o", str(out),
                     "--max-steps", "6", "--valid-split", "0.25", "--json"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "plan: one row per example, 30 training examples, 10 for validation" in result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["task"] == "seq2seq" and {"loss", "perplexity"} <= set(metrics["valid"])  # type: ignore[arg-type]
    model = AutoModelForSeq2SeqLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = model.generate(**tokenizer(["the cat sleeps"], return_tensors="pt"), max_new_tokens=5)
    assert ids.shape[0] == 1
    record = json.loads((out / "llmtool_settings.json").read_text(encoding="utf-8"))
    assert record["task"] == "seq2seq" and record["columns"]["text"] == "1" and record["max_length"] == 64


def test_lora_writes_a_seq2seq_adapter(tmp_path: Path, tiny_bart: Path) -> None:
    data = write_pairs(tmp_path / "pairs.txt")
    out = tmp_path / "adapter"
    metrics = finetune(data, tiny_bart, out, "--lora", "--max-steps", "4", "--valid-split", "0")
    assert metrics["task"] == "seq2seq"
    config = json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))
    assert config["task_type"] == "SEQ_2_SEQ_LM"
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "out_proj"}


def test_resume_continues_to_the_same_weights(tmp_path: Path, tiny_bart: Path) -> None:
    """A folder holding only a checkpoint (what Ctrl-C leaves) resumes to the uninterrupted run's weights."""
    import shutil

    from safetensors.torch import load_file

    data = write_pairs(tmp_path / "pairs.txt")
    common = ["--max-steps", "6", "--valid-split", "0", "--save-steps", "3", "--seed", "1"]
    whole = tmp_path / "whole"
    finetune(data, tiny_bart, whole, *common, "--keep-checkpoints")
    resumed = tmp_path / "resumed"
    shutil.copytree(whole / "checkpoints" / "checkpoint-3", resumed / "checkpoints" / "checkpoint-3")
    result = invoke(["finetune", str(data), "--task", "seq2seq", "-m", str(tiny_bart), "-o", str(resumed),
                     "--resume", *common])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr and "checkpoint-3" in result.stderr
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(float((a[k] - b[k]).abs().max()) < 1e-6 for k in a)


def test_dry_run_reports_the_columns_and_the_plan(tmp_path: Path, tiny_bart: Path) -> None:
    data = write_pairs(tmp_path / "pairs.txt")
    result = invoke(["finetune", str(data), "--task", "seq2seq", "-m", str(tiny_bart), "--dry-run", "--json",
                     "--source-column", "2", "--target-column", "1"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["columns"] == {"source": "2", "target": "1"}
    assert report["rows"] == {"train": 36, "valid": 4}
    assert report["tokens"]["max_length"] == 64 and report["tokens"]["truncated_rows"] == 0
    assert report["plan"]["batch_size"] == 8 and "steps" in report["plan"]["chosen"]


def test_a_fine_tuned_marian_keeps_its_zero_start_row_and_translates_alike_on_both_engines(tmp_path: Path) -> None:
    """Marian's decoder starts from the padding row, a zero vector in CTranslate2: fine-tuning must not move
    it (the embedding is tied to the output layer, whose softmax would), or the two engines part."""
    from safetensors.numpy import load_file

    base = tiny_models.build_marian(tmp_path / "marian")
    pad = json.loads((base / "config.json").read_text(encoding="utf-8"))["pad_token_id"]
    data = write_pairs(tmp_path / "pairs.txt")
    out = tmp_path / "model"
    finetune(data, base, out, "--max-steps", "12", "--lr", "1e-2", "--valid-split", "0")
    weights = load_file(str(out / "model.safetensors"))
    embedding = next(v for k, v in weights.items() if k.endswith("shared.weight") or k.endswith("embed_tokens.weight"))
    assert not embedding[pad].any() and embedding[:pad].any()
    texts = tmp_path / "english.txt"
    texts.write_text("".join(f"{en}\n" for en, _ in PAIRS), encoding="utf-8")
    outputs = {}
    for engine in ("torch", "ctranslate2"):
        result = invoke(["translate", "-m", str(out), "--engine", engine, "--greedy", "-t", "8", "-i", str(texts)])
        assert result.returncode == 0, result.stderr
        outputs[engine] = result.stdout
    assert outputs["torch"] == outputs["ctranslate2"] and outputs["torch"].count("\n") == len(PAIRS)
