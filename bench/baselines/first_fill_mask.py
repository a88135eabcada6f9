"""Baseline: the shortest script that fills one mask with a pipeline (time to first result)."""

import sys

import torch
from transformers import pipeline

device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32  # as llmtool on a GPU

fill = pipeline("fill-mask", model=sys.argv[1], device=device, dtype=dtype)
print(fill(sys.argv[2])[0]["sequence"])
