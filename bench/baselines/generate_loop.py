"""Baseline: greedy generation for each stdin line with ``model.generate``, one prompt at a time.

    cat prompts.txt | python generate_loop.py MODEL --max-new-tokens 64

Prints prompt + continuation for each line (llmtool generate's text output).
"""

import argparse
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

parser = argparse.ArgumentParser()
parser.add_argument("model")
parser.add_argument("--max-new-tokens", type=int, default=64)
parser.add_argument("--device", default="cpu")
args = parser.parse_args()

# On a GPU, half precision, as llmtool's --dtype auto picks there.
dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
tokenizer = AutoTokenizer.from_pretrained(args.model)
model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device)
model.eval()

for line in sys.stdin:
    prompt = line.rstrip("\n")
    inputs = tokenizer(prompt, return_tensors="pt").to(args.device)
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=args.max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    print(tokenizer.decode(output[0], skip_special_tokens=True), flush=True)
