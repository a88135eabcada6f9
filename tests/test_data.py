"""Training data: column choice, label mapping, the seeded split, and every bad-data message.

The pure functions are tested directly; the messages through the installed ``llmtool finetune``,
which must fail with one line, exit status 2, and no output folder left behind, before any model
loads (the model named here does not even exist).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import cli_env, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from llmtool.errors import InputError, UsageError
from llmtool.training.data import (
    ColumnSpec,
    Layout,
    iter_rows,
    prepare,
    resolve_layout,
    sort_labels,
    split_indices,
)


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


# --------------------------------------------------------------------------- labels


def test_integer_labels_sort_numerically_and_strings_alphabetically() -> None:
    assert sort_labels(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_labels(["pos", "neg", "neutral"]) == ["neg", "neutral", "pos"]
    assert sort_labels(["1", "a"]) == ["1", "a"]
    assert sort_labels(["-1", "1", "0"]) == ["-1", "0", "1"]


# --------------------------------------------------------------------------- split


def test_split_is_seeded_stratified_and_a_partition() -> None:
    labels = [0] * 60 + [1] * 30 + [2] * 10
    train, valid = split_indices(100, 0.1, seed=7, labels=labels)
    assert sorted(train + valid) == list(range(100))
    assert Counter(labels[i] for i in valid) == {0: 6, 1: 3, 2: 1}
    assert split_indices(100, 0.1, seed=7, labels=labels) == (train, valid)
    assert split_indices(100, 0.1, seed=8, labels=labels) != (train, valid)


def test_unlabelled_split_holds_out_the_rounded_share() -> None:
    train, valid = split_indices(25, 0.2, seed=0)
    assert len(valid) == 5 and len(train) == 20 and not set(train) & set(valid)


def test_too_few_rows_for_the_split() -> None:
    with pytest.raises(InputError, match=r"3 rows are too few for --valid-split 0.1: it needs at least 10"):
        split_indices(3, 0.1, seed=0, source="x.csv")
    with pytest.raises(UsageError):
        split_indices(10, 1.0, seed=0)


def test_a_single_row_class_stays_in_training() -> None:
    labels = [0] * 19 + [1]
    train, valid = split_indices(20, 0.5, seed=0, labels=labels)
    assert 19 in train and all(labels[i] == 0 for i in valid)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=2, max_value=40), min_size=2, max_size=6),
    fraction=st.sampled_from([0.1, 0.2, 0.25, 0.5]),
    seed=st.integers(0, 1000),
)
def test_stratified_split_validates_and_trains_every_class(sizes: list[int], fraction: float, seed: int) -> None:
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    if round(len(labels) * fraction) < 1:
        return
    train, valid = split_indices(len(labels), fraction, seed, labels)
    assert sorted(train + valid) == list(range(len(labels)))
    for cls in range(len(sizes)):
        assert any(labels[i] == cls for i in valid), "every class with two rows is validated"
        assert any(labels[i] == cls for i in train), "every class keeps training rows"


# --------------------------------------------------------------------------- columns


def test_default_columns(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", "id,sentence,label\n1,good,pos\n2,bad,neg\n")
    layout = resolve_layout(str(f), "classify", ColumnSpec())
    assert (layout.text, layout.label) == ("sentence", "label")
    only = write(tmp_path / "b.csv", "id,review,stars\n1,good,5\n2,bad,1\n")
    layout = resolve_layout(str(only), "classify", ColumnSpec(label="stars"))
    assert layout.text == "review"  # the only column holding text, not numbers


def test_header_whitespace_and_bom_are_handled(tmp_path: Path) -> None:
    f = write(tmp_path / "a.csv", b"\xef\xbb\xbf text , label \r\ngood movie,pos\r\nbad film,neg\r\n")
    layout = resolve_layout(str(f), "classify", ColumnSpec())
    rows = list(iter_rows(layout))
    assert (layout.text, layout.label) == ("text", "label")
    assert rows == [{"text": "good movie", "label": "pos", "line": 2}, {"text": "bad film", "label": "neg", "line": 3}]


def test_pairs_and_labels_are_read_and_labels_stripped(tmp_path: Path) -> None:
    f = write(tmp_path / "p.csv", 'premise,hypothesis,label\n"a, b",c, yes\nd,e,no \n')
    layout = resolve_layout(str(f), "classify", ColumnSpec(text="premise", text_pair="hypothesis"))
    assert [r["label"] for r in iter_rows(layout)] == ["yes", "no"]
    assert next(iter_rows(layout))["text"] == "a, b"


def test_text_files_for_language_modelling(tmp_path: Path) -> None:
    txt = write(tmp_path / "c.txt", "first line\n\nsecond line\n")
    assert [r["text"] for r in iter_rows(resolve_layout(str(txt), "clm", ColumnSpec()))] == [
        "first line",
        "second line",
    ]
    jsonl = write(tmp_path / "c.jsonl", '{"body": "one"}\n{"body": "two"}\n')
    layout = resolve_layout(str(jsonl), "mlm", ColumnSpec(text="body"))
    assert [r["text"] for r in iter_rows(layout)] == ["one", "two"]
    with pytest.raises(UsageError, match=r"classify reads a \.csv"):
        resolve_layout(str(txt), "classify", ColumnSpec())


def test_prepare_maps_labels_and_splits(tmp_path: Path) -> None:
    lines = ["text,label"] + [f"row {i},{'pos' if i % 3 else 'neg'}" for i in range(30)]
    f = write(tmp_path / "a.csv", "\n".join(lines) + "\n")
    data = prepare(str(f), "classify", cache_dir=str(tmp_path / "cache"), valid_split=0.2, seed=1)
    assert data.labels == ["neg", "pos"]
    assert data.label2id == {"neg": 0, "pos": 1}
    assert len(data.train) + len(data.valid) == 30 and len(data.valid) == 6
    assert data.valid_counts == {"neg": 2, "pos": 4}
    assert data.train_counts == {"neg": 8, "pos": 16}
    assert data.train.features["label"].names == ["neg", "pos"]
    assert set(data.train["label"]) == {0, 1}


def test_validation_file_uses_the_training_columns(tmp_path: Path) -> None:
    train = write(tmp_path / "t.csv", "id,review,label\n1,good,pos\n2,bad,neg\n")
    valid = write(tmp_path / "v.csv", "label,review,id\npos,fine,3\nmeh,so so,4\n")
    with pytest.raises(InputError, match=r"v.csv:3: label 'meh' does not occur in the training data"):
        prepare(str(train), "classify", cache_dir=str(tmp_path / "c"), valid_path=str(valid))


def test_cache_follows_file_changes(tmp_path: Path) -> None:
    f = write(tmp_path / "a.txt", "one\ntwo\n")
    cache = str(tmp_path / "cache")
    first = prepare(str(f), "clm", cache_dir=cache, valid_split=0)
    write(f, "three\nfour\nfive\n")
    second = prepare(str(f), "clm", cache_dir=cache, valid_split=0)
    assert first.train["text"] == ["one", "two"] and second.train["text"] == ["three", "four", "five"]


def test_layout_describes_itself() -> None:
    assert Layout("a.csv", "csv", "text", None, "label").describe() == "text='text', label='label'"
    assert Layout("a.txt", "lines", "").describe() == "every line is a text"


# --------------------------------------------------------------------------- the CLI's messages

BAD_DATA = [
    ("missing", None, [], "missing.csv: no such file"),
    ("empty", b"", [], "bad.csv: empty file"),
    ("header only", "text,label\n\n", [], "bad.csv: no data rows"),
    (
        "no header",
        "great movie,1\nbad movie,0\n",
        [],
        "bad.csv:1: no column 'label'; columns: 'great movie', '1'; "
        "the first line should be a header naming the columns, and this one looks like data",
    ),
    (
        "missing column",
        "text,label\na,1\nb,0\n",
        ["--label-column", "lable"],
        "bad.csv:1: no column 'lable' (did you mean 'label'?); columns: 'text', 'label'",
    ),
    ("missing default", "text,labels\na,1\nb,0\n", [], "no column 'label' (did you mean 'labels'?)"),
    ("which text", "a,b,label\nx,y,1\nz,w,0\n", [], "bad.csv:1: which column is the text? pass --text-column"),
    ("latin-1", b"text,label\ncaf\xe9,1\nb,0\n", [], "bad.csv:2:4: not valid utf-8 (byte 0xe9)"),
    ("utf-16", "text,label\nx,1\n".encode("utf-16"), [], "bad.csv:1:1: looks like UTF-16"),
    ("ragged", "text,label\na,1\nb,0,3\n", [], "bad.csv:3: 3 fields, but the header has 2"),
    ("unclosed quote", 'text,label\na,1\n"b,0\nc,1\n', [], "bad.csv:3: bad CSV: unclosed quote"),
    ("empty text", "text,label\na,1\n  ,0\n", [], "bad.csv:3:1: empty text in column 'text'"),
    ("empty label", "text,label\na,1\nb,\n", [], "bad.csv:3:2: empty label in column 'label'"),
    (
        "one class",
        "text,label\na,1\nb,1\nc,1\n",
        [],
        "bad.csv: label column 'label' has only one class ('1' in all 3 rows); a classifier needs at least two",
    ),
    (
        "too few rows",
        "text,label\na,1\nb,0\nc,1\n",
        [],
        "bad.csv: 3 rows are too few for --valid-split 0.1: it needs at least 10 (or pass --valid FILE)",
    ),
    ("txt for classify", "just text\n", ["--valid-split", "0"], "--task classify reads a .csv or .tsv file"),
]


@pytest.mark.parametrize(("case", "content", "flags", "message"), BAD_DATA, ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_one_line_exit_2_and_leaves_nothing(
    tmp_path: Path, case: str, content: str | bytes | None, flags: list[str], message: str
) -> None:
    name = "bad.txt" if case == "txt for classify" else "bad.csv"
    data = tmp_path / ("missing.csv" if content is None else name)
    if content is not None:
        write(data, content)
    out = tmp_path / "out"
    result = run_cli(
        ["finetune", str(data), "--model", str(tmp_path / "no-such-model"), "--output", str(out), *flags],
        env=cli_env(OMP_NUM_THREADS="1"),
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmtool: error: "), result.stderr
    assert message in lines[0]
    assert not out.exists()


def test_encoding_flag_reads_latin1(tmp_path: Path, tiny_bert: Path) -> None:
    data = write(
        tmp_path / "l1.csv",
        b"text,label\n" + b"".join(f"caf\xe9 {i},{i % 2}\n".encode("latin-1") for i in range(20)),
    )
    result = run_cli(["finetune", str(data), "--model", str(tiny_bert), "--dry-run", "--json", "--encoding", "latin-1"])
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["rows"] == {"train": 18, "valid": 2}
    assert report["labels"] == {"train": {"0": 9, "1": 9}, "valid": {"0": 1, "1": 1}}


def test_output_folder_rules(tmp_path: Path) -> None:
    data = write(tmp_path / "a.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    base = ["finetune", str(data), "--model", str(tmp_path / "none"), "--output", str(out)]
    result = run_cli(base)
    assert result.returncode == 2
    assert "is not empty; pass --overwrite to replace it, or --resume to continue" in result.stderr
    result = run_cli([*base, "--overwrite", "--resume"])
    assert result.returncode == 2 and "contradict" in result.stderr
    # A failing --overwrite run (the model does not exist: exit 3) leaves the old contents alone.
    result = run_cli([*base, "--overwrite"])
    assert result.returncode == 3, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_a_second_run_refuses_a_locked_folder(tmp_path: Path) -> None:
    import os
    import socket

    data = write(tmp_path / "a.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(20)))
    out = tmp_path / "out"
    out.mkdir()
    from filelock import FileLock

    # This live test process holds the lock, as a running llmtool does (an OS file lock, and who holds it).
    held = FileLock(str(out / ".llmtool.lock"), thread_local=False)
    held.acquire()
    lock = {"pid": os.getpid(), "host": socket.gethostname()}
    (out / ".llmtool.lock").write_text(json.dumps(lock))
    result = run_cli(["finetune", str(data), "--model", "x", "--output", str(out), "--overwrite"])
    assert result.returncode == 2
    assert f"is in use by another llmtool run (pid {os.getpid()})" in result.stderr
    held.release()  # the holder is gone (a dead process releases its lock too): the lock file left is no lock
    lock["pid"] = 2**22 + 12345
    (out / ".llmtool.lock").write_text(json.dumps(lock))
    result = run_cli(["finetune", str(data), "--model", str(tmp_path / "none"), "--output", str(out), "--overwrite"])
    assert result.returncode == 3, result.stderr  # got past the lock, to the missing model
