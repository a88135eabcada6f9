"""The benchmark harness runs end to end and writes well-formed results (never checks timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--size",
            "tiny",
            "--rows",
            "3,4",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--out-dir",
            str(out / "work"),
            "--results-dir",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    md = (out / "results.md").read_text(encoding="utf-8")
    # --render rebuilds the same page from results.json alone, measuring nothing
    (out / "results.md").unlink()
    rendered = subprocess.run(
        [sys.executable, "-m", "bench", "--render", "--results-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert (out / "results.md").read_text(encoding="utf-8") == md
    return data, md, out


def test_results_json_has_machine_and_rows(results: tuple[dict, str, Path]) -> None:
    data, _, _ = results
    machine = data["machine"]
    for key in ("cpu", "cpu_count", "torch", "transformers", "llmtool", "date", "load_average_start"):
        assert machine[key] not in (None, ""), key
    assert [row["id"] for row in data["rows"]] == ["3", "4"]


def test_every_row_measured_both_sides(results: tuple[dict, str, Path]) -> None:
    data, _, _ = results
    for row in data["rows"]:
        assert row["skipped"] is None, row
        assert len(row["variants"]) >= 2
        for variant in row["variants"]:
            wall = variant["wall_s"]
            assert wall["n"] >= 1 and wall["min"] <= wall["median"] <= wall["max"]
            assert variant.get("returncodes", [0]) == [0] * len(variant.get("returncodes", [0]))
        for check in row["checks"]:
            assert isinstance(check["value"], float) and check["met"] in (True, False)


def test_fill_mask_row_compares_rates_and_outputs(results: tuple[dict, str, Path]) -> None:
    data, _, _ = results
    row = next(r for r in data["rows"] if r["id"] == "3")
    assert [v["unit"] for v in row["variants"]] == ["lines"] * 3
    assert all(v["rate_per_s"] > 0 for v in row["variants"])
    assert row["table"], "the batch-size sweep is recorded"
    assert any("same top prediction" in note for note in row["notes"])


def test_markdown_has_summary_and_a_section_per_row(results: tuple[dict, str, Path]) -> None:
    _, md, _ = results
    assert md.startswith("# llmtool benchmarks")
    assert "## Summary" in md
    for title in ("## 3. fill-mask throughput", "## 4. Generation, batch 1"):
        assert title in md
    assert "| machine |" in md and "| versions |" in md


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_update_merges_chosen_rows_into_the_page(results: tuple[dict, str, Path], tmp_path: Path) -> None:
    before, _, out = results
    page = tmp_path / "page"
    page.mkdir()
    (page / "results.json").write_text(json.dumps(before), encoding="utf-8")
    quick = ["--quick", "--size", "tiny", "--reps", "1", "--warmup", "0", "--out-dir", str(out / "work")]
    proc = bench(*quick, "--rows", "1", "--update", "--results-dir", str(page))
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads((page / "results.json").read_text(encoding="utf-8"))
    assert after["machine"] == before["machine"]  # the page's run is still the page's run
    assert [row["id"] for row in after["rows"]] == ["1", "3", "4"]
    assert after["rows"][1:] == before["rows"]  # the other rows keep their figures, untouched
    new = after["rows"][0]
    assert new["run"]["date"] and new["run"]["command"].endswith("--update --results-dir " + str(page))
    md = (page / "results.md").read_text(encoding="utf-8")
    assert "| re-measured later (`--update`) | row 1 on " in md and "## 1. Start-up" in md

    # refused, measuring nothing: no earlier page, or a page of another kind of run
    assert bench(*quick, "--rows", "1", "--update", "--results-dir", str(tmp_path / "none")).returncode == 2
    full = ["--size", "tiny", "--out-dir", str(out / "work")]
    refused = bench(*full, "--rows", "1", "--update", "--results-dir", str(page))
    assert refused.returncode == 2 and "quick run" in refused.stderr
    assert json.loads((page / "results.json").read_text(encoding="utf-8")) == after
