"""Broken model folders and no network: a clear one-line error naming the file, exit 3."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import cli_env, llmtool_executable, run_cli


@pytest.fixture(autouse=True, params=["torch", "auto"])
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every broken model gets the same one-line error from either engine (auto: CTranslate2 first)."""
    import conftest

    monkeypatch.setattr(conftest, "ENGINE", request.param)
    return str(request.param)


def broken_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors(tiny_bert: Path, tmp_path: Path) -> None:
    folder = broken_copy(tiny_bert, tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"llmtool: error: {weights}: corrupt or truncated weights")
    assert proc.stderr.count("\n") == 1


def test_garbage_safetensors_header(tiny_bert: Path, tmp_path: Path) -> None:
    folder = broken_copy(tiny_bert, tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"\xff" * 64)
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert "model.safetensors: corrupt or truncated weights" in proc.stderr


def test_bad_config_json(tiny_bert: Path, tmp_path: Path) -> None:
    folder = broken_copy(tiny_bert, tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "bert", ')
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"llmtool: error: {folder / 'config.json'}: not valid JSON")


def test_missing_config_json(tiny_bert: Path, tmp_path: Path) -> None:
    folder = broken_copy(tiny_bert, tmp_path / "m")
    (folder / "config.json").unlink()
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert f"{folder / 'config.json'}: missing" in proc.stderr


def test_unknown_model_type(tiny_bert: Path, tmp_path: Path) -> None:
    folder = broken_copy(tiny_bert, tmp_path / "m")
    (folder / "config.json").write_text('{"model_type": "no-such-architecture"}')
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"llmtool: error: cannot load tokenizer from {folder}") or proc.stderr.startswith(
        f"llmtool: error: cannot load model from {folder}"
    )
    assert proc.stderr.count("\n") == 1


def test_missing_tokenizer_files(tiny_bert: Path, tmp_path: Path) -> None:
    folder = broken_copy(tiny_bert, tmp_path / "m")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"llmtool: error: {folder}: no tokenizer files (expected one of tokenizer.json")
    assert proc.stderr.count("\n") == 1


def test_no_weights_at_all(tiny_bert: Path, tmp_path: Path) -> None:
    folder = broken_copy(tiny_bert, tmp_path / "m")
    (folder / "model.safetensors").unlink()
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(folder)])
    assert proc.returncode == 3
    assert proc.stderr == f"llmtool: error: {folder}: no model weights (*.safetensors) found\n"


def test_wrong_kind_of_model(tiny_gpt2: Path) -> None:
    proc = run_cli(["fill-mask", "the [MASK] .", "-m", str(tiny_gpt2)])
    assert proc.returncode in (2, 3)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def _no_network_available() -> bool:
    return shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"], check=False).returncode != 0


@pytest.mark.skipif(_no_network_available(), reason="needs `unshare -n` (a private network namespace)")
@pytest.mark.parametrize("offline", [True, False])
def test_no_network_fails_fast(offline: bool, tiny_bert: Path) -> None:
    """In a network namespace with no interfaces, a Hub id fails in seconds, never after time-outs."""
    env = cli_env()
    if not offline:
        env.pop("HF_HUB_OFFLINE")
    start = time.monotonic()
    proc = subprocess.run(
        ["unshare", "-n", llmtool_executable(), "generate", "hello", "-m", "gpt2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert time.monotonic() - start < 15
    assert proc.stderr.count("\n") == 1
    # A local folder still works with no network at all.
    local = subprocess.run(
        ["unshare", "-n", llmtool_executable(), "fill-mask", "the [MASK] .", "-m", str(tiny_bert)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert local.returncode == 0, local.stderr
