"""Does ``llmtool pretrain --objective seq2seq`` learn to translate on its defaults (issue 24)?

Tatoeba French -> English (``$LLMTOOL_SHARED_DATA/translation/tatoeba_fra_eng/fra-eng.txt``, 20,000
pairs, English TAB French). The pairs are shuffled (seeded) and 500 held out for the test, together
with every other pair that shares their English or their French sentence, so that no test sentence,
source or reference, was seen in training. Then, on the same training file:

- llmtool: ``pretrain train.txt --objective seq2seq --source-column 2 --target-column 1 --output DIR``,
  with NO training flags (the plan chooses steps, batch, learning rate, warm-up);
- baseline: ``bench/baselines/seq2seq_trainer.py``, a plain ``Seq2SeqTrainer`` script, given the same
  model shape (the --size preset's), the same tokenizer (llmtool's), the same batch and the same number of
  steps as llmtool's plan; everything else is Transformers' default.

The baselines start as soon as llmtool's run has learned its tokenizer and train beside it (the runs
share the machine: their seconds are wall time under that load). Both models translate the held-out
French with the same greedy ``model.generate`` call, and sacrebleu
scores them (corpus BLEU and chrF against the one English reference), beside the copy baseline (the
French source as its own "translation"). Writes ``bench/seq2seq-results.json`` (or ``--out``).

Usage: ``python -m bench.seq2seq_learns [--test 500] [--seed 0] [--dir DIR] [--baseline-lr LR ...]
[-- EXTRA PRETRAIN FLAGS]``. Seconds are wall time on whatever else the machine runs (say so when quoting).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path("translation") / "tatoeba_fra_eng" / "fra-eng.txt"
ROOT = Path(__file__).resolve().parent.parent


def split_pairs(path: Path, test: int, seed: int) -> tuple[list[list[str]], list[list[str]]]:
    """Training and test pairs ([english, french]); no test sentence on either side occurs in training."""
    pairs = [line.rstrip("\n").split("\t")[:2] for line in path.read_text(encoding="utf-8").splitlines() if line]
    random.Random(seed).shuffle(pairs)
    held, held_en, held_fr = [], set(), set()
    for en, fr in pairs:
        if len(held) == test:
            break
        if en not in held_en and fr not in held_fr:
            held.append([en, fr])
            held_en.add(en)
            held_fr.add(fr)
    train = [p for p in pairs if p[0] not in held_en and p[1] not in held_fr]
    return train, held


def translate(folder: str, sources: list[str], max_new_tokens: int = 64) -> list[str]:
    """Greedy translations with ``model.generate``: the same call for every model."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    out: list[str] = []
    with torch.inference_mode():
        for i in range(0, len(sources), 64):
            batch = tokenizer(sources[i : i + 64], return_tensors="pt", padding=True, truncation=True, max_length=128)
            ids = model.generate(**batch, num_beams=1, do_sample=False, max_new_tokens=max_new_tokens)
            out += tokenizer.batch_decode(ids, skip_special_tokens=True)
    return [text.strip() for text in out]


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    try:
        import sacrebleu
    except ImportError:
        sys.exit("BLEU needs sacrebleu: pip install 'llmtool[translate]'")

    return {
        "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
    }


def same_tokenizer(a: Path, b: Path) -> bool:
    """Whether two tokenizer.json files tokenize alike: all but the truncation and padding state a save keeps."""
    first, second = (json.loads((x / "tokenizer.json").read_text(encoding="utf-8")) for x in (a, b))
    kept = set(first) - {"truncation", "padding"}
    return first.keys() == second.keys() and all(first[k] == second[k] for k in kept)


def save(result: dict[str, Any], path: str) -> None:
    """The results so far (each run is written as soon as it is scored)."""
    Path(path).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def start(cmd: list[str], log: Path) -> subprocess.Popen[str]:
    """``cmd`` in the background, its stderr to ``log`` (a pipe nobody reads would fill and stop it)."""
    with log.open("w", encoding="utf-8") as err:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)


def finish(name: str, job: subprocess.Popen[str], log: Path, started: float = 0.0) -> float:
    """Wait for ``job``; its wall seconds since ``started`` (the runs share the machine), or exit if it failed."""
    job.wait()
    if job.returncode:
        stderr = log.read_text(encoding="utf-8", errors="replace")
        sys.exit(f"{name} failed ({job.returncode}): {' '.join(map(str, job.args))}\n{stderr[-3000:]}")
    return round(time.monotonic() - started, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", type=int, default=500, help="held-out pairs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the shuffle that picks the held-out pairs")
    parser.add_argument("--dir", help="keep the models and files here (default: a temporary folder)")
    parser.add_argument("--baseline-lr", type=float, action="append", help="baseline learning rates (default: 5e-5)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "seq2seq-results.json"))
    parser.add_argument("extra", nargs="*", help="extra pretrain flags (after --)")
    args = parser.parse_args(argv)
    shared = os.environ.get("LLMTOOL_SHARED_DATA")
    data = Path(shared) / DATA if shared else None
    if data is None or not data.is_file():
        sys.exit(f"set LLMTOOL_SHARED_DATA to the folder that holds {DATA}")
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="seq2seq-learns-"))
    work.mkdir(parents=True, exist_ok=True)
    train, test = split_pairs(data, args.test, args.seed)
    (work / "train.txt").write_text("".join(f"{en}\t{fr}\n" for en, fr in train), encoding="utf-8")
    sources, references = [fr for _, fr in test], [en for en, _ in test]
    result: dict[str, Any] = {
        "data": str(DATA),
        "direction": "fra->eng",
        "train_pairs": len(train),
        "test_pairs": len(test),
        "seed": args.seed,
        "decoding": "greedy, model.generate(num_beams=1, do_sample=False, max_new_tokens=64)",
        "copy": scores(sources, references),
        "runs": [],
    }
    ours = str(work / "llmtool")
    pretrain = [sys.executable, "-m", "llmtool", "pretrain", str(work / "train.txt"), "--objective", "seq2seq",
                "--source-column", "2", "--target-column", "1", *args.extra]  # fmt: skip
    report = json.loads(subprocess.run([*pretrain, "--dry-run", "--json"], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    plan = report["plan"]
    started = time.monotonic()
    jobs = {"llmtool": start([*pretrain, "--output", ours, "--overwrite"], work / "llmtool.log")}
    # The baselines start as soon as llmtool's run has learned its tokenizer, and train beside it.
    tokenizer = Path(ours) / ".llmtool-cache" / "tokenizer"
    while not (tokenizer / "tokenizer.json").is_file() or not (tokenizer / "tokenizer_config.json").is_file():
        if jobs["llmtool"].poll() is not None:
            finish("llmtool", jobs["llmtool"], work / "llmtool.log")
        time.sleep(1)
    time.sleep(1)
    shutil.copytree(tokenizer, work / "tokenizer", dirs_exist_ok=True)
    from llmtool.settings import SIZES

    size = SIZES[report["size"]]
    lrs = args.baseline_lr or [5e-5]
    for lr in lrs:
        jobs[f"baseline-{lr:g}"] = start([
            sys.executable, str(ROOT / "bench" / "baselines" / "seq2seq_trainer.py"), str(work / "train.txt"),
            "--tokenizer", str(work / "tokenizer"), "--output", str(work / f"baseline-{lr:g}"),
            "--max-steps", str(plan["steps"]), "--batch-size", str(plan["batch_size"]), "--lr", str(lr),
            "--layers", str(size.layers), "--hidden", str(size.hidden), "--heads", str(size.heads),
            "--source-field", "2", "--target-field", "1",
        ], work / f"baseline-{lr:g}.log")  # fmt: skip
    seconds: dict[str, float] = {}
    while len(seconds) < len(jobs):  # each run's seconds end when it ends
        for name, job in jobs.items():
            if name not in seconds and job.poll() is not None:
                seconds[name] = finish(name, job, work / f"{name}.log", started)
        time.sleep(1)
    record = json.loads((Path(ours) / "llmtool_settings.json").read_text(encoding="utf-8"))
    result["same_tokenizer"] = same_tokenizer(Path(ours), work / "tokenizer")
    result["runs"].append(
        {"kind": "llmtool", "flags": args.extra, "steps": record["plan"]["steps"], "batch": plan["batch_size"],
         "lr": plan["lr"], "warmup_ratio": plan["warmup_ratio"], "parameters": record["parameters"],
         "size": record["size"], "seconds": seconds["llmtool"], **scores(translate(ours, sources), references)}
    )  # fmt: skip
    for lr in lrs:
        folder = str(work / f"baseline-{lr:g}")
        result["runs"].append(
            {"kind": "seq2seq_trainer", "steps": plan["steps"], "batch": plan["batch_size"], "lr": lr,
             "seconds": seconds[f"baseline-{lr:g}"], **scores(translate(folder, sources), references)}
        )  # fmt: skip
    save(result, args.out)
    result["examples"] = [
        {"source": s, "reference": r, "llmtool": h}
        for s, r, h in zip(sources[:5], references[:5], translate(ours, sources[:5]), strict=True)
    ]
    save(result, args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "examples"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
