"""Job mode (--output-dir): two shards and a merge print what one plain run prints; a worker killed with
SIGKILL mid-chunk loses nothing and redoes nothing; a different job against a directory is refused.

Runs are in-process (tests/clirunner.py) except where a process must die. The slow cases (torchrun,
Ray) are in test_jobs_slow.py.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tiny_models
from conftest import cli_env, run_cli, start_cli

from llmtool.errors import UsageError
from llmtool.jobs import manifest as manifests
from llmtool.jobs.inputs import ChunkReader
from llmtool.jobs.local import device_list, plan
from llmtool.jobs.shard import Shard, from_environment, parse_shard, select
from llmtool.jobs.status import ranges

WORDS = "the cat dog sat on mat a big small red house tree river".split()


def lines(n: int, mask: bool = False, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 9))]
        if mask:
            words.insert(rng.randint(0, len(words)), "[MASK]")
        out.append(" ".join(words))
        if i % 7 == 3:
            out.append("   ")  # blank lines do not count as records, in a job as in a plain run
    return out


def write_lines(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


def ok(args: list[str], **kwargs: Any) -> str:
    proc = run_cli(args, **kwargs)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def sharded(args: list[str], out: Path, chunk_size: int = 7) -> str:
    """Run ``args`` as a job in two shards, then merge."""
    for shard in ("1/2", "0/2"):
        ok([*args, "--output-dir", str(out), "--chunk-size", str(chunk_size), "--shard", shard])
    return ok(["job", "merge", str(out)])


def close(a: Any, b: Any, tolerance: float = 1e-4) -> bool:
    """Equal, floats within ``tolerance``, recursively."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= tolerance
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tolerance) for k in a)
    return bool(a == b)


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> Path:
    return tiny_models.build_bert_classifier(models_dir / "classifier-jobs")


# --------------------------------------------------------------------------- two shards + merge == one run


def test_classify_two_shards_merge_is_the_plain_run_byte_for_byte(classifier: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in.txt", lines(40))
    base = ["classify", "-m", str(classifier), "--input", str(data), "--top-k", "2"]
    for fmt in ("text", "jsonl", "tsv"):
        plain = ok([*base, "--format", fmt])
        merged = sharded([*base, "--format", fmt], tmp_path / f"out-{fmt}")
        assert merged == plain, fmt
    assert len(ok([*base, "--json"]).splitlines()) == 40


def test_fill_mask_over_a_glob_of_files(tiny_bert: Path, tmp_path: Path) -> None:
    texts = lines(45, mask=True)
    write_lines(tmp_path / "a.txt", texts[:20])
    write_lines(tmp_path / "b.txt", texts[20:])
    write_lines(tmp_path / "all.txt", texts)
    base = ["fill-mask", "-m", str(tiny_bert)]
    plain = ok([*base, "--input", str(tmp_path / "all.txt"), "--json"])
    merged = sharded([*base, "--input", str(tmp_path / "[ab].txt"), "--json"], tmp_path / "out", chunk_size=6)
    # every record keeps its global index; the source file and line are each file's own
    strip = [{k: v for k, v in json.loads(line).items() if k not in ("source", "line")} for line in plain.splitlines()]
    got = [{k: v for k, v in json.loads(line).items() if k not in ("source", "line")} for line in merged.splitlines()]
    assert [r["index"] for r in got] == list(range(len(strip)))
    assert close(got, strip)
    text_plain = ok([*base, "--input", str(tmp_path / "all.txt")])
    assert sharded([*base, "--input", str(tmp_path / "[ab].txt")], tmp_path / "out-text", 6) == text_plain


def test_generate_with_a_seed_samples_the_same_text_sharded(tiny_gpt2: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "prompts.txt", lines(24))
    base = ["generate", "-m", str(tiny_gpt2), "--input", str(data), "--sample", "--seed", "7", "-t", "6", "-n", "2"]
    plain = ok([*base, "--json"])
    assert sharded([*base, "--json"], tmp_path / "out", chunk_size=5) == plain
    assert sharded(base, tmp_path / "out-text", chunk_size=5) == ok(base)


def test_embed_and_score_sharded_within_tolerance(tiny_bert: Path, tiny_gpt2: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in.txt", lines(30))
    for base in (["embed", "-m", str(tiny_bert)], ["score", "-m", str(tiny_gpt2)]):
        plain = [json.loads(x) for x in ok([*base, "--input", str(data), "--json"]).splitlines()]
        merged = sharded([*base, "--input", str(data), "--json"], tmp_path / f"out-{base[0]}")
        got = [json.loads(x) for x in merged.splitlines()]
        assert close(got, plain), base[0]
        assert len(got) == 30


def test_next_sentence_pairs_from_tsv_sharded(models_dir: Path, tmp_path: Path) -> None:
    model = tiny_models.build_bert_pretraining(models_dir / "bert-nsp-jobs", steps=5)
    texts = [t for t in lines(30) if t.strip()]
    table = tmp_path / "pairs.tsv"
    table.write_text("first\tsecond\n" + "".join(f"{a}\t{b}\n" for a, b in itertools.pairwise(texts)))
    base = ["next-sentence", "-m", str(model), "--input", str(table)]
    assert sharded(base, tmp_path / "out", chunk_size=4) == ok(base)


# --------------------------------------------------------------------------- resuming, refusing


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.iterdir())}


def test_a_rerun_skips_finished_parts_and_a_different_job_is_refused(classifier: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in.txt", lines(20))
    out = tmp_path / "out"
    base = ["classify", "-m", str(classifier), "--input", str(data), "--json", "--output-dir", str(out)]
    ok([*base, "--chunk-size", "6", "--shard", "0/2"])
    state = json.loads(ok(["job", "status", str(out), "--json"]))
    assert (state["chunks"], state["done"], state["missing"], state["complete"]) == (4, 2, [1, 3], False)
    refused = run_cli(["job", "merge", str(out)])
    assert refused.returncode == 1 and "not complete" in refused.stderr and refused.stdout == ""
    before = snapshot(out)
    ok([*base, "--chunk-size", "6", "-b", "3"])  # the rest (every chunk; 0 and 2 are done); -b only says how
    after = snapshot(out)
    assert all(after[name] == before[name] for name in ("part-000000.jsonl", "part-000002.jsonl"))
    assert json.loads(ok(["job", "status", str(out), "--json"]))["complete"]

    done = snapshot(out)
    refusals = [
        [*base, "--chunk-size", "5"],  # another chunk size
        [*base, "--chunk-size", "6", "--top-k", "2"],  # another setting
        ["score", "-m", str(classifier), "--input", str(data), "--json", "--output-dir", str(out), "--chunk-size", "6"],
    ]
    for args in refusals:
        proc = run_cli(args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and "holds another job" in proc.stderr, proc.stderr
    with data.open("a") as f:
        f.write("one more line\n")
    proc = run_cli([*base, "--chunk-size", "6"])
    assert proc.returncode == 2 and "changed since the job started" in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert snapshot(out) == done  # nothing overwritten


def test_merge_to_parquet(classifier: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    data = write_lines(tmp_path / "in.txt", lines(15))
    base = ["classify", "-m", str(classifier), "--input", str(data), "--chunk-size", "4"]
    ok([*base, "--json", "--output-dir", str(tmp_path / "out")])
    ok(["job", "merge", str(tmp_path / "out"), "--parquet", str(tmp_path / "labels.parquet")])
    rows = pq.read_table(tmp_path / "labels.parquet").to_pylist()
    assert close(rows, [json.loads(x) for x in ok(["job", "merge", str(tmp_path / "out")]).splitlines()])
    ok([*base, "--output-dir", str(tmp_path / "text")])
    proc = run_cli(["job", "merge", str(tmp_path / "text"), "--parquet", str(tmp_path / "t.parquet")])
    assert proc.returncode == 2 and "--format jsonl" in proc.stderr and not (tmp_path / "t.parquet").exists()


def test_bad_input_marks_the_chunk_failed(tiny_bert: Path, tmp_path: Path) -> None:
    texts = [t for t in lines(12, mask=True) if t.strip()]
    texts[5] = "no mask on this line"  # record 5: chunk 1
    data = write_lines(tmp_path / "in.txt", texts)
    out = tmp_path / "out"
    proc = run_cli(
        ["fill-mask", "-m", str(tiny_bert), "--input", str(data), "--output-dir", str(out), "--chunk-size", "4"]
    )
    assert proc.returncode == 2, proc.stderr
    state = json.loads(ok(["job", "status", str(out), "--json"]))
    assert state["done"] == 1 and list(state["failed"]) == ["1"] and "mask" in state["failed"]["1"].lower()
    assert state["temporaries"] == []
    assert "failed: chunk 1" in ok(["job", "status", str(out)])


def test_usage_errors(tiny_bert: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in.txt", lines(3, mask=True))
    base = ["fill-mask", "-m", str(tiny_bert)]
    cases = {
        "goes with --output-dir": [*base, "--input", str(data), "--chunk-size", "3"],
        "not TEXT arguments": [*base, "a [MASK]", "--output-dir", str(tmp_path / "o1")],
        "needs --input": [*base, "--output-dir", str(tmp_path / "o2")],
        "expected I/N": [*base, "--input", str(data), "--output-dir", str(tmp_path / "o3"), "--shard", "2"],
        "no file matches": [*base, "--input", str(tmp_path / "*.none"), "--output-dir", str(tmp_path / "o4")],
        "unknown --executor": [*base, "--input", str(data), "--output-dir", str(tmp_path / "o5"), "--executor", "x"],
    }
    for message, args in cases.items():
        proc = run_cli(args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert run_cli(["job", "status", str(tmp_path)]).returncode == 2


# --------------------------------------------------------------------------- a worker killed mid-chunk


def test_sigkill_mid_chunk_then_rerun_every_index_once(tiny_gpt2: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "prompts.txt", lines(90))
    out = tmp_path / "out"
    base = ["generate", "-m", str(tiny_gpt2), "--input", str(data), "--seed", "1", "--sample", "-t", "12", "--json"]
    job = [*base, "--output-dir", str(out), "--chunk-size", "10", "-b", "2"]
    proc = start_cli(job)
    deadline = time.monotonic() + 120
    mid_chunk = False
    while not mid_chunk and time.monotonic() < deadline and proc.poll() is None:
        mid_chunk = (out / "part-000001.jsonl").exists() and any(p.name.startswith(".part-") for p in out.iterdir())
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert mid_chunk and proc.returncode == -signal.SIGKILL
    finished = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    assert finished and len(finished) < 9, finished
    leftover = [p.name for p in out.iterdir() if p.name.startswith(".part-")]

    ok(job)
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [], leftover
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == finished  # not redone
    merged = ok(["job", "merge", str(out)])
    assert [json.loads(x)["index"] for x in merged.splitlines()] == list(range(90))
    assert merged == ok(base)


# --------------------------------------------------------------------------- the pieces


def test_shard_from_flag_and_launchers() -> None:
    assert parse_shard("1/4") == Shard(1, 4, "--shard")
    for bad in ("4/4", "x/2", "1", "-1/2", "0/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    assert from_environment({}) == Shard()
    assert from_environment({"RANK": "1", "WORLD_SIZE": "2"}).index == 1
    slurm = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "2"}
    assert (from_environment(slurm).index, from_environment(slurm).count) == (3, 4)
    k8s = {"JOB_COMPLETION_INDEX": "2", "JOB_COMPLETIONS": "3"}
    assert (from_environment(k8s).index, from_environment(k8s).count) == (2, 3)
    with pytest.raises(UsageError, match="JOB_COMPLETIONS"):
        from_environment({"JOB_COMPLETION_INDEX": "2"})
    assert select("0/3", {"RANK": "1", "WORLD_SIZE": "2"}) == Shard(0, 3, "--shard")  # the flag wins
    assert [c for c in range(10) if Shard(1, 3).owns(c)] == [1, 4, 7]
    assert ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


def test_chunk_reader_reads_forward_and_reopens(tmp_path: Path) -> None:
    from llmtool.io.streams import read_records

    write_lines(tmp_path / "a.txt", ["a0", "", "a1", "a2"])
    write_lines(tmp_path / "b.txt", ["b0", "b1", "b2", "b3"])
    reader = ChunkReader([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")], read_records_of(read_records), 3)
    assert [r.text for r in reader.chunk(1)] == ["b0", "b1", "b2"]
    assert [(r.index, r.line) for r in reader.chunk(0)] == [(0, 1), (1, 3), (2, 4)]  # reopened
    assert [r.text for r in reader.chunk(2)] == ["b3"] and reader.chunk(3) == []
    assert ChunkReader([str(tmp_path / "b.txt")], read_records_of(read_records), 3).count() == 4


def test_chunks_cover_the_input_once_in_any_order(tmp_path: Path) -> None:
    import random

    from llmtool.io.streams import read_records

    texts = [f"r{i}" if i % 5 else "" for i in range(60)]  # 48 records, blank lines between
    write_lines(tmp_path / "a.txt", texts[:25])
    write_lines(tmp_path / "b.txt", texts[25:])
    paths = [str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]
    want = [t for t in texts if t]
    for size in (1, 5, 7, 48, 100):
        for counts in (None, [20, 28]):  # 28: b.txt's records; known counts skip files without the chunk
            opened: list[str] = []

            def read(path: str, opened: list[str] = opened) -> Any:
                opened.append(Path(path).name)
                return read_records(None, path)

            reader = ChunkReader(paths, read, size, counts)
            chunks = -(-len(want) // size)
            order = list(range(chunks + 1))
            random.Random(size).shuffle(order)
            got = {c: [r.text for r in reader.chunk(c)] for c in order}
            assert [t for c in range(chunks + 1) for t in got[c]] == want and got[chunks] == []
            assert reader.count() == 48 and reader.file_counts == [20, 28]
            if counts is not None and size == 5:  # chunk 5 is records 25-29: all in b.txt
                opened.clear()
                assert [r.text for r in reader.chunk(5)] == want[25:30] and opened == ["b.txt"]
    assert ChunkReader(paths, read_records_of(read_records), 3, [20, 28]).count() == 48


def test_the_shard_comes_from_the_launchers_variables(tiny_bert: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in.txt", [t for t in lines(12, mask=True) if t.strip()])
    out = tmp_path / "out"
    args = ["fill-mask", "-m", str(tiny_bert), "--input", str(data), "--output-dir", str(out), "--chunk-size", "3"]
    for env in ({"RANK": "1", "WORLD_SIZE": "2"}, {"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": "2"}):
        proc = run_cli(args, env=cli_env(**env))
        assert proc.returncode == 0, proc.stderr
        assert f"shard {env.get('RANK', '0')}/2" in proc.stderr
    assert sorted(p.name for p in out.glob("part-*")) == [f"part-00000{c}.txt" for c in range(4)]


def test_workers_two_processes_on_this_machine(classifier: Path, tmp_path: Path) -> None:
    data = write_lines(tmp_path / "in.txt", lines(30))
    base = ["classify", "-m", str(classifier), "--input", str(data), "--json"]
    job = [*base, "--output-dir", str(tmp_path / "out"), "--chunk-size", "4", "--workers", "2"]
    proc = run_cli(job, subprocess=True)  # the workers write to the real stderr
    assert proc.returncode == 0, proc.stderr
    assert "shard 0/2" in proc.stderr and "shard 1/2" in proc.stderr  # the two worker processes
    assert ok(["job", "merge", str(tmp_path / "out")]) == ok(base)


def test_a_device_list_starts_one_worker_per_device() -> None:
    planned = plan(Shard(1, 3), 1, "cuda:0,2", ["embed", "--device", "cuda:0,2"], {"PATH": "/bin"})
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in planned] == ["0", "2"]
    assert [args[-6:] for args, _ in planned] == [
        ["--shard", "1/6", "--workers", "1", "--device", "cuda"],  # worker 1 of 3 machines, device 0
        ["--shard", "4/6", "--workers", "1", "--device", "cuda"],
    ]
    assert {c for c in range(30) if Shard(1, 3).owns(c)} == {c for c in range(30) if c % 6 in (1, 4)}
    cpu = plan(Shard(), 2, "cpu", ["embed"], {})
    assert [args[-4:] for args, _ in cpu] == [
        ["--shard", "0/2", "--workers", "1"],
        ["--shard", "1/2", "--workers", "1"],
    ]
    assert all(env["OMP_NUM_THREADS"].isdigit() for _, env in cpu)
    assert device_list("cuda:1") is None and device_list("cuda:0,1") == ["0", "1"]
    with pytest.raises(UsageError, match="one worker per device"):
        plan(Shard(), 3, "cuda:0,1", [], {})


def test_a_device_list_without_a_job_is_refused(tiny_bert: Path) -> None:
    proc = run_cli(["fill-mask", "-m", str(tiny_bert), "a [MASK] b", "--device", "cuda:0,1"])
    assert proc.returncode == 2 and "goes with --output-dir" in proc.stderr, proc.stderr


def read_records_of(read_records: Any) -> Any:
    return lambda path: read_records(None, path)


def test_workers_starting_at_once_agree_on_the_manifest(tmp_path: Path) -> None:
    job = manifests.build("fill-mask", {"top_k": 5}, {"name": "m"}, [], 10, "jsonl", "")
    created: list[bool] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            created.append(manifests.ensure(tmp_path / "job", job))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(created) == [False] * 15 + [True]
    other = manifests.build("fill-mask", {"top_k": 6}, {"name": "m"}, [], 10, "jsonl", "")
    with pytest.raises(UsageError, match=r"settings.top_k was 5, now 6"):
        manifests.ensure(tmp_path / "job", other)
    assert [p.name for p in (tmp_path / "job").iterdir()] == ["manifest.json"]


def test_importing_the_cli_never_imports_ray_and_a_missing_ray_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; import llmtool.cli, llmtool.jobs.run, llmtool.cli.job; "
        "assert 'ray' not in sys.modules, 'ray imported'; "
        "sys.modules['ray'] = None; "  # as if Ray were not installed
        "sys.exit(llmtool.cli.main(sys.argv[1:]))"
    )
    data = write_lines(tmp_path / "in.txt", ["a [MASK] b"])
    args = ["fill-mask", "--input", str(data), "--output-dir", str(tmp_path / "o"), "--executor", "ray"]
    env = cli_env()
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", code, *args, "-m", "nonexistent-model-folder"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == ["llmtool: error: --executor ray needs Ray: pip install 'llmtool[ray]'"]
    assert not (tmp_path / "o").exists()


def test_tag_two_shards_merge_is_the_plain_run(models_dir: Path, tmp_path: Path) -> None:
    model = tiny_models.build_token_classifier(models_dir / "tagger-jobs", tiny_models.build_bert)
    data = write_lines(tmp_path / "in.txt", lines(30))
    base = ["tag", "-m", str(model), "--input", str(data), "--aggregation", "first"]
    # labels and offsets byte for byte; scores within 1e-4 (a window's batch-mates change the padding)
    assert sharded(base, tmp_path / "out-text", chunk_size=4) == ok(base)
    plain = [json.loads(x) for x in ok([*base, "--json"]).splitlines()]
    got = [json.loads(x) for x in sharded([*base, "--json"], tmp_path / "out-jsonl", chunk_size=4).splitlines()]
    assert len(got) == 30 and close(got, plain)
    refused = run_cli([*base, "--format", "conll", "--output-dir", str(tmp_path / "out-conll")])
    assert refused.returncode == 2 and "--format conll does not go with --output-dir" in refused.stderr
    assert not (tmp_path / "out-conll").exists()


def test_translate_and_summarize_two_shards_merge_is_the_plain_run(models_dir: Path, tmp_path: Path) -> None:
    marian = tiny_models.build_marian(models_dir / "marian-jobs")
    t5 = tiny_models.build_t5(models_dir / "t5-jobs")
    data = write_lines(tmp_path / "in.txt", lines(20))
    for base in (
        ["translate", "-m", str(marian), "--input", str(data), "-t", "6", "--beams", "2"],
        ["summarize", "-m", str(t5), "--input", str(data), "-t", "6"],
    ):
        assert sharded([*base, "--json"], tmp_path / f"out-{base[0]}", chunk_size=3) == ok([*base, "--json"]), base[0]
