"""Faults during training: signals at random moments, a full or read-only disk, a vanished output
folder, hostile labels. Whatever happens, no half-written model is left, and --resume finishes."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli_env, llmtool_executable, read_stderr_until, run_cli, start_cli
from synthetic import write_sentiment_csv

ENV = cli_env(OMP_NUM_THREADS="1")


def finetune_args(train: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        str(train),
        "--model",
        str(model),
        "--output",
        str(out),
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--seed",
        "1",
        "--batch-size",
        "16",
        "--save-steps",
        "5",
        *extra,
    ]


def assert_no_half_written_model(out: Path) -> None:
    """Either a complete model (weights, config, tokenizer, metrics) or no model files at all."""
    assert not (out.parent / f".{out.name}.llmtool-final").exists(), "the temporary final folder was left behind"
    if not out.exists():
        return
    names = {p.name for p in out.iterdir()}
    if "model.safetensors" in names or "config.json" in names:
        from safetensors.torch import load_file

        assert {"model.safetensors", "config.json", "metrics.json", "tokenizer.json"} <= names, names
        assert load_file(str(out / "model.safetensors"))
        json.loads((out / "metrics.json").read_text())
    else:
        assert names <= {"checkpoints"}, names  # only what --resume needs


def _mount_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, check=False)
    return probe.returncode == 0


needs_mount = pytest.mark.skipif(not _mount_available(), reason="needs `unshare -m` and tmpfs mounts (root)")


def in_small_mount(mount: Path, options: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run llmtool in a private mount namespace where ``mount`` is a tiny (or read-only) tmpfs."""
    mount.mkdir(parents=True, exist_ok=True)
    script = f'mount -t tmpfs -o {options} tmpfs "{mount}" && exec "$0" "$@"'
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script, llmtool_executable(), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=600,
        check=False,
    )


def pretrain_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    flags = "--objective clm --block-size 32 --batch-size 8 --valid-split 0.1 --epochs 2 --save-steps 5 --seed 1"
    return ["pretrain", str(corpus), "--output", str(out), *flags.split(), *extra]


@pytest.fixture(scope="module")
def training_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Callable[[str], tuple[Callable, float]]:
    """For a command: its arguments for an output folder, and how long the run takes uninterrupted
    on this machine (measured once), so that signals land inside it on any machine."""
    measured: dict[str, tuple[Callable[[Path], list[str]], float]] = {}

    def get(command: str) -> tuple[Callable[[Path], list[str]], float]:
        if command not in measured:
            tmp = tmp_path_factory.mktemp(command)
            if command == "finetune":
                train = write_sentiment_csv(tmp / "train.csv", 400, seed=5)
                args: Callable[[Path], list[str]] = lambda out: finetune_args(train, tiny_bert, out)  # noqa: E731
            else:
                corpus = tmp / "facts.txt"
                assert run_cli(["corpus", "facts", "--countries", "10", "-o", str(corpus), "-q"]).returncode == 0
                args = lambda out: pretrain_args(corpus, out)  # noqa: E731
            start = time.monotonic()  # a whole process, start-up included, as the signalled runs are
            done = run_cli(args(tmp / "out"), env=ENV, subprocess=True)
            assert done.returncode == 0, done.stderr
            measured[command] = (args, time.monotonic() - start)
        return measured[command]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", ["finetune", "pretrain"])
def test_signals_at_random_moments(
    command: str, sig: int, tmp_path: Path, training_run: Callable[[str], tuple[Callable, float]]
) -> None:
    args, seconds = training_run(command)
    rng = random.Random(f"{command}-{int(sig)}")  # repeatable "random" moments: loading, tokenizing, training, saving
    fractions = sorted(rng.uniform(0.1, 0.9) for _ in range(2))
    interrupted = 0
    for i, delay in enumerate(f * seconds for f in fractions):
        out = tmp_path / f"out{i}"
        proc = start_cli(args(out), ENV)
        time.sleep(delay)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
        # 128 + sig: llmtool's own exit; -sig: the signal's default action, which Python restores
        # while the interpreter shuts down after the model is published (the shell sees 128 + sig too)
        assert proc.returncode in (0, 128 + sig, -sig), stderr
        assert "Traceback" not in stderr
        assert_no_half_written_model(out)
        finished = (out / "model.safetensors").exists() and not (out / "checkpoints").exists()
        assert finished or proc.returncode == 128 + sig, (proc.returncode, stderr)
        resumed = run_cli([*args(out), "--resume"], env=ENV)
        if finished:  # the run beat the signal: the finished model stays, --resume says so
            assert resumed.returncode == 2, resumed.stderr
            assert "holds a finished model and no checkpoint to resume" in resumed.stderr
        else:
            interrupted += 1
            assert resumed.returncode == 0, resumed.stderr
        assert_no_half_written_model(out)
        assert (out / "model.safetensors").exists()
    assert interrupted, "no signal landed inside a run"


@pytest.mark.parametrize("signals", [1, 2], ids=["once", "twice"])
def test_signal_during_set_up_waits_for_a_safe_point(
    signals: int, tmp_path: Path, training_run: Callable[[str], tuple[Callable, float]]
) -> None:
    """While torch and Transformers set up, a KeyboardInterrupt raised inside Python code that C++
    called can abort the whole process (exit -6, seen once in CI): the first signal is recorded
    and raised when training would start; a second one quits at once. Either way: 130, no folder."""
    args, _ = training_run("pretrain")
    out = tmp_path / "out"
    proc = start_cli(args(out), ENV)
    seen = read_stderr_until(proc, "training documents")  # the corpus is read; the imports begin
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
    _, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    assert "Ctrl-C: stopping when set-up reaches a safe point (again to quit at once)" in stderr
    assert stderr.rstrip().endswith("llmtool: interrupted") and "Traceback" not in stderr
    assert ("parameters, vocabulary" in stderr) == (signals == 1)  # once: set-up ran to its end
    assert not out.exists()


@needs_mount
def test_disk_full_while_saving(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 200, seed=5)
    mount = tmp_path / "small"
    proc = in_small_mount(mount, "size=256k", finetune_args(train, tiny_bert, mount / "out"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("llmtool: error: no space left on device")
    assert "Traceback" not in proc.stderr


@needs_mount
def test_read_only_output_folder(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 200, seed=5)
    mount = tmp_path / "ro"
    proc = in_small_mount(mount, "ro", finetune_args(train, tiny_bert, mount / "out"))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"llmtool: error: read-only file system: {mount / 'out'}")
    assert proc.stderr.count("\n") == 1


@pytest.mark.slow
def test_output_folder_deleted_during_training(tmp_path: Path, tiny_bert: Path) -> None:
    train = write_sentiment_csv(tmp_path / "train.csv", 800, seed=5)
    out = tmp_path / "out"
    proc = start_cli(finetune_args(train, tiny_bert, out, "--epochs", "3"), ENV)
    seen = read_stderr_until(proc, "epoch 1.00")
    while out.exists():  # the run keeps writing while we delete
        shutil.rmtree(out, ignore_errors=True)
    _, rest = proc.communicate(timeout=300)
    stderr = "".join(seen) + rest
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("llmtool: error: ") and str(out) in last, last
    assert not (out / "model.safetensors").exists()


def test_labels_that_look_like_paths_never_become_paths(tmp_path: Path, tiny_bert: Path) -> None:
    train = tmp_path / "train.csv"
    labels = ["../../escape", "/etc/passwd"]
    rows = [f"the movie is {'good' if i % 2 else 'bad'},{labels[i % 2]}" for i in range(40)]
    train.write_text("text,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "nested" / "out"
    before = {p for p in tmp_path.rglob("*")}
    proc = run_cli(finetune_args(train, tiny_bert, out, "--epochs", "1"), env=ENV)
    assert proc.returncode == 0, proc.stderr
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(p == out.parent or out in p.parents or p == out for p in created), sorted(created)
    config = json.loads((out / "config.json").read_text())
    assert sorted(config["id2label"].values()) == sorted(labels)
