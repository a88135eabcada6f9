"""Causal LMs: LoRA vs full fine-tuning (perplexity, parameters, time per step, peak memory, output size), and
prompt/response training vs plain clm on the same question/answer rows (greedy answers to held-out questions).

    python -m bench.lora_clm --out bench/lora-clm-results.json

No downloads: the base model is a GPT-2 (``pretrain --objective clm``, the ``mini`` preset) pre-trained
here on the first 70% of tinyshakespeare (shared data); fine-tuning continues on the next 20%, and
perplexity is measured on the last 10%. The question/answer rows are ``llmtool corpus facts``'s probes:
each country's ``train`` phrasings for training, its held-out phrasing to ask.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.lora import folder_bytes, measured


def llmtool(args: list[str], stdin: str | None = None) -> str:
    return measured(args, stdin)[0]


def folder_mib(folder: Path) -> float:
    return round(folder_bytes(folder) / 2**20, 2)


def split_text(source: Path, tmp: Path) -> tuple[Path, Path, Path]:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    a, b = int(len(lines) * 0.7), int(len(lines) * 0.9)
    parts = []
    for name, chunk in (("pre", lines[:a]), ("ft", lines[a:b]), ("heldout", lines[b:])):
        path = tmp / f"{name}.txt"
        path.write_text("\n".join(chunk) + "\n", encoding="utf-8")
        parts.append(path)
    return parts[0], parts[1], parts[2]


def answers_right(model: Path, questions: list[dict[str, str]]) -> dict[str, float]:
    """Greedy answers (8 new tokens at most): the share that start with the right answer, and the share that
    are exactly the answer and then end (the model stops by itself, ``finish_reason`` ``eos``)."""
    prompts = "\n".join(q["prompt"] for q in questions)
    out = llmtool(["generate", "-m", str(model), "--greedy", "--max-new-tokens", "8", "--no-prompt", "--json"], prompts)
    got = [json.loads(line)["generations"][0] for line in out.splitlines()]
    pairs = list(zip(got, questions, strict=True))
    right = sum(g["text"].strip().startswith(q["answer"]) for g, q in pairs)
    stops = sum(g["text"].strip() == q["answer"] + "." and g["finish_reason"] == "eos" for g, q in pairs)
    return {"accuracy": round(right / len(questions), 3), "answer_then_stop": round(stops / len(questions), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pretrain-steps", default="600")
    parser.add_argument("--finetune-steps", default="150")
    parser.add_argument("--qa-epochs", default="2,5,15", help="epochs of the question/answer runs (a list)")
    parser.add_argument("--parts", default="lora,qa", help="lora (LoRA vs full), qa (prompt/response vs plain)")
    parser.add_argument("--dir", default=None, help="work folder, kept (default: a temporary one); reuses its base")
    parser.add_argument("--out", default="bench/lora-clm-results.json")
    a = parser.parse_args()
    shared = Path(os.environ.get("LLMTOOL_SHARED_DATA", "../shared/data"))
    out_path = Path(a.out)
    report: dict[str, Any] = json.loads(out_path.read_text()) if out_path.is_file() else {}
    parts = a.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(a.dir or tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        pre, ft, heldout = split_text(shared / "lm" / "tinyshakespeare.txt", tmp)
        base = tmp / "base"
        if not (base / "config.json").is_file():
            llmtool(["pretrain", str(pre), "--objective", "clm", "--size", "mini", "--block-size", "64",
                     "--max-steps", a.pretrain_steps, "--output", str(base), "-q"])  # fmt: skip
        report["base"] = {"preset": "mini", "pretrain_steps": int(a.pretrain_steps), "mib": folder_mib(base)}
        if "lora" in parts:
            report["lora_vs_full"] = lora_vs_full(a, tmp, base, ft, heldout)
        if "qa" in parts:
            report["qa"] = question_answer(a, tmp, base)
    out_path.write_text(json.dumps(report, indent=2) + "\n")


def lora_vs_full(a: argparse.Namespace, tmp: Path, base: Path, ft: Path, heldout: Path) -> list[dict[str, Any]]:
    common = ["finetune", str(ft), "--task", "clm", "--model", str(base), "--valid", str(heldout), "--block-size",
              "64", "--max-steps", a.finetune_steps, "--batch-size", "16", "--seed", "0"]  # fmt: skip
    runs = []
    for kind, extra in (("lora", ["--lora", "--lr", "2e-3"]), ("full", ["--lr", "5e-4"])):
        params = json.loads(llmtool([*common, *extra, "--dry-run", "--json"]))["parameters"]
        out = tmp / kind
        out_text, peak = measured([*common, *extra, "--output", str(out), "--json", "--eval-on-start", "-q"])
        metrics = json.loads(out_text)
        runs.append({
            "kind": kind, "lr": extra[-1], **{f"{k}_parameters": v for k, v in params.items()},
            "peak_rss_mib": round(peak),
            "seconds_per_step": round(metrics["train"]["seconds"] / metrics["train"]["steps"], 3),
            "perplexity_before": round(metrics["history"][0]["perplexity"], 2),
            "perplexity_after": round(metrics["valid"]["perplexity"], 2),
            "output_mib": folder_mib(out),
        })  # fmt: skip
        print(json.dumps(runs[-1]), file=sys.stderr)
    return runs


def question_answer(a: argparse.Namespace, tmp: Path, base: Path) -> dict[str, Any]:
    """The same question/answer rows as prompt/response pairs (loss on the answers) and as plain lines."""
    llmtool(["corpus", "facts", "--output", str(tmp / "facts.txt"), "--probes", str(tmp / "probes.jsonl"), "-q"])
    probes = [json.loads(line) for line in (tmp / "probes.jsonl").read_text().splitlines()]
    train = [p for p in probes if p["split"] == "train"]
    asked = [p for p in probes if p["split"] != "train"]
    qa = tmp / "qa.jsonl"
    qa.write_text("".join(json.dumps({"prompt": p["prompt"], "answer": " " + p["answer"] + "."}) + "\n"
                          for p in train))  # fmt: skip
    plain = tmp / "plain.txt"
    plain.write_text("".join(f"{p['prompt']} {p['answer']}.\n" for p in train))
    results: dict[str, Any] = {}
    for epochs in a.qa_epochs.split(","):
        qa_common = ["--task", "clm", "--model", str(base), "--epochs", epochs, "--lr", "1e-3",
                     "--valid-split", "0", "--seed", "0", "-q", "--overwrite"]  # fmt: skip
        for kind, args in (
            ("prompt_response", [str(qa), "--prompt-column", "prompt", "--response-column", "answer"]),
            ("plain_clm", [str(plain), "--line-by-line"]),
        ):
            out = tmp / f"{kind}-{epochs}"
            llmtool(["finetune", *args, *qa_common, "--output", str(out)])
            results.setdefault(f"{epochs}_epochs", {})[kind] = {
                "heldout": answers_right(out, asked),
                "train": answers_right(out, train),
            }
            print(epochs, kind, json.dumps(results[f"{epochs}_epochs"][kind]), file=sys.stderr)
    return {"train_rows": len(train), "heldout_questions": len(asked), "lr": 1e-3, **results}


if __name__ == "__main__":
    main()
