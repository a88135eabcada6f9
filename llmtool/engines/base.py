"""What an inference engine offers the task modules: the contract every engine implements.

Task modules (fill_mask, classify, next_sentence, score, generate, ...) do everything that does
not depend on the engine (reading, tokenizing, batching by length, top-k, windows, stop strings,
records) and ask an engine for numbers only:

- an encoder (:class:`EncoderEngine`): masked-LM logits at chosen positions, a sequence head's
  logits (a classifier's classes, or next-sentence's two), the last hidden states, a per-token
  head's logits (a token classifier's labels, or question answering's start and end);
- a decoder (:class:`DecoderEngine`): log P(token | the tokens before it), and new tokens;
- an encoder-decoder (:class:`Seq2SeqEngine`): new target tokens from source tokens (greedy, beam search,
  sampling), and log P(target token | source, the target tokens before it).

Rows come unpadded (token ids as lists); results come back as numpy float32 arrays. Two engines
implement these Protocols: torch (:mod:`llmtool.engines.torch_engine`) and CTranslate2
(:mod:`llmtool.engines.ct2.encoder`, :mod:`llmtool.engines.ct2.decoder`,
:mod:`llmtool.engines.ct2.seq2seq`), so the same records
come out whichever engine ran. :mod:`llmtool.engines.choice` opens one, typed as these Protocols:
a method added here and missing from either engine is a mypy error there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
# One unpadded input of an encoder: {"input_ids": [...]} and, for models with segments, "token_type_ids".
Row = Mapping[str, Sequence[int]]
OnToken = Callable[[int, int], bool]  # (sequence, token id) -> stop this sequence?


class Tokenizer(Protocol):
    """The part of a Hugging Face tokenizer the task modules use. Transformers' tokenizers (torch
    engine) and :class:`llmtool.engines.ct2.tokenizer.FastTokenizer` (CTranslate2) both have it."""

    pad_token: str | None  # settable: a tokenizer without one pads with its end-of-text token
    pad_token_id: int | None

    @property
    def name_or_path(self) -> str: ...
    @property
    def bos_token_id(self) -> int | None: ...
    @property
    def eos_token(self) -> str | None: ...
    @property
    def eos_token_id(self) -> int | None: ...
    @property
    def mask_token(self) -> str | None: ...
    @property
    def mask_token_id(self) -> int | None: ...
    @property
    def all_special_ids(self) -> Sequence[int]: ...
    @property
    def model_max_length(self) -> int: ...
    @property
    def chat_template(self) -> str | dict[str, str] | None: ...

    def __call__(
        self,
        text: str | list[str],
        text_pair: str | list[str] | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
    ) -> Mapping[str, Any]:
        """``input_ids`` (and ``token_type_ids``, ``attention_mask``): a list, or a list per text."""
        ...

    def decode(self, ids: list[int], /, skip_special_tokens: bool = False) -> str | list[str]: ...
    def convert_ids_to_tokens(self, ids: list[int], /) -> str | list[str]: ...
    def get_vocab(self) -> dict[str, int]: ...
    @property
    def apply_chat_template(self) -> Callable[..., Any]:
        """Transformers' ``apply_chat_template(messages, tokenize=False, add_generation_prompt=True, ...)``."""
        ...


class EncoderEngine(Protocol):
    """A masked LM, sequence or token classifier, next-sentence, question-answering model or bare encoder
    (BERT, RoBERTa...)."""

    @property
    def name(self) -> str:
        """Which engine this is, for messages: "torch" or "ctranslate2"."""
        ...

    @property
    def config(self) -> Any:
        """The model's configuration: a Transformers ``PretrainedConfig``, or config.json as attributes."""
        ...

    def mlm_logits(self, batch: Sequence[Sequence[int]], positions: Sequence[tuple[int, int]]) -> FloatArray:
        """Masked-LM logits, ``[len(positions), vocabulary]``, at the ``(row, column)`` positions only."""
        ...

    def sequence_logits(self, batch: Sequence[Row]) -> FloatArray:
        """The sequence head's logits per row, ``[rows, labels]``: a classifier's classes, or for a
        next-sentence model its two (index 0: the second segment follows the first)."""
        ...

    def hidden_states(self, batch: Sequence[Row]) -> tuple[FloatArray, IntArray]:
        """The encoder's last hidden states, ``[rows, tokens, hidden]`` (float32; ``tokens`` is the
        longest row, the rows padded on the right with zeros), and the attention mask ``[rows,
        tokens]`` (int64: 1 for a row's tokens, 0 for padding). A row's states do not depend on the
        rows it is batched with."""
        ...

    def token_logits(self, batch: Sequence[Row]) -> list[FloatArray]:
        """The model's per-token head, one float32 array ``[row's tokens, outputs]`` per unpadded row: a token
        classifier's labels (``classifier``), or a question-answering model's two (``qa_outputs``: start, end)."""
        ...


class DecoderEngine(Protocol):
    """A causal LM (GPT-2, Llama...): scoring and generation."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> Any: ...

    @property
    def eos_token_id(self) -> int | list[int] | None:
        """The model's end-of-text token(s); None: the tokenizer's."""
        ...

    @property
    def generation_config(self) -> dict[str, Any] | None:
        """The model's own generation settings (its generation_config.json), or None."""
        ...

    def token_logprobs(self, rows: Sequence[Sequence[int]], firsts: Sequence[int] | None = None) -> list[FloatArray]:
        """Per row, log P(row[t] | row[:t]) for t from ``firsts[i]`` (default 1) to the row's end."""
        ...

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        greedy: bool,
        temperature: float,
        top_k: int,
        top_p: float,
        repetition_penalty: float,
        num_return_sequences: int,
        seed: int | None,
        row_seeds: Sequence[int] | None,
        eos_ids: AbstractSet[int],
        on_token: OnToken | None = None,
    ) -> list[list[int]]:
        """New tokens per output sequence, prompt-major (prompt 0's sequences first), EOS included.

        ``row_seeds`` (one per output sequence, derived from ``seed``) lets an engine draw each
        sequence from its own generator; ``on_token(sequence, token)`` sees each new token of a
        running sequence, and True stops that sequence."""
        ...


class Seq2SeqEngine(Protocol):
    """An encoder-decoder (T5, BART, Marian, mBART, NLLB...): new text from a source text, and the
    log-probabilities of a given target.

    Target token lists never hold the decoder start token (the engine puts it first); they hold a
    forced ``prefix`` (a language code, BART's ``<s>``) when one was given, and the end token when
    one was produced. Both engines return the same tokens for the same options at float32 (greedy and
    beam search; sampling draws from each engine's own generator)."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> Any: ...

    @property
    def decoder_start_token_id(self) -> int | None:
        """The token the decoder starts from (its generation_config.json's, else config.json's)."""
        ...

    @property
    def generation_config(self) -> dict[str, Any] | None:
        """The model's own generation settings (its generation_config.json), or None."""
        ...

    def generate(
        self,
        sources: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        greedy: bool,
        num_beams: int,
        temperature: float,
        top_k: int,
        top_p: float,
        length_penalty: float,
        no_repeat_ngram_size: int,
        num_return_sequences: int,
        seed: int | None,
        row_seeds: Sequence[int] | None,
        eos_ids: AbstractSet[int],
        prefix: Sequence[int] = (),
        suppress: Sequence[int] = (),
        on_token: OnToken | None = None,
    ) -> list[list[int]]:
        """The target tokens per output sequence, source-major (source 0's sequences first): ``prefix``
        first, then up to ``max_new_tokens`` new ones, EOS included.

        ``num_beams`` > 1: beam search (``greedy`` must be true), the ``num_return_sequences`` best
        hypotheses, best first, scored as sum of log-probabilities / length ** ``length_penalty``.
        Sampling (``greedy`` false): ``row_seeds`` (one per output sequence) lets an engine draw each
        sequence from its own generator. ``no_repeat_ngram_size`` > 0 bans repeating an n-gram of
        the target; ``suppress``: tokens never generated (a single-token ``bad_words_ids``).
        ``on_token(sequence, token)`` sees each new token when ``num_beams`` is 1; True stops that
        sequence."""
        ...

    def token_logprobs(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> list[FloatArray]:
        """Per pair, log P(target[t] | source, decoder start + target[:t]) for every t (float32)."""
        ...
