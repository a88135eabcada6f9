"""Training defaults: what ``finetune`` and ``pretrain`` choose when a flag is left open, in one table.

Each value is on its own line with what it means and why (README "Defaults chosen for the data",
"Defaults that learn"). :mod:`llmtool.training.plan` turns them into a run's plan; the per-flag
defaults users set (``--seed``, ``--logging-steps``, ...) are the settings dataclasses'
(:mod:`llmtool.settings`). Nothing here imports anything: ``--help`` may read it.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- the plan (both commands)

EVALS_PER_RUN = 10  # the default cadence evaluates and checkpoints about this many times in a run, at most
MIN_EVAL_STEPS = 100  # ... and never more often than every this many steps (unless an epoch is longer)
SHORT_PLAN_STEPS = 300  # fewer optimizer steps than this rarely teach a model from scratch anything
FEW_EXAMPLES = 32  # fewer training examples than this (packed blocks) are easily memorised by position
FEW_VALID = 20  # fewer validation examples than this give a noisy measure to pick the best checkpoint by

# --------------------------------------------------------------------------- the run (trainer)

SAVE_SECONDS = 600  # a checkpoint (without evaluation) when the last one is this old, between the step cadence's
LOWER_IS_BETTER = ("loss", "perplexity")  # validation metrics where less is better (the rest: more is better)

# --------------------------------------------------------------------------- finetune
# Measured on SST-2 with all-MiniLM-L6-v2 (README "Defaults chosen for the data").

# The peak learning rate by model size: the first row whose parameter count the model stays under.
# MiniLM (23M) measured best at 1e-4 and BERT-base at 5e-5; the models `pretrain` makes are 10-100x
# smaller and need the higher rates they were pre-trained at (--size tiny 2e-3, mini 1e-3: settings.SIZES).
FINETUNE_LR = (
    (2_000_000, 1e-3),  # pretrain --size tiny and alike
    (15_000_000, 5e-4),  # --size mini / small, GPT-2 mini
    (60_000_000, 1e-4),  # MiniLM, DistilBERT-sized
    (300_000_000, 5e-5),  # BERT-base, GPT-2
    (None, 2e-5),  # BERT-large and up
)
PRETRAINED_LR_SHARE = 0.5  # a model llmtool pre-trained: this share of the peak rate it was pre-trained at
# (its llmtool_settings.json says; 2e-3 -> 1e-3 took a tiny GPT-2 from loss 2.23 to 0.02 on 120 QA rows)
PRETRAINED_BATCH = 32  # ... and the batch it was pre-trained with, up to this (with 1e-3 on the 120 QA rows, 300 steps:
# batch 8 answered 52%, 16 74%, 32 90%; its steps are cheap, and a step of 8 rows teaches little)
PRETRAINED_MIN_STEPS = 600  # ... and at least this many steps, not MIN_STEPS (its steps are cheap; on the 120 QA
# rows, batch 32, no split: 150 steps answered 26%, 300 90%, 600 92%)
SMALL_DATA = 2_000  # examples: below, batches of SMALL_DATA_BATCH (more updates per epoch), else BATCH
SMALL_DATA_BATCH = 8  # examples a step on small data ...
FINETUNE_BATCH = 16  # ... and on the rest
MIN_STEPS = 150  # small data gets more epochs, up to this many optimizer steps in all ...
EPOCHS = 3.0  # ... than the usual 3 passes
WARMUP = 0.1  # BERT's recipe: a tenth of the steps
MAX_BLOCK = 1024  # clm/mlm: the default block size is the model's limit, up to this
EMBED_BATCH = 32  # embed: pairs a step; each anchor's negatives are the other positives in its batch, so more is harder
# embed's rate is the size rule's (FINETUNE_LR): MiniLM on 360 Tatoeba fr-en pairs, 50 steps, held-out fr->en
# top-1 among 300: 2e-5 0.19, 5e-5 0.31, 1e-4 0.38 (base model 0.05; tests/test_finetune_embed.py)
EMBED_EPOCHS = 1.0  # embed: one pass (sentence-transformers' own default); the step floor below still applies ...
EMBED_MIN_STEPS = 50  # ... at least this many optimizer steps on small data
# LoRA's rate is the size rule's times llmtool.settings.LORA_LR_FACTOR (the --help text states it there).

# --------------------------------------------------------------------------- pretrain
# New weights; measured on the corpora of bench/learns.py (README "Measured").

SENTENCE_ENDS: tuple[str, ...] = (".", "!", "?", '"', "'", ")", "]")  # a line that ends so ends a sentence ...
# ... and so do the full-width ends of Chinese and Japanese text (the ideographic full stop, marks, quotes)
SENTENCE_ENDS += ("\u3002", "\uff01", "\uff1f", "\u201d", "\u300d", "\u300f", "\uff09")
LINES_SAMPLE = 20_000  # lines looked at to choose the layout
SHORT_LINES_SHARE = 0.9  # a corpus of lines: at least this share of lines short enough for one example ...
SENTENCE_LINES_SHARE = 0.8  # ... and at least this share ending a sentence (verse and wrapped prose do not)
AUTO_EPOCHS = 40  # the step budget: this many passes over the examples (facts need many to be memorised) ...
AUTO_MIN_STEPS = {"mlm": 3000, "clm": 1500}  # ... at least this many steps from scratch ...
AUTO_MAX_STEPS = {"tiny": 10_000, "mini": 10_000, "small": 20_000, "base": 50_000}  # ... at most this many
BATCH = 32  # examples per step, fewer when the corpus has fewer (mlm lines: a multiple, see batch_size)
MAX_LINES_A_BLOCK = 8  # mlm lines: a step holds at most BATCH x this many lines
MASK_LINES = 0.4  # mlm: the share masked in a line of its own (15% of a 7-token line is one token) ...
MASK_BLOCKS = 0.15  # ... and in longer examples (BERT's)
BLOCK = 128  # tokens per example when packing running text ...
SMALL_BLOCK = 32  # ... and when mlm packs short lines
FEW_BLOCKS = 32  # mlm packs short lines only when that makes at least this many blocks (else: lines) ...
SHORT_DOCUMENT_LINES = 20  # ... and only lines grouped into documents (blank lines) of at most this many on average
PRETRAIN_WARMUP = 0.05  # new weights need a warm-up
# The peak learning rate is the --size preset's (llmtool.settings.SIZES: it goes with the model's shape).
POSITIONS = {"mlm": 512, "clm": 1024}  # the context of every preset: BERT's 512 tokens, GPT-2's 1024

# --------------------------------------------------------------------------- seq2seq (finetune and pretrain)
# Measured on Tatoeba fra->eng, held-out pairs (bench/seq2seq_learns.py, docs/training.md).

SEQ2SEQ_MAX_LENGTH = 256  # finetune: tokens per source and per target without --max-length (or the model's limit)
SEQ2SEQ_BLOCK = 128  # pretrain: tokens per source and per target when --block-size is not given
SEQ2SEQ_POSITIONS = 512  # pretrain: the context of every preset (Marian's sinusoidal table: no weights)
SEQ2SEQ_EPOCHS = 5  # pretrain: passes over the pairs when the flags leave the length open ...
SEQ2SEQ_MIN_STEPS = 1500  # ... at least this many steps, at most AUTO_MAX_STEPS[size]
