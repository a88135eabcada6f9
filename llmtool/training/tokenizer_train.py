"""Train a tokenizer from scratch on a corpus: WordPiece for BERT (mlm), byte-level BPE for GPT-2 (clm),
SentencePiece-style BPE for an encoder-decoder (seq2seq: one vocabulary shared by source and target).

The trained vocabulary is wrapped in Transformers' own ``BertTokenizer`` / ``GPT2Tokenizer``
classes (seq2seq: ``PreTrainedTokenizerFast`` itself), all backed by the Rust ``tokenizers``
library (``PreTrainedTokenizerFast``), so
``save_pretrained`` writes the standard files and ``AutoTokenizer.from_pretrained`` rebuilds
exactly the same tokenizer, with no llmtool code needed to load it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from llmtool.errors import InputError, UsageError
from llmtool.settings import MIN_FREQUENCY, MIN_VOCAB, VOCAB_SIZE

Objective = Literal["mlm", "clm", "seq2seq"]

# BERT's special tokens, in BERT's order: [PAD] is id 0, as BertConfig.pad_token_id assumes.
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT2_EOS = "<|endoftext|>"  # GPT-2's only special token: end of text, also its BOS and UNK
# seq2seq (Marian's names): end of text is id 0, unknown 1, and padding the LAST id, as in OPUS-MT's
# vocabularies (Marian also starts decoding from it). CTranslate2's Marian converter drops the last
# embedding row as padding: a padding token anywhere else would cost a real token's row.
SEQ2SEQ_SPECIALS = ("<pad>", "</s>", "<unk>")


@dataclass
class TokenizerOptions:
    vocab_size: int = VOCAB_SIZE  # the largest vocabulary to learn (fewer when the corpus has fewer words)
    min_frequency: int = MIN_FREQUENCY  # a merge must occur this often in the corpus to be learned
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


class _Counted:
    """Passes texts through, counting the non-blank ones (the trainers say nothing about empty input)."""

    def __init__(self, texts: Iterable[str]) -> None:
        self.texts, self.count = texts, 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            if text.strip():
                self.count += 1
                yield text


def train_tokenizer(texts: Iterable[str], objective: Objective, options: TokenizerOptions | None = None) -> Any:
    """A new tokenizer learned from ``texts`` (an iterable of strings, read once).

    Training is deterministic: the same texts and options give the same vocabulary, which
    ``--resume`` and distributed runs rely on (though both also reuse the saved tokenizer).
    """
    opts = options or TokenizerOptions()
    opts.check()
    counted = _Counted(texts)
    if objective == "mlm":
        tokenizer = _train_wordpiece(counted, opts)
    elif objective == "clm":
        tokenizer = _train_byte_bpe(counted, opts)
    elif objective == "seq2seq":
        tokenizer = _train_shared_bpe(counted, opts)
    else:
        raise UsageError(f"unknown objective {objective!r}; use mlm, clm or seq2seq")
    if counted.count == 0:
        raise InputError("the corpus has no text to learn a vocabulary from")
    return tokenizer


def _train_wordpiece(texts: Iterable[str], opts: TokenizerOptions) -> Any:
    """BERT's WordPiece vocabulary, learned the way ``tokenizers.trainers.WordPieceTrainer`` learns it.

    That trainer is BPE over words whose non-initial characters carry the ``##`` prefix. It is not
    deterministic: it numbers the ``##`` symbols in hash-map order and breaks ties between equally
    frequent merges by those numbers, so two runs learn different vocabularies (and a resumed or
    repeated run would not match). Here the continuation characters are instead written as
    distinct private-use characters, which the deterministic plain BPE trainer numbers in sorted
    order; the learned tokens are then mapped back (a token starting with one is a ``##`` piece).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizer

    # The normalizer and pre-tokenizer that BertTokenizer rebuilds when it loads the vocabulary.
    normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=opts.lowercase, strip_accents=None)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()

    def marked(text: str) -> str:
        words = pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
        return " ".join(word[0] + "".join(map(_continuation, word[1:])) for word, _ in words)

    backend = Tokenizer(models.BPE(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.BpeTrainer(
        vocab_size=opts.vocab_size,
        min_frequency=opts.min_frequency,
        special_tokens=list(BERT_SPECIALS),
        show_progress=False,
    )
    backend.train_from_iterator(_batches(marked(text) for text in texts), trainer)
    learned = sorted(backend.get_vocab().items(), key=lambda item: item[1])
    vocab: dict[str, int] = {}
    for token, _ in learned:
        vocab.setdefault(_unmark(token) if token not in BERT_SPECIALS else token, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=opts.lowercase, model_max_length=opts.model_max_length)


# Continuation characters move to the supplementary private-use planes (U+F0000 and up), where text
# does not go: the Basic Multilingual Plane to plane 15, plane 1 (emoji and rarer scripts) to plane 16.
# Later planes (CJK extensions) are not moved: BERT's pre-tokenizer makes each CJK character a word.
_SHIFT = {0: 0xF0000, 1: 0x100000 - 0x10000}


def _continuation(char: str) -> str:
    code = ord(char)
    shift = _SHIFT.get(code >> 16)
    return chr(code + shift) if shift is not None else char


def _unmark(token: str) -> str:
    """A learned token in WordPiece spelling: continuation characters restored, ``##`` if it starts with one."""
    plain = "".join(_plain(c) for c in token)
    return f"##{plain}" if ord(token[0]) >= 0xF0000 else plain


def _plain(char: str) -> str:
    code = ord(char)
    if code >= 0x100000:
        return chr(code - _SHIFT[1])
    return chr(code - _SHIFT[0]) if code >= 0xF0000 else char


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
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    # (a, b) pairs, as Transformers itself passes them when it loads a tokenizer.json (the hint says list[str])
    return GPT2Tokenizer(vocab=model["vocab"], merges=merges, model_max_length=opts.model_max_length)  # type: ignore[arg-type]


def _train_shared_bpe(texts: Iterable[str], opts: TokenizerOptions) -> Any:
    """One BPE vocabulary for both sides of parallel text, SentencePiece-style: a word starts with "▁",
    so decoding restores the text exactly (no normalization: Chinese full-width punctuation stays as it
    is) and adds no space at the start; every text ends with ``</s>``
    (sources and targets alike, as Marian's tokenizers do). A character the corpus never had is ``<unk>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    pad, eos, unk = SEQ2SEQ_SPECIALS
    backend = Tokenizer(models.BPE(unk_token=unk))
    # Punctuation is split off words ("home." is "▁home" "."): on 6,000 Tatoeba pairs this took held-out
    # BLEU from 0.4 (every source decoded to one sentence) to 23.1 (docs/training.md, seq2seq measured).
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always"), pre_tokenizers.Punctuation()]
    )
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=opts.vocab_size,
        min_frequency=opts.min_frequency,
        special_tokens=[eos, unk],
        show_progress=False,
    )
    backend.train_from_iterator(_batches(texts), trainer)
    backend.add_special_tokens([pad])  # the last id (see SEQ2SEQ_SPECIALS)
    eos_id = backend.token_to_id(eos)
    backend.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, eos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=pad, eos_token=eos, unk_token=unk, model_max_length=opts.model_max_length
    )


def check_pretrained_tokenizer(tokenizer: Any, objective: Objective, source: str) -> None:
    """A reused tokenizer (``--tokenizer DIR``) must have the special tokens the objective needs."""
    if objective == "mlm":
        missing = [
            name for name in ("mask_token", "cls_token", "sep_token", "pad_token") if getattr(tokenizer, name) is None
        ]
        if missing:
            raise UsageError(f"--tokenizer {source}: a masked-LM tokenizer needs {', '.join(missing)}")
    elif tokenizer.eos_token is None:
        what = "an encoder-decoder" if objective == "seq2seq" else "a causal-LM"
        raise UsageError(f"--tokenizer {source}: {what} tokenizer needs an end-of-text (eos) token")
