"""Baseline: the shortest script that generates 20 greedy tokens with a pipeline (time to first result)."""

import sys

import torch
from transformers import pipeline

device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32  # as llmtool on a GPU

generator = pipeline("text-generation", model=sys.argv[1], device=device, dtype=dtype)
print(generator(sys.argv[2], max_new_tokens=20, do_sample=False)[0]["generated_text"])
