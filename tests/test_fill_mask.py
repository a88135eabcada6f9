"""fill-mask: same answers as the Transformers pipeline, in every format, over real pipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

LINES = [
    "The capital of France is [MASK].",
    "the [MASK] and the [MASK] are in the house .",
    "once upon a [MASK] there lived a king in a castle , and it was a great story .",
    "[MASK]",
]


def pipeline_predictions(model_dir: Path, text: str, top_k: int, targets: list[str] | None = None) -> list:
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(model_dir), device="cpu")
    text = text.replace("[MASK]", fill.tokenizer.mask_token)
    out = fill(text, top_k=top_k, targets=targets)
    # The pipeline returns a flat list for one mask and a list of lists for several: normalise.
    return out if isinstance(out[0], list) else [out]


@pytest.mark.parametrize("model_fixture", ["tiny_bert", "tiny_roberta"])
def test_matches_pipeline_scores_and_tokens(model_fixture: str, request: pytest.FixtureRequest) -> None:
    model_dir: Path = request.getfixturevalue(model_fixture)
    proc = run_cli(["fill-mask", "-m", str(model_dir), "--json", "-k", "4"], input="\n".join(LINES) + "\n")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    for line, record in zip(LINES, records, strict=True):
        assert record["input"] == line
        expected = pipeline_predictions(model_dir, line, 4)
        assert len(record["masks"]) == len(expected)
        for mask, exp in zip(record["masks"], expected, strict=True):
            assert [p["token_id"] for p in mask["predictions"]] == [e["token"] for e in exp]
            assert [p["token"] for p in mask["predictions"]] == [e["token_str"] for e in exp]
            for p, e in zip(mask["predictions"], exp, strict=True):
                assert p["score"] == pytest.approx(e["score"], abs=1e-5)


def test_targets_match_pipeline(tiny_bert: Path) -> None:
    proc = run_cli(["fill-mask", LINES[0], "-m", str(tiny_bert), "--targets", "paris,berlin,rome", "--json"])
    assert proc.returncode == 0, proc.stderr
    preds = json.loads(proc.stdout)["masks"][0]["predictions"]
    expected = pipeline_predictions(tiny_bert, LINES[0], 3, ["paris", "berlin", "rome"])[0]
    assert [p["token"] for p in preds] == [e["token_str"] for e in expected]
    assert [p["score"] for p in preds] == pytest.approx([e["score"] for e in expected], abs=1e-5)


def test_multi_token_target_is_a_clear_usage_error(tiny_bert: Path) -> None:
    proc = run_cli(["fill-mask", LINES[0], "-m", str(tiny_bert), "--targets", "paris,zzqx"])
    assert proc.returncode == 2
    assert proc.stderr.startswith("llmtool: error: --targets: 'zzqx' is not one token")


def test_batched_equals_one_at_a_time(tiny_bert: Path) -> None:
    many = [f"{w} is the [MASK] of the {v} ." for w in ("paris", "rome", "the dog", "a") for v in ("city", "day")]
    batched = run_cli(["fill-mask", "-m", str(tiny_bert), "--json", "-b", "3"], input="\n".join(many))
    single = [run_cli(["fill-mask", line, "-m", str(tiny_bert), "--json"]) for line in many[:3]]
    b = [json.loads(x) for x in batched.stdout.splitlines()]
    assert len(b) == len(many)
    for i, proc in enumerate(single):
        one = json.loads(proc.stdout)
        for m1, m2 in zip(b[i]["masks"], one["masks"], strict=True):
            assert [p["token_id"] for p in m1["predictions"]] == [p["token_id"] for p in m2["predictions"]]
            for p1, p2 in zip(m1["predictions"], m2["predictions"], strict=True):
                assert p1["score"] == pytest.approx(p2["score"], abs=1e-5)


def test_text_format_fills_each_mask_with_its_top_token(tiny_bert: Path) -> None:
    js = run_cli(["fill-mask", "-m", str(tiny_bert), "--json"], input="\n".join(LINES[:2]))
    text = run_cli(["fill-mask", "-m", str(tiny_bert)], input="\n".join(LINES[:2]))
    assert text.returncode == 0
    expected = []
    for record in map(json.loads, js.stdout.splitlines()):
        out = record["input"]
        for mask in record["masks"]:
            token = mask["predictions"][0]["token"].strip()
            if token.startswith("##"):  # a WordPiece continuation joins the word before the mask
                out = re.sub(r"\s*\[MASK\]", token[2:], out, count=1)
            else:
                out = out.replace("[MASK]", token, 1)
        expected.append(out)
    assert text.stdout == "\n".join(expected) + "\n"


def test_tsv_format(tiny_bert: Path) -> None:
    proc = run_cli(["fill-mask", LINES[1], "-m", str(tiny_bert), "-f", "tsv", "-k", "2"])
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert rows[0] == ["index", "mask", "rank", "token", "token_id", "score", "error"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        ("0", "0", "1"),
        ("0", "0", "2"),
        ("0", "1", "1"),
        ("0", "1", "2"),
    ]
    assert all(0 < float(r[5]) <= 1 for r in rows[1:])


def test_roberta_accepts_both_mask_spellings(tiny_roberta: Path) -> None:
    a = run_cli(["fill-mask", "The capital of France is [MASK].", "-m", str(tiny_roberta), "--json"])
    b = run_cli(["fill-mask", "The capital of France is <mask>.", "-m", str(tiny_roberta), "--json"])
    assert a.returncode == b.returncode == 0
    assert json.loads(a.stdout)["masks"] == json.loads(b.stdout)["masks"]


def test_line_without_mask_stops_with_line_number(tiny_bert: Path) -> None:
    proc = run_cli(["fill-mask", "-m", str(tiny_bert)], input="the [MASK] .\n\nno mask here\nthe [MASK] .\n")
    assert proc.returncode == 2
    assert proc.stdout.count("\n") == 1  # the line before the bad one was answered
    assert proc.stderr == "llmtool: error: <stdin>:3: no [MASK] in this line\n"


def test_skip_invalid_writes_error_records_and_continues(tiny_bert: Path) -> None:
    long_line = "the [MASK] " + "dog " * 100 + "[MASK] ."  # second mask beyond 64 positions
    stdin = f"the [MASK] .\nno mask here\n{long_line}\nthe [MASK] .\n"
    proc = run_cli(["fill-mask", "-m", str(tiny_bert), "--json", "--skip-invalid"], input=stdin)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["index"] for r in records] == [0, 1, 2, 3]
    assert records[1] == {"index": 1, "line": 2, "input": "no mask here", "error": "no [MASK] in this line"}
    assert "maximum length of 64 tokens" in records[2]["error"]
    assert "masks" in records[3]
    text = run_cli(["fill-mask", "-m", str(tiny_bert), "--skip-invalid"], input=stdin)
    assert text.stdout.splitlines()[1] == "no mask here"  # passes through, keeping lines aligned


def test_long_line_with_mask_inside_the_window_is_truncated_not_refused(tiny_bert: Path) -> None:
    proc = run_cli(["fill-mask", "the [MASK] " + "dog " * 200, "-m", str(tiny_bert), "--json"])
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["masks"]) == 1


def test_input_files(tiny_bert: Path, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("the [MASK] .\r\n\r\nthe [MASK] of italy .\r\n")
    (tmp_path / "a.jsonl").write_text('{"text": "the [MASK] ."}\n{"text": "the [MASK] of italy ."}\n')
    (tmp_path / "a.csv").write_text('id,sentence\n1,the [MASK] .\n2,"the [MASK] of italy ."\n')
    outs = []
    for name in ("a.txt", "a.jsonl", "a.csv"):
        proc = run_cli(["fill-mask", "-i", str(tmp_path / name), "-m", str(tiny_bert)])
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1] == outs[2] and outs[0].count("\n") == 2
    bad = run_cli(["fill-mask", "-i", str(tmp_path / "a.csv"), "--column", "sentense", "-m", str(tiny_bert)])
    assert bad.returncode == 2
    assert "no column 'sentense' (did you mean 'sentence'?)" in bad.stderr


def test_python_api(tiny_bert: Path) -> None:
    import llmtool

    records = list(llmtool.fill_mask(["the [MASK] .", "a [MASK] day"], model=str(tiny_bert), top_k=2))
    assert [r["index"] for r in records] == [0, 1]
    assert all(len(r["masks"][0]["predictions"]) == 2 for r in records)


@pytest.mark.parametrize("door", ["cli", "api"])
def test_memory_stays_flat_on_a_long_stream(door: str, tmp_path: Path) -> None:
    """Peak memory must not grow with the length of piped input (streaming, bench row 7), through the
    CLI and through the Python API alike.

    Lines of 5-60 words come in batches of ever-new shapes; oneDNN's kernel cache, left at its
    default, kept one kernel per shape: this very run grew by 27 MB from 500 to 8,000 lines (443 ->
    470 MB, one thread). llmtool turns the cache off for its streaming commands."""
    import os
    import random
    import subprocess
    import sys

    import tiny_models
    from conftest import cli_env, llmtool_executable
    from transformers import BertConfig, BertForMaskedLM

    model = tiny_models.build_bert(tmp_path / "bert")
    config = BertConfig.from_pretrained(model)  # wide enough, and long enough, for real shapes
    config.update({"hidden_size": 128, "intermediate_size": 512, "max_position_embeddings": 512})
    BertForMaskedLM(config).save_pretrained(model)
    rng = random.Random(0)
    lines = []
    for _ in range(8000):
        words = rng.choices(tiny_models.WORDS, k=rng.randint(5, 60))
        words[rng.randrange(len(words))] = "[MASK]"
        lines.append(" ".join(words))

    def peak_mb(n: int) -> float:
        path = tmp_path / f"{n}.txt"
        path.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
        command = [llmtool_executable(), "fill-mask", "-m", str(model)]
        if door == "api":
            script = f"import llmtool, sys\nfor r in llmtool.fill_mask(sys.stdin, model={str(model)!r}): pass\n"
            command = [sys.executable, "-c", script]
        with path.open("rb") as stdin:
            proc = subprocess.Popen(
                command,
                stdin=stdin,
                stdout=subprocess.DEVNULL,
                env=cli_env(),
            )
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        assert proc.returncode == 0
        return usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)  # bytes there, KiB on Linux

    few, many = peak_mb(500), peak_mb(8000)
    assert many - few < 16, f"peak RSS grew from {few:.0f} MB (500 lines) to {many:.0f} MB (8,000 lines)"
