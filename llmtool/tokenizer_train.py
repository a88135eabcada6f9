"""Train a tokenizer from scratch on a corpus: WordPiece for BERT (mlm), byte-level BPE for GPT-2 (clm).

The trained vocabulary is wrapped in Transformers' own ``BertTokenizer`` / ``GPT2Tokenizer``
classes (both backed by the Rust ``tokenizers`` library, i.e. ``PreTrainedTokenizerFast``), so
``save_pretrained`` writes the standard files and ``AutoTokenizer.from_pretrained`` rebuilds
exactly the same tokenizer, with no llmtool code needed to load it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from llmtool.errors import InputError, UsageError

Objective = Literal["mlm", "clm"]

# BERT's special tokens, in BERT's order: [PAD] is id 0, as BertConfig.pad_token_id assumes.
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT2_EOS = "<|endoftext|>"  # GPT-2's only special token: end of text, also its BOS and UNK
MIN_VOCAB = 300  # byte-level BPE needs 256 byte symbols first; WordPiece needs its characters


@dataclass
class TokenizerOptions:
    vocab_size: int = 8192  # the largest vocabulary to learn (fewer when the corpus has fewer words)
    min_frequency: int = 2  # a merge must occur this often in the corpus to be learned
    lowercase: bool = True  # mlm only: lower-case and strip accents, as bert-base-uncased does
    model_max_length: int = 512  # what the tokenizer reports as its longest input (the model's context)

    def check(self) -> None:
        if self.vocab_size < MIN_VOCAB:
            raise UsageError(f"--vocab-size must be at least {MIN_VOCAB}")
        if self.min_frequency < 1:
            raise UsageError("--min-frequency must be at least 1")


def _batches(texts: Iterable[str], size: int = 1000) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def train_tokenizer(texts: Iterable[str], objective: Objective, options: TokenizerOptions | None = None) -> Any:
    """A new tokenizer learned from ``texts`` (an iterable of strings, read once)."""
    opts = options or TokenizerOptions()
    opts.check()
    if objective == "mlm":
        tokenizer = _train_wordpiece(texts, opts)
    elif objective == "clm":
        tokenizer = _train_byte_bpe(texts, opts)
    else:
        raise UsageError(f"unknown objective {objective!r}; use mlm or clm")
    if len(tokenizer) <= len(BERT_SPECIALS) + 1:
        raise InputError("the corpus has no text to learn a vocabulary from")
    return tokenizer


def _train_wordpiece(texts: Iterable[str], opts: TokenizerOptions) -> Any:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    # The same normalizer and pre-tokenizer that BertTokenizer rebuilds when it loads the vocabulary.
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=opts.lowercase, strip_accents=None)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=opts.vocab_size,
        min_frequency=opts.min_frequency,
        special_tokens=list(BERT_SPECIALS),
        continuing_subword_prefix="##",
        show_progress=False,
    )
    backend.train_from_iterator(_batches(texts), trainer)
    return BertTokenizer(
        vocab=backend.get_vocab(), do_lower_case=opts.lowercase, model_max_length=opts.model_max_length
    )


def _train_byte_bpe(texts: Iterable[str], opts: TokenizerOptions) -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Tokenizer

    backend = Tokenizer(models.BPE())
    # GPT-2's pre-tokenizer: a word carries its leading space ("Ġparis"), and no prefix space is added.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=opts.vocab_size,
        min_frequency=opts.min_frequency,
        special_tokens=[GPT2_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is encodable: no unknown tokens
        show_progress=False,
    )
    backend.train_from_iterator(_batches(texts), trainer)
    model = json.loads(backend.to_str())["model"]
    merges: Any = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return GPT2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=opts.model_max_length)


def check_pretrained_tokenizer(tokenizer: Any, objective: Objective, source: str) -> None:
    """A reused tokenizer (``--tokenizer DIR``) must have the special tokens the objective needs."""
    if objective == "mlm":
        missing = [
            name for name in ("mask_token", "cls_token", "sep_token", "pad_token") if getattr(tokenizer, name) is None
        ]
        if missing:
            raise UsageError(f"--tokenizer {source}: a masked-LM tokenizer needs {', '.join(missing)}")
    elif tokenizer.eos_token is None:
        raise UsageError(f"--tokenizer {source}: a causal-LM tokenizer needs an end-of-text (eos) token")
