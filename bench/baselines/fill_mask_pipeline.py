"""Baseline: fill-mask over stdin lines with a Transformers pipeline, the way the docs show it.

    cat lines.txt | python fill_mask_pipeline.py MODEL --batch-size 16     # the batched pipeline
    cat lines.txt | python fill_mask_pipeline.py MODEL --one-at-a-time     # a call per line

Prints each line with its mask replaced by the top prediction (llmtool fill-mask's text output).
"""

import argparse
import sys

import torch
from transformers import pipeline

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--batch-size", type=int, default=1)
parser.add_argument("--one-at-a-time", action="store_true")
parser.add_argument("--top-k", type=int, default=5)
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

# On a GPU, half precision, as llmtool's --dtype auto picks there.
dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
fill = pipeline("fill-mask", model=args.model, device=args.device, dtype=dtype)
mask = fill.tokenizer.mask_token


def filled(line: str, predictions: list[dict]) -> str:
    return line.replace(mask, predictions[0]["token_str"].strip(), 1)


if args.one_at_a_time:
    for line in sys.stdin:
        line = line.rstrip("\n")
        print(filled(line, fill(line, top_k=args.top_k)), flush=True)
else:
    lines = [line.rstrip("\n") for line in sys.stdin]
    for line, predictions in zip(lines, fill(lines, batch_size=args.batch_size, top_k=args.top_k), strict=True):
        print(filled(line, predictions))
