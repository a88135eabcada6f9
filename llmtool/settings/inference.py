"""The inference commands' settings (fill-mask, generate, classify, score, next-sentence, evaluate,
attention, embed, similar)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmtool.errors import UsageError
from llmtool.settings.base import (
    at_least,
    finite,
    setting,
)

# --------------------------------------------------------------------------- inference commands


@dataclass
class FillMaskOptions:
    top_k: int = setting(5, "Predictions per mask.")
    targets: list[str] | None = setting(None, "Comma-separated candidate words; each must be one token.")
    allow_special: bool = setting(False, "Also predict special tokens ([CLS], [SEP], [PAD], [UNK], <s>, ...).")
    batch_size: int = setting(32, "Inputs per forward pass.")
    skip_invalid: bool = setting(False, "Write an error record for a bad line and go on (default: stop, exit 2).")
    window: int = setting(8, "Batches read ahead and sorted by length together.")
    seed: int | None = setting(None, "Random seed, for repeatable output.")

    def check(self) -> None:
        finite(self)
        at_least(self.top_k, 1, "--top-k")
        at_least(self.batch_size, 1, "--batch-size")
        if self.targets is not None and not self.targets:
            raise UsageError("--targets is empty")


# llmtool's own generation defaults: used where neither a flag nor the model's generation_config.json
# says otherwise (flag > the model's generation_config.json > these; README "generate").
GENERATION_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 50,
    "greedy": False,  # sample
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
}


@dataclass
class GenerateOptions:
    """Sampling fields left None take the model's generation_config.json value, else llmtool's
    (``GENERATION_DEFAULTS``); a value given here always wins."""

    max_new_tokens: int | None = setting(None, "Tokens to generate [default: the model's generation_config, else 50].")
    greedy: bool | None = setting(
        None,
        "--greedy: most likely token each step; --sample: sample [default: the model's do_sample, else sample].",
    )
    temperature: float | None = setting(None, "Sampling temperature [default: the model's, else 1.0].")
    top_k: int | None = setting(None, "Sample from the k most likely tokens, 0: all [default: the model's, else 50].")
    top_p: float | None = setting(None, "Nucleus sampling probability mass [default: the model's, else 1.0].")
    repetition_penalty: float | None = setting(None, ">1 discourages repeats [default: the model's, else 1.0].")
    num_return_sequences: int = setting(1, "Outputs per prompt.")
    stop: list[str] = setting([], "Cut the output before STR (repeatable).")
    include_prompt: bool = setting(True, "Output the prompt and its continuation (False: the continuation only).")
    seed: int | None = setting(None, "Random seed, for repeatable output.")
    batch_size: int = setting(32, "Prompts per forward pass.")
    chat: bool = setting(False, "Wrap the prompt as a user message (chat template).")
    stream: bool | None = setting(None, "Print tokens as they come [default: one prompt to a terminal].")

    def check(self) -> None:
        finite(self)
        at_least(self.max_new_tokens, 1, "--max-new-tokens")
        at_least(self.num_return_sequences, 1, "--num-return-sequences")
        at_least(self.batch_size, 1, "--batch-size")
        if self.temperature is not None and self.temperature <= 0:
            raise UsageError("--temperature must be above 0 (use --greedy for deterministic output)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError("--top-p must be in (0, 1]")
        if self.top_k is not None and self.top_k < 0:
            raise UsageError("--top-k must be 0 (no limit) or more")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise UsageError("--repetition-penalty must be above 0")
        if any(not s for s in self.stop):
            raise UsageError("--stop must not be empty")
        if self.stream and self.num_return_sequences != 1:
            raise UsageError("--stream needs --format text and one sequence per prompt")


@dataclass
class ClassifyOptions:
    top_k: int = setting(1, "Labels per input, most probable first.")
    batch_size: int = setting(32, "Inputs per forward pass.")
    max_length: int | None = setting(None, "Truncate inputs to this many tokens (default: the model's limit).")
    skip_invalid: bool = setting(False, "Write an error record for a bad row and go on (default: stop, exit 2).")
    window: int = setting(8, "Batches read ahead and sorted by length together.")

    def check(self) -> None:
        finite(self)
        at_least(self.top_k, 1, "--top-k")
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.max_length, 2, "--max-length")


@dataclass
class ScoreOptions:
    batch_size: int = setting(8, "Sequences per forward pass (masked LMs: one per scored token).")
    max_length: int | None = setting(None, "Window size in tokens (default: the model's context).")
    stride: int | None = setting(
        None,
        "Texts longer than the window: tokens between window starts (default: half the window). Each token "
        "is scored once, with at least window minus stride tokens of left context.",
    )
    bos: bool = setting(True, "Causal LMs: put BOS first, so the first token is scored too.")
    total: bool = setting(False, "End with a corpus total: log-likelihoods pooled by token count.")
    skip_invalid: bool = setting(False, "Write an error record for a line with nothing to score and go on.")
    window: int = setting(4, "Batches read ahead and sorted by length together.")

    def check(self) -> None:
        finite(self)
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.max_length, 2, "--max-length")
        at_least(self.stride, 1, "--stride")
        if self.stride is not None and self.max_length is not None and self.stride >= self.max_length:
            raise UsageError(f"--stride must be below the window (--max-length {self.max_length})")


@dataclass
class NextSentenceOptions:
    batch_size: int = setting(32, "Pairs per forward pass.")
    max_length: int | None = setting(None, "Truncate each pair to this many tokens (default: the model's limit).")
    window: int = setting(8, "Batches read ahead and sorted by length together.")

    def check(self) -> None:
        finite(self)
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.max_length, 4, "--max-length")


@dataclass
class EvaluateOptions:
    text_column: str | None = setting(None, "Text column (default: the table rule, see docs/formats.md).")
    pair_column: str | None = setting(None, "Second text column, for sentence-pair classifiers.")
    label_column: str = setting("label", "Gold labels: the model's label names or ids.")
    batch_size: int = setting(32, "Inputs per forward pass.")
    max_length: int | None = setting(
        None, "Classifiers: truncate to this many tokens. LMs: the scoring window. (Default: the model's limit.)"
    )
    stride: int | None = setting(None, "LMs: sliding-window stride (see score).")
    bos: bool = setting(True, "Causal LMs: score the first token of each line given BOS.")
    encoding: str = setting("utf-8", "Text encoding of DATA.")
    plot: str | None = setting(None, "Classifiers: draw the confusion matrix into this PNG file (needs llmtool[plot]).")

    def check(self) -> None:
        finite(self)
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.max_length, 2, "--max-length")
        at_least(self.stride, 1, "--stride")
        if self.plot is not None and not self.plot.lower().endswith(".png"):
            raise UsageError(f"--plot {self.plot!r}: the picture is a PNG; name a .png file")


@dataclass
class AttentionOptions:
    layer: int | None = setting(None, "Layer to show; negative counts from the end [default: the last].")
    head: int | None = setting(None, "Head to show; negative counts from the end [default: every head, as a grid].")
    output: str | None = setting(None, "Draw the weights as a heatmap into this PNG file (needs llmtool[plot]).")

    def check(self) -> None:
        finite(self)
        if self.output is not None and not self.output.lower().endswith(".png"):
            raise UsageError(f"--output {self.output!r}: the picture is a PNG; name a .png file")


# --------------------------------------------------------------------------- sentence embeddings

EMBED_POOLINGS: tuple[str, ...] = ("mean", "cls", "max", "lasttoken")


@dataclass
class EmbedOptions:
    """``llmtool embed``: how token states become one vector (None: what the model's sentence-transformers
    files say; a plain encoder: mean pooling, normalised)."""

    pooling: str | None = setting(None, "mean|cls|max|lasttoken [default: the model's 1_Pooling, else mean].")
    normalize: bool | None = setting(None, "Unit-length vectors [default: the model's Normalize module; plain: yes].")
    prompt: str | None = setting(None, "Put STR before each input, e.g. 'query: ' (models trained with prompts).")
    prompt_name: str | None = setting(None, "Put the model's prompt NAME before each input (its prompts, e.g. query).")
    max_length: int | None = setting(None, "Truncate inputs to this many tokens [default: the model's max_seq_length].")
    batch_size: int = setting(32, "Inputs per forward pass.")
    window: int = setting(8, "Batches read ahead and sorted by length together.")

    def check(self) -> None:
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.max_length, 2, "--max-length")
        if self.pooling is not None and self.pooling not in EMBED_POOLINGS:
            raise UsageError(f"unknown --pooling {self.pooling!r}; use {'|'.join(EMBED_POOLINGS)}")
        if self.prompt is not None and self.prompt_name is not None:
            raise UsageError("give --prompt or --prompt-name, not both")
        if self.prompt_name is not None and not self.prompt_name.strip():
            raise UsageError("--prompt-name is empty")


@dataclass
class SimilarOptions(EmbedOptions):
    """``llmtool similar``: :class:`EmbedOptions` for the input lines, plus the ranking and the queries' prompt."""

    top_k: int = setting(10, "Best matches shown per query.")
    all: bool = setting(False, "Show every input line, best first (keeps every score in memory, not the vectors).")
    query_prompt: str | None = setting(None, "Put STR before each query [default: the model's query prompt, if any].")
    query_prompt_name: str | None = setting(None, "Put the model's prompt NAME before each query.")

    def check(self) -> None:
        super().check()
        at_least(self.top_k, 1, "--top-k")
        if self.query_prompt is not None and self.query_prompt_name is not None:
            raise UsageError("give --query-prompt or --query-prompt-name, not both")
