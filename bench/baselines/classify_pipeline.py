"""Baseline: text classification over stdin lines with a Transformers pipeline, the way the docs show it.

    cat lines.txt | python classify_pipeline.py MODEL --batch-size 8

Prints LABEL<TAB>SCORE per line (llmtool classify's text output).
"""

import argparse
import sys

from transformers import pipeline

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--batch-size", type=int, default=8)
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

classify = pipeline("text-classification", model=args.model, device=args.device)
lines = [line.rstrip("\n") for line in sys.stdin if line.strip()]
for result in classify(lines, batch_size=args.batch_size, truncation=True):
    print(f"{result['label']}\t{result['score']:.4f}")
