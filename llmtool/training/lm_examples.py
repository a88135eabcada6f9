"""Language-model examples, shared by ``finetune`` (clm/mlm) and ``pretrain``: token ids per text,
packing into blocks, BERT's masking (once for validation, per epoch for training), and the
cache keys and process counts of the ``datasets.map`` calls that build them.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

BIG_DATA_ROWS = 50_000  # from this many rows, tokenization runs in several processes
PACK_ROWS = 1000  # rows concatenated and cut into blocks together (the remainder of each group is dropped)


def num_proc(requested: int | None, rows: int) -> int | None:
    """Tokenization processes for ``datasets.map``: as asked, else every core (up to 8) for big data."""
    if requested is not None:
        return requested if requested > 1 else None
    cores = os.cpu_count() or 1
    return min(cores, 8) if rows >= BIG_DATA_ROWS and cores > 1 else None


def fingerprint(key: list[Any]) -> str:
    """A ``datasets`` fingerprint from a JSON-able key: the same inputs and settings, the same cache."""
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()[:32]


def token_ids(tokenizer: Any, texts: list[str], task: str) -> list[list[int]]:
    """Token ids per text: with the model's special tokens for mlm ([CLS] .. [SEP]); for clm, text
    followed by the end-of-text token, so that packed documents stay apart."""
    if task == "mlm":
        return list(tokenizer(texts, add_special_tokens=True)["input_ids"])
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [[*list(x), eos] if eos is not None else list(x) for x in ids]


class BlockPacker:
    """run_clm/run_mlm's ``group_texts``: concatenate a batch of texts' ids and cut them into equal blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        stream = [token for ids in batch["input_ids"] for token in ids]
        usable = len(stream) // self.limit * self.limit  # the remainder of the batch is dropped
        blocks = [stream[i : i + self.limit] for i in range(0, usable, self.limit)]
        return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]}


class LineEncoder:
    """Token ids per text; truncated to ``limit`` (keeping mlm's closing [SEP]) when one is given."""

    def __init__(self, tokenizer: Any, limit: int | None, task: str) -> None:
        self.tokenizer, self.limit, self.task = tokenizer, limit, task

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        ids = token_ids(self.tokenizer, batch["text"], self.task)
        if self.limit is not None:
            ids = [x[: self.limit] for x in ids]
            if self.task == "mlm":
                sep = self.tokenizer.sep_token_id
                ids = [[*x[:-1], sep] if sep is not None and x and x[-1] != sep else x for x in ids]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}


def mask_once(dataset: Any, tokenizer: Any, probability: float, seed: int, whole_word: bool = False) -> Any:
    """Mask the validation set once, with a fixed seed: every evaluation then scores the same task,
    so validation losses are comparable across epochs and across a resume."""
    import numpy as np

    masker = Masker(tokenizer, probability, whole_word)

    def mask(batch: dict[str, list[Any]], indices: list[int]) -> dict[str, Any]:
        inputs, labels = [], []
        for ids, index in zip(batch["input_ids"], indices, strict=True):
            masked, label = masker(ids, np.random.default_rng([seed, index]))
            inputs.append(masked)
            labels.append(label)
        return {"input_ids": inputs, "labels": labels}

    return dataset.map(mask, batched=True, with_indices=True, desc=None)


class Masker:
    """BERT's masking of one example, as its ``create_pretraining_data.py`` does it: ``probability`` of
    the non-special tokens, rounded, and at least one, are chosen at random; of those, 80% become
    [MASK], 10% a random token, 10% stay. Returns the inputs and the labels (-100: not chosen).

    Exactly that many, not each token with that probability (Transformers' collator): on a line of 7
    tokens, a coin per token leaves a third of the lines (0.85^7) with nothing to learn from.

    ``whole_word``: words are chosen, not tokens, and all the tokens of a chosen word are masked
    (BERT's whole-word masking). A word is a token and the WordPiece continuations (``##...``) after
    it; a run of Chinese characters is cut into words by jieba (the ``zh`` extra), else each
    character is a word. The words come from the token ids alone, so masking stays a function of
    (seed, epoch, tokens) and a resumed run masks as the uninterrupted one did."""

    def __init__(self, tokenizer: Any, probability: float, whole_word: bool = False) -> None:
        self.special = sorted(set(tokenizer.all_special_ids))
        self.mask_id, self.vocab, self.probability = tokenizer.mask_token_id, len(tokenizer), probability
        self.words = WordSplitter(tokenizer) if whole_word else None

    def __call__(self, ids: Any, rng: Any) -> tuple[list[int], list[int]]:
        import numpy as np

        ids = np.asarray(ids)
        candidates = np.flatnonzero(~np.isin(ids, self.special))
        chosen = np.zeros(len(ids), dtype=bool)
        if self.words is None:
            count = min(len(candidates), max(1, round(len(candidates) * self.probability)))
            chosen[rng.choice(candidates, size=count, replace=False) if count else []] = True
        else:  # the same count of words, each masked whole
            word = self.words(ids)
            words = np.unique(word[candidates])
            words = words[words >= 0]
            count = min(len(words), max(1, round(len(words) * self.probability)))
            picked = rng.choice(words, size=count, replace=False) if count else words[:0]
            chosen = np.isin(word, picked) & ~np.isin(ids, self.special)
        label = np.where(chosen, ids, -100)
        roll = rng.random(len(ids))
        ids = np.where(chosen & (roll < 0.8), self.mask_id, ids)  # 80% [MASK]
        swap = chosen & (roll >= 0.8) & (roll < 0.9)  # 10% a random token, 10% unchanged
        ids = np.where(swap, rng.integers(0, self.vocab, len(ids)), ids)
        return ids.tolist(), label.tolist()


class WordSplitter:
    """Word numbers for the tokens of one example (special tokens: -1), for whole-word masking."""

    def __init__(self, tokenizer: Any) -> None:
        import numpy as np

        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.tokens = [str(t) if t is not None else "" for t in tokens]
        self.continuation = np.array([t.startswith("##") and len(t) > 2 for t in self.tokens])
        self.chinese = np.array([len(t) == 1 and _chinese(t) for t in self.tokens])
        self.special = sorted(set(tokenizer.all_special_ids))
        self.segment = _segmenter()

    def __call__(self, ids: Any) -> Any:
        import numpy as np

        ids = np.asarray(ids)
        starts = ~self.continuation[ids]
        if self.segment is not None:
            chinese = self.chinese[ids]
            position = 0
            while position < len(ids):
                if not chinese[position]:
                    position += 1
                    continue
                end = position
                while end < len(ids) and chinese[end]:
                    end += 1
                run = "".join(self.tokens[i] for i in ids[position:end])
                starts[position:end] = False
                for word in self.segment(run):
                    starts[position] = True
                    position += len(word)
        special = np.isin(ids, self.special)
        starts |= special
        words = np.cumsum(starts)
        words[special] = -1
        return words


def _chinese(char: str) -> bool:
    return 0x3400 <= ord(char) <= 0x9FFF or 0xF900 <= ord(char) <= 0xFAFF


def _segmenter() -> Any:
    """jieba's word cut (deterministic: dictionary only, no HMM guesses), or None without the zh extra."""
    try:
        import jieba
    except ImportError:
        return None
    import logging

    jieba.setLogLevel(logging.WARNING)
    return lambda text: jieba.lcut(text, HMM=False)


class MlmCollator:
    """Masking for training batches, drawn afresh for each example in each epoch; validation batches
    arrive masked and are only padded.

    The draws come from a generator seeded by (seed, epoch, the example's tokens), not from the global
    random state: so the masks do not depend on batch order or on which batches a resumed run skips,
    and a run resumed from a checkpoint masks exactly as the uninterrupted run did. The training
    machinery tells the collator the epoch (``set_epoch``, like a distributed sampler).
    """

    def __init__(self, tokenizer: Any, probability: float, seed: int = 42, whole_word: bool = False) -> None:
        from transformers import DataCollatorForTokenClassification

        self.masker = Masker(tokenizer, probability, whole_word)
        self.padding = DataCollatorForTokenClassification(tokenizer)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        if "labels" in features[0]:
            return self.padding(features)
        import zlib

        import numpy as np

        masked = []
        for feature in features:
            key = zlib.crc32(np.asarray(feature["input_ids"], dtype=np.int64).tobytes())
            ids, labels = self.masker(feature["input_ids"], np.random.default_rng([self.seed, self.epoch, key]))
            masked.append({**feature, "input_ids": ids, "labels": labels})
        return self.padding(masked)
