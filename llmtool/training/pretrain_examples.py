"""``pretrain``'s examples: documents -> token ids, as packed blocks (default), one line each
(``--line-by-line``) or BERT's sentence pairs (``--nsp``); what the objective adds (clm labels, mlm's
validation masks) and its collator are the objective's recipe (:mod:`llmtool.training.recipes`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any

from llmtool.errors import UsageError
from llmtool.settings import PretrainSettings
from llmtool.training.lm_examples import PACK_ROWS, BlockPacker, LineEncoder, fingerprint, num_proc
from llmtool.training.pretrain_data import block, masking
from llmtool.training.recipes import Masking, language_model

SHORT_SEQ_PROB = 0.1  # BERT: share of next-sentence examples made shorter than the block, like fine-tuning inputs
NSP_PAIRINGS = 5  # BERT's dupe_factor: each document is cut into pairs this many times, each time differently


def build_examples(train_docs: Any, valid_docs: Any | None, tokenizer: Any, s: PretrainSettings) -> tuple[Any, Any]:
    train = _examples(train_docs, tokenizer, s, "train")
    valid = _examples(valid_docs, tokenizer, s, "valid") if valid_docs is not None else None
    if len(train) == 0:
        raise UsageError(f"the corpus is shorter than one --block-size block ({block(s)} tokens); lower it")
    if valid is not None and len(valid) == 0:
        raise UsageError("the validation documents are shorter than one --block-size block; lower it")
    return train, valid


def _examples(docs: Any, tokenizer: Any, s: PretrainSettings, split: str) -> Any:
    """Token ids per example: packed blocks (default), lines (--line-by-line) or sentence pairs (--nsp)."""
    key = [docs._fingerprint, _tokenizer_hash(tokenizer), s.objective, s.nsp, block(s), s.line_by_line, split]
    procs = num_proc(s.num_proc, len(docs))
    if s.nsp:
        segments = docs.map(
            _SegmentEncoder(tokenizer), batched=True, remove_columns=docs.column_names, num_proc=procs,
            new_fingerprint=fingerprint([*key, "segments"]), desc=None,
        )  # fmt: skip
        builder = _NspBuilder(segments, tokenizer, block(s), s.seed)
        out = segments.map(
            builder, batched=True, with_indices=True, remove_columns=segments.column_names,
            new_fingerprint=fingerprint([*key, "pairs", s.seed, NSP_PAIRINGS]), desc=None,
        )  # fmt: skip
    else:
        texts = docs.map(
            _lines if s.line_by_line else _joined, batched=True, remove_columns=docs.column_names,
            new_fingerprint=fingerprint([*key, "texts"]), desc=None,
        )  # fmt: skip
        encoder = LineEncoder(tokenizer, block(s) if s.line_by_line else None, s.objective)
        out = texts.map(
            encoder, batched=True, remove_columns=texts.column_names, num_proc=procs,
            new_fingerprint=fingerprint([*key, "ids"]), desc=None,
        )  # fmt: skip
        if not s.line_by_line:
            out = out.map(
                BlockPacker(block(s)), batched=True, batch_size=PACK_ROWS, remove_columns=out.column_names,
                new_fingerprint=fingerprint([*key, "blocks"]), desc=None,
            )  # fmt: skip
    return language_model(s.objective).pretraining_examples(out, tokenizer, masks(s), key, split)


def _lines(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {"text": [line for lines in batch["lines"] for line in lines]}


def _joined(batch: dict[str, list[Any]]) -> dict[str, list[str]]:
    """A document's lines as one text: a newline between lines, so a causal LM learns where lines end."""
    return {"text": ["\n".join(lines) for lines in batch["lines"]]}


def _tokenizer_hash(tokenizer: Any) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


class _SegmentEncoder:
    """Each document as a list of segments (its lines; a single-line document split into sentences),
    as token ids without special tokens: the units BERT's next-sentence pairs are cut between."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        docs = [lines if len(lines) > 1 else split_sentences(" ".join(lines)) for lines in batch["lines"]]
        flat = [segment for doc in docs for segment in doc]
        ids = iter(self.tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter([])
        return {"segments": [[list(next(ids)) for _ in doc] for doc in docs]}


# Sentence ends: . ! ? before a space and a capital or digit (Western text); the ideographic full stop,
# the full-width ! ? ; and the ellipsis (with a closing quote after them) end one wherever they stand.
_WESTERN_END = r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])"
_CJK_SENTENCE = r"[^。！？；…!?]*[。！？；…!?]+[”’」』）)]*|[^。！？；…!?]+"  # noqa: RUF001


def split_sentences(text: str) -> list[str]:
    """A rough sentence split, enough to pair the sentences of a paragraph: after . ! ? before a
    capital or digit, and after Chinese sentence ends (a closing quote or bracket stays with its sentence)."""
    import re

    parts = re.split(_WESTERN_END, text.strip())
    out: list[str] = []
    for part in parts:
        out.extend(re.findall(_CJK_SENTENCE, part) if re.search("[。！？；…]", part) else [part])  # noqa: RUF001
    return [p.strip() for p in out if p.strip()]


Pair = tuple[list[int], list[int], bool]  # tokens of A, tokens of B, whether B is random


class _NspBuilder:
    """BERT's ``create_instances_from_document``: [CLS] A [SEP] B [SEP] pairs, where B is the actual
    continuation of A half the time (label 0) and text from a random other document otherwise (label 1).

    Segments are gathered up to the target length (the block, or with probability 0.1 a shorter one),
    split at a random segment boundary into A and B; a random B puts the unused segments back. This is
    done NSP_PAIRINGS times per document with different draws (BERT's dupe_factor), so that the model
    sees each sentence with several partners rather than memorising one pairing. Each document draws
    from its own seeded generator, so the pairs do not depend on batches or processes.
    """

    def __init__(self, documents: Any, tokenizer: Any, block_size: int, seed: int) -> None:
        self.documents = documents  # every document, for random second sentences
        self.cls, self.sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.max_tokens = block_size - 3  # room for [CLS], [SEP], [SEP]
        self.seed = seed

    def __call__(self, batch: dict[str, list[Any]], indices: list[int]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"input_ids": [], "token_type_ids": [], "next_sentence_label": []}
        for segments, index in zip(batch["segments"], indices, strict=True):
            for copy in range(NSP_PAIRINGS):
                rng = random.Random(f"{self.seed}-{copy}-{index}")
                for a, b, is_random in self.pairs(segments, index, rng):
                    out["input_ids"].append([self.cls, *a, self.sep, *b, self.sep])
                    out["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(b) + 1))
                    out["next_sentence_label"].append(int(is_random))
        out["attention_mask"] = [[1] * len(ids) for ids in out["input_ids"]]
        return out

    def pairs(self, document: list[list[int]], index: int, rng: random.Random) -> Iterator[Pair]:
        target = self.max_tokens if rng.random() >= SHORT_SEQ_PROB else rng.randint(2, self.max_tokens)
        chunk: list[list[int]] = []
        length = 0
        i = 0
        while i < len(document):
            chunk.append(document[i])
            length += len(document[i])
            if i == len(document) - 1 or length >= target:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for seg in chunk[:a_end] for t in seg]
                if len(chunk) == 1 or rng.random() < 0.5:
                    b = self._random_continuation(index, target - len(a), rng)
                    is_random = True
                    i -= len(chunk) - a_end  # the unused segments start the next chunk
                else:
                    b = [t for seg in chunk[a_end:] for t in seg]
                    is_random = False
                _truncate_pair(a, b, self.max_tokens, rng)
                if a and b:
                    yield a, b, is_random
                chunk, length = [], 0
            i += 1

    def _random_continuation(self, index: int, target: int, rng: random.Random) -> list[int]:
        n = len(self.documents)
        other = index
        for _ in range(10):
            other = rng.randrange(n)
            if other != index:
                break
        segments = self.documents[other]["segments"]
        b: list[int] = []
        if not segments:
            return b
        for segment in segments[rng.randrange(len(segments)) :]:
            b.extend(segment)
            if len(b) >= target:
                break
        return b


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """BERT's ``truncate_seq_pair``: trim the longer side, from the front or the back at random."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def collator(s: PretrainSettings, tokenizer: Any) -> Any:
    """mlm: random masking each time a batch is drawn (fixed masks for validation); clm: padding only."""
    return language_model(s.objective).pretraining_collator(tokenizer, masks(s))


def masks(s: PretrainSettings) -> Masking:
    """How mlm masks: the share chosen for the layout (:func:`~llmtool.training.pretrain_data.masking`)."""
    return Masking(masking(s, bool(s.line_by_line)), s.seed, s.whole_word_mask)
