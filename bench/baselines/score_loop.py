"""Baseline: the log-likelihood of each stdin line under a causal LM, a forward pass per line, as the
Transformers perplexity guide writes it (BOS first, so the first token is scored too).

    cat lines.txt | python score_loop.py MODEL

Prints PERPLEXITY<TAB>LOG_LIKELIHOOD<TAB>TOKENS<TAB>TEXT per line (llmtool score's text output).
"""

import argparse
import math
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

tokenizer = AutoTokenizer.from_pretrained(args.model)
model = AutoModelForCausalLM.from_pretrained(args.model).to(args.device).eval()
for line in sys.stdin:
    text = line.rstrip("\n")
    if not text.strip():
        continue
    ids = [tokenizer.bos_token_id, *tokenizer(text)["input_ids"]]
    inputs = torch.tensor([ids], device=args.device)
    with torch.inference_mode():
        loss = model(input_ids=inputs, labels=inputs).loss.item()
    n = len(ids) - 1
    print(f"{math.exp(loss):.4f}\t{-loss * n:.4f}\t{n}\t{text}")
