"""The training commands' settings (finetune, pretrain) and the model-size presets."""

from __future__ import annotations

from dataclasses import dataclass

from llmtool.errors import UsageError
from llmtool.settings.base import (
    OBJECTIVES,
    PRECISIONS,
    TASKS,
    at_least,
    finite,
    setting,
)

# --------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    """How to train: every knob shared by the training commands, with its default and meaning."""

    epochs: float | None = setting(
        None, "Passes over the training data (default: chosen from the data, see docs/training.md)."
    )
    max_steps: int | None = setting(None, "Optimizer steps; overrides --epochs.")
    lr: float | None = setting(None, "Peak learning rate (AdamW, linear decay) (default: chosen for the model).")
    batch_size: int | None = setting(None, "Examples per device per step (default: chosen from the data).")
    grad_accum: int = setting(1, "Batches per optimizer step.")
    warmup_ratio: float | None = setting(None, "Share of steps warming the rate up (default: chosen from the steps).")
    weight_decay: float = setting(0.0, "AdamW weight decay (biases and LayerNorm weights exempt).")
    seed: int = setting(42, "Seed for new weights, split, order, dropout, masking.")
    precision: str = setting("auto", "auto|fp32|bf16|fp16; auto: bf16 on GPUs that have it, else fp16; fp32 on CPU.")
    gradient_checkpointing: bool = setting(False, "Less memory, slower: recompute activations.")
    save_steps: int | None = setting(
        None,
        "Evaluate and checkpoint every N steps (default: every epoch, or every few epochs when epochs are "
        "short; see docs/training.md).",
    )
    save_total_limit: int = setting(2, "Checkpoints kept on disk (the best one is always kept too).")
    patience: int | None = setting(None, "Stop after N evaluations without improvement.")
    eval_on_start: bool = setting(False, "Evaluate the model before training too (a baseline).")
    best_metric: str | None = setting(
        None,
        "Validation metric that picks the best checkpoint: loss or perplexity (every task), accuracy or "
        "macro_f1 (classify), f1, precision or recall (tag), span_f1 or span_exact (qa), mrr or spearman "
        "(embed) (default: accuracy for classify, f1 for tag, span_f1 for qa, mrr or spearman for embed, "
        "else loss).",
    )
    report_to: list[str] = setting(
        ["none"], "Trainer integration (tensorboard, wandb, ...); repeatable [default: none]."
    )
    eval_batch_size: int | None = setting(None, "Evaluation batch size (default: the training batch size).")
    logging_steps: int = setting(10, "Steps between loss readings.")
    device: str = setting("auto", "auto|cpu|cuda.")
    num_workers: int = setting(0, "DataLoader worker processes (0: load batches in the training process).")
    find_unused_parameters: bool = setting(False, "DDP: only for models whose forward skips some parameters.")
    overwrite: bool = setting(False, "Replace a non-empty --output folder.")
    resume: bool = setting(False, "Continue from the latest checkpoint in --output.")
    keep_checkpoints: bool = setting(False, "Keep --output/checkpoints after success.")

    def check(self) -> None:
        """Cheap checks of the values, before anything is read or loaded."""
        finite(self)
        if self.max_steps is None and self.epochs is not None and not self.epochs > 0:
            raise UsageError("--epochs must be greater than 0")
        at_least(self.max_steps, 1, "--max-steps")
        if self.lr is not None and not self.lr > 0:  # None: the command's default (finetune: with or without --lora)
            raise UsageError("--lr must be greater than 0")
        for name in ("batch_size", "grad_accum", "save_total_limit", "logging_steps"):
            at_least(getattr(self, name), 1, f"--{name.replace('_', '-')}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise UsageError("--warmup-ratio must be in [0, 1)")
        if self.weight_decay < 0:
            raise UsageError("--weight-decay must not be negative")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; use {', '.join(PRECISIONS)}")
        at_least(self.save_steps, 1, "--save-steps")
        at_least(self.patience, 1, "--patience")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"unknown --device {self.device!r} for training; use auto, cpu or cuda")
        if self.overwrite and self.resume:
            raise UsageError("--overwrite and --resume contradict each other; give one")


def precision_flag(bf16: bool, fp16: bool, fp32: bool) -> str:
    """The precision named by the --bf16/--fp16/--fp32 flags (at most one)."""
    if sum((bf16, fp16, fp32)) > 1:
        raise UsageError("give at most one of --bf16, --fp16, --fp32")
    return "bf16" if bf16 else "fp16" if fp16 else "fp32" if fp32 else "auto"


# LoRA trains a few low-rank matrices that start at zero: its best rate is about 10x full fine-tuning's
# ("LoRA Without Regret", Thinking Machines 2025), which gives the LoRA paper's 5e-4 for RoBERTa-base and
# QLoRA's 2e-4 for 7B-65B models; measured here: MiniLM on SST-2, 96 steps, 2e-4 stayed at chance (0.509),
# 1e-3 reached 0.773 (full fine-tuning at 1e-4: 0.791). finetune multiplies its size rule's rate by it.
LORA_LR_FACTOR = 10


@dataclass
class FinetuneSettings(TrainSettings):
    """``TrainSettings`` plus what fine-tuning reads and how it turns text into examples."""

    task: str = setting("classify", "classify | clm | mlm | embed | tag | qa | seq2seq.")
    text_column: str | None = setting(None, "Text column (default: the table rule, see docs/formats.md).")
    text_pair_column: str | None = setting(None, "Second text column, for sentence pairs (classify).")
    label_column: str | None = setting(None, "Label column (classify) (default: label).")
    valid: str | None = setting(None, "Validation file with the same columns (default: split off TRAIN).")
    valid_split: float = setting(0.1, "Share of TRAIN held out (seeded; stratified for classify); 0: none.")
    encoding: str = setting("utf-8", "Text encoding of the data files.")
    max_length: int | None = setting(
        None,
        "classify: tokens per example (default: the model's limit); qa: per window (default: 384 within that); "
        "seq2seq: per source and per target.",
    )
    block_size: int | None = setting(None, "clm/mlm: tokens per block (default: model limit, up to 1024).")
    line_by_line: bool = setting(False, "clm/mlm: one example per line instead of packed blocks.")
    mlm_probability: float = setting(0.15, "mlm: share of tokens masked.")
    whole_word_mask: bool = setting(
        False,
        "mlm: mask whole words, not single tokens (a word: a token and its ## continuations; Chinese words: "
        "jieba, pip install 'llmtool[zh]', else each character).",
    )
    num_proc: int | None = setting(None, "Tokenization processes (default: every core for big data, else 1).")
    prompt_column: str | None = setting(None, "clm: prompt column/field; the loss covers only the response.")
    response_column: str | None = setting(None, "clm: response column/field (goes with --prompt-column).")
    source_column: str | None = setting(
        None, "seq2seq: source column/field (default: source; field 1 of a headerless TAB-separated .txt)."
    )
    target_column: str | None = setting(
        None, "seq2seq: target column/field (default: target; field 2 of a headerless TAB-separated .txt)."
    )
    # finetune: chosen by the plan (finetune.training_plan); LoRA adapters take 10x full fine-tuning's rate.
    lr: float | None = setting(
        None,
        "Peak learning rate (AdamW, linear decay) (default: chosen for the model, see docs/training.md; "
        f"{LORA_LR_FACTOR}x that with --lora).",
    )
    lora: bool = setting(False, "Train LoRA adapters (PEFT), not every weight; --output is an adapter folder.")
    lora_r: int = setting(8, "LoRA rank: the inner size of each adapter's two matrices.")
    lora_alpha: int = setting(16, "LoRA scaling numerator: adapters add alpha/r x their product.")
    lora_dropout: float = setting(0.05, "Dropout on the adapters' input.")
    lora_targets: list[str] | None = setting(
        None, "Comma-separated module names to adapt (default: the attention projections; see docs/lora.md)."
    )
    merge: bool = setting(False, "With --lora: write the adapter merged into its base model, a full model.")
    label_all_subwords: bool = setting(
        False, "tag: label every subword of a word (B- made I-), not only the first (the others: left out)."
    )
    doc_stride: int | None = setting(
        None, "qa: tokens neighbouring windows of a long context share [default: 128, at most a third of a window]."
    )

    def check(self) -> None:
        super().check()
        if self.lora:
            at_least(self.lora_r, 1, "--lora-r")
            at_least(self.lora_alpha, 1, "--lora-alpha")
            if not 0 <= self.lora_dropout < 1:
                raise UsageError("--lora-dropout must be in [0, 1)")
            if self.lora_targets is not None and not [t for t in self.lora_targets if t.strip()]:
                raise UsageError("--lora-targets is empty")
        elif self.merge or self.lora_targets is not None:
            raise UsageError(f"{'--merge' if self.merge else '--lora-targets'} goes with --lora")
        if (self.prompt_column is None) != (self.response_column is None):
            raise UsageError("--prompt-column and --response-column go together")
        if self.prompt_column is not None and self.task != "clm":
            raise UsageError("--prompt-column and --response-column apply to --task clm")
        if self.prompt_column is not None and (self.text_column is not None or self.line_by_line):
            raise UsageError("--prompt-column/--response-column do not go with --text-column or --line-by-line")
        if self.task not in TASKS:
            raise UsageError(f"unknown --task {self.task!r}; use {', '.join(TASKS)}")
        if self.valid is None and not 0 <= self.valid_split < 1:
            raise UsageError(f"--valid-split must be in [0, 1) (got {self.valid_split})")
        if self.task in ("classify", "embed", "tag", "qa", "seq2seq") and (
            self.block_size is not None or self.line_by_line
        ):
            raise UsageError("--block-size and --line-by-line apply to --task clm and mlm")
        if (self.source_column is not None or self.target_column is not None) and self.task != "seq2seq":
            raise UsageError("--source-column and --target-column apply to --task seq2seq")
        if self.task not in ("classify", "embed", "tag", "qa", "seq2seq") and self.max_length is not None:
            raise UsageError("--max-length applies to --task classify; for clm and mlm use --block-size")
        for name in ("max_length", "block_size", "num_proc"):
            at_least(getattr(self, name), 1, f"--{name.replace('_', '-')}")
        if not 0 < self.mlm_probability < 1:
            raise UsageError("--mlm-probability must be between 0 and 1")
        if self.whole_word_mask and self.task != "mlm":
            raise UsageError("--whole-word-mask goes with --task mlm")
        if self.label_all_subwords and self.task != "tag":
            raise UsageError("--label-all-subwords goes with --task tag")
        if self.doc_stride is not None and self.task != "qa":
            raise UsageError("--doc-stride goes with --task qa")


@dataclass(frozen=True)
class Size:
    """The shape of a size preset; the feed-forward layer is 4 x hidden wide, as in BERT and GPT-2. With it,
    the dropout and the peak learning rate that train it from scratch (when --lr is not given)."""

    layers: int
    hidden: int
    heads: int
    dropout: float = 0.1
    lr: float = 1e-3


# BERT-Tiny/Mini/Small/Base (Turc et al. 2019, "Well-Read Students Learn Better"); GPT-2 gets the same
# shapes, and "base" is GPT-2's smallest released model (124M parameters with its 50257-token vocabulary).
# tiny is BERT-Tiny's shape with 4 heads instead of 2 and no dropout, at lr 2e-3: it memorises a small
# corpus of facts several times faster (tests/test_pretrain.py, README "Defaults that learn").
SIZES: dict[str, Size] = {
    "tiny": Size(layers=2, hidden=128, heads=4, dropout=0.0, lr=2e-3),
    "mini": Size(layers=4, hidden=256, heads=4, lr=1e-3),
    "small": Size(layers=4, hidden=512, heads=8, lr=5e-4),
    "base": Size(layers=12, hidden=768, heads=12, lr=1e-4),
}
VOCAB_SIZE = 8192  # the largest vocabulary a new tokenizer learns, unless --vocab-size says otherwise
MIN_FREQUENCY = 2  # occurrences a merge needs, unless --min-frequency says otherwise
MIN_VOCAB = 300  # byte-level BPE needs 256 byte symbols first; WordPiece needs its characters


@dataclass
class PretrainSettings(TrainSettings):
    """``TrainSettings`` plus what pre-training reads and builds. Defaults differ from fine-tuning:
    new weights learn with a larger rate, warm-up and weight decay, for more epochs."""

    objective: str = setting(
        "mlm",
        "mlm: a BERT (masked LM); clm: a GPT-2 (next-token prediction); seq2seq: a Marian encoder-decoder "
        "(translation) on parallel text.",
    )
    nsp: bool = setting(False, "mlm: also train BERT's next-sentence head on sentence pairs.")
    size: str = setting("tiny", "Model size preset: tiny, mini, small, base (see docs/commands/pretrain.md).")
    config: str | None = setting(
        None, "config.json: a whole model config, or just the keys that change the --size preset."
    )
    tokenizer: str | None = setting(None, "Reuse this tokenizer (folder or Hub id) instead of training one.")
    vocab_size: int | None = setting(None, f"Largest vocabulary of the new tokenizer [default: {VOCAB_SIZE}].")
    min_frequency: int | None = setting(
        None, f"Occurrences a merge needs to enter the new tokenizer's vocabulary [default: {MIN_FREQUENCY}]."
    )
    block_size: int | None = setting(
        None, "Tokens per training example (default: 32 when mlm packs a corpus of short lines, else 128)."
    )
    line_by_line: bool | None = setting(
        None,
        "One example per line (truncated to --block-size), or (--pack) packed blocks (default: lines for a "
        "corpus of short sentences, else packed; see docs/training.md).",
    )
    mlm_probability: float | None = setting(
        None, "mlm: share of tokens masked, at least one an example (default: 0.4 one line per example, else 0.15)."
    )
    whole_word_mask: bool = setting(
        False,
        "mlm: mask whole words, not single tokens (a word: a token and its ## continuations; Chinese words: "
        "jieba, pip install 'llmtool[zh]', else each character).",
    )
    text_column: str | None = setting(None, "Text column of .csv/.tsv/.jsonl corpora (default: the table rule).")
    source_column: str | None = setting(
        None, "seq2seq: source column/field (default: source; field 1 of a headerless TAB-separated .txt)."
    )
    target_column: str | None = setting(
        None, "seq2seq: target column/field (default: target; field 2 of a headerless TAB-separated .txt)."
    )
    valid: str | None = setting(None, "Validation corpus (default: --valid-split of the corpus).")
    valid_split: float = setting(0.0, "Share of the documents held out for validation (seeded); 0: none.")
    encoding: str = setting("utf-8", "Text encoding of the corpus files.")
    num_proc: int | None = setting(None, "Tokenization processes (default: several for big corpora only).")
    # Pre-training defaults (fields of TrainSettings given new values); None: chosen by the plan (README)
    epochs: float | None = setting(
        None, "Passes over the corpus (default: a step budget from the corpus and model size, see docs/training.md)."
    )
    lr: float | None = setting(None, "Peak learning rate (default: the --size preset's, e.g. 2e-3 for tiny).")
    batch_size: int | None = setting(None, "Examples per device per step (default: 32, or fewer examples).")
    warmup_ratio: float | None = setting(None, "Share of steps warming the rate up (default: 0.05).")
    weight_decay: float = setting(0.01, "AdamW weight decay, as BERT and GPT-2 used.")

    def check(self) -> None:
        super().check()
        if self.objective not in OBJECTIVES:
            names = f"{', '.join(OBJECTIVES[:-1])} or {OBJECTIVES[-1]}"
            raise UsageError(f"unknown --objective {self.objective!r}; use {names}")
        if self.objective == "seq2seq":
            self.check_seq2seq()
        elif self.source_column is not None or self.target_column is not None:
            raise UsageError("--source-column and --target-column apply to --objective seq2seq")
        if self.nsp and self.objective != "mlm":
            raise UsageError("--nsp (next-sentence prediction) goes with --objective mlm")
        if self.nsp and self.line_by_line:
            raise UsageError("--nsp builds sentence pairs; it does not go with --line-by-line")
        if self.size not in SIZES:
            raise UsageError(f"unknown --size {self.size!r}; use {', '.join(SIZES)}")
        if self.tokenizer is not None and (self.vocab_size is not None or self.min_frequency is not None):
            raise UsageError("--vocab-size and --min-frequency train a new tokenizer; they do not go with --tokenizer")
        at_least(self.vocab_size, MIN_VOCAB, "--vocab-size")
        at_least(self.min_frequency, 1, "--min-frequency")
        if self.block_size is not None and self.block_size < 8:
            raise UsageError("--block-size must be at least 8")
        if self.mlm_probability is not None and not 0 < self.mlm_probability < 1:
            raise UsageError("--mlm-probability must be between 0 and 1")
        if self.whole_word_mask and self.objective != "mlm":
            raise UsageError("--whole-word-mask goes with --objective mlm")
        if self.valid is None and not 0 <= self.valid_split < 1:
            raise UsageError(f"--valid-split must be in [0, 1) (got {self.valid_split})")
        at_least(self.num_proc, 1, "--num-proc")

    def check_seq2seq(self) -> None:
        """What does not apply to parallel text (pairs, not lines of a corpus)."""
        for name, value in (
            ("--nsp", self.nsp),
            ("--line-by-line/--pack", self.line_by_line is not None),
            ("--mlm-probability", self.mlm_probability is not None),
            ("--text-column", self.text_column is not None),
        ):
            if value:
                raise UsageError(f"{name} does not apply to --objective seq2seq (each pair is one example)")
