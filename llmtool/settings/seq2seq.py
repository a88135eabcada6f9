"""The encoder-decoder commands' settings: ``llmtool translate`` and ``llmtool summarize``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmtool.errors import UsageError
from llmtool.settings.base import at_least, finite, setting

# llmtool's own seq2seq defaults: used where neither a flag nor the model (its generation_config.json, and
# for summarize/translate its config's task_specific_params) says otherwise.
SEQ2SEQ_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 256,
    "greedy": True,  # unlike generate: a translation is wanted, not a story
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
}


@dataclass
class Seq2SeqOptions:
    """What translate and summarize share. Fields left None take the model's value (its
    generation_config.json, then its task_specific_params), else llmtool's (``SEQ2SEQ_DEFAULTS``)."""

    max_new_tokens: int | None = setting(None, "Most tokens to write per input [default: the model's, else 256].")
    num_beams: int | None = setting(
        None, "Beam search with N beams; 1: greedy [default: the model's num_beams, else 1]."
    )
    greedy: bool | None = setting(
        None, "--greedy: search (greedy or beams); --sample: sample [default: the model's do_sample, else search]."
    )
    temperature: float | None = setting(None, "Sampling temperature [default: the model's, else 1.0].")
    top_k: int | None = setting(None, "Sample from the k most likely tokens, 0: all [default: the model's, else 50].")
    top_p: float | None = setting(None, "Nucleus sampling probability mass [default: the model's, else 1.0].")
    length_penalty: float | None = setting(
        None, "Beam search: score / length ** P; above 1 favours longer outputs [default: the model's, else 1.0]."
    )
    no_repeat_ngram_size: int | None = setting(
        None, "Never repeat an n-gram of this size in an output, 0: off [default: the model's, else 0]."
    )
    num_return_sequences: int = setting(1, "Outputs per input (at most --beams with beam search).")
    prefix: str | None = setting(
        None, "Put STR before each input [default: the model's task prefix, e.g. T5's 'summarize: ']."
    )
    max_length: int | None = setting(
        None, "Truncate inputs to this many tokens, with a message [default: the model's limit]."
    )
    seed: int | None = setting(None, "Random seed, for repeatable sampling.")
    batch_size: int = setting(
        64, "Inputs per batch, at most: a batch holds at most 8,192 source tokens (rows x the longest)."
    )
    stream: bool | None = setting(None, "Print tokens as they come [default: one input to a terminal].")

    def check(self) -> None:
        finite(self)
        at_least(self.max_new_tokens, 1, "--max-new-tokens")
        at_least(self.num_beams, 1, "--beams")
        at_least(self.num_return_sequences, 1, "--num-return-sequences")
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.max_length, 2, "--max-length")
        at_least(self.no_repeat_ngram_size, 0, "--no-repeat-ngram-size")
        if self.temperature is not None and self.temperature <= 0:
            raise UsageError("--temperature must be above 0 (use --greedy for deterministic output)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UsageError("--top-p must be in (0, 1]")
        if self.top_k is not None and self.top_k < 0:
            raise UsageError("--top-k must be 0 (no limit) or more")
        if self.num_beams is not None and self.num_beams > 1 and self.greedy is False:
            raise UsageError("--beams above 1 is a search: drop --sample, or use --beams 1")
        if self.num_beams is not None and self.num_return_sequences > self.num_beams > 1:
            raise UsageError(
                f"--num-return-sequences {self.num_return_sequences} is more than --beams {self.num_beams}"
            )
        if self.stream and self.num_return_sequences != 1:
            raise UsageError("--stream needs --format text and one sequence per input")


@dataclass
class TranslateOptions(Seq2SeqOptions):
    """``llmtool translate``: :class:`Seq2SeqOptions` and the languages."""

    source_lang: str | None = setting(
        None, "Source language: a code the model knows (en_XX, eng_Latn, en) or, for T5, a name (English)."
    )
    target_lang: str | None = setting(
        None, "Target language: forced as the first target token (mBART, NLLB, M2M100), >>code<< for Marian."
    )

    def check(self) -> None:
        super().check()
        for flag, value in (("--source-lang", self.source_lang), ("--target-lang", self.target_lang)):
            if value is not None and not value.strip():
                raise UsageError(f"{flag} is empty")


@dataclass
class SummarizeOptions(Seq2SeqOptions):
    """``llmtool summarize``: :class:`Seq2SeqOptions` (the model's ``summarization`` parameters apply)."""
