"""``llmtool score`` on an encoder-decoder: log P(target | source), the sum over the target's tokens
(its end token included) of log P(token | source, the target tokens before it).

Input: ``SOURCE<TAB>TARGET`` lines, or a .csv/.tsv/.jsonl file of sources and targets
(:mod:`llmtool.tasks.seq2seq_pairs`). The target is tokenized as a target (Marian's target
sentencepiece model, where it has one); a source longer than the model takes is truncated, with a
message. The records are score's, with the target beside the input.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from llmtool.engines import choice as engines
from llmtool.engines.base import Seq2SeqEngine, Tokenizer
from llmtool.io.console import say
from llmtool.io.inputs import Record
from llmtool.metrics import perplexity, total_record
from llmtool.models import ModelRef, max_input_length
from llmtool.settings import ScoreOptions
from llmtool.tasks.base import BatchedTask, Invalid
from llmtool.tasks.seq2seq import load_torch, require_sentencepiece

Encoded = tuple[list[int], list[int]]  # source ids, target ids
Sums = tuple[float, int]


def target_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Target token ids as the model's labels: ``text_target`` where the tokenizer has one (Marian's
    target vocabulary), else as a source (T5, BART: the same tokenizer both ways)."""
    call = tokenizer.__call__
    if "text_target" in inspect.signature(call).parameters:
        ids = call(text_target=texts)["input_ids"]  # type: ignore[call-arg]
    else:
        ids = tokenizer(texts)["input_ids"]
    return [list(row) for row in ids]


class Seq2SeqScorer(BatchedTask[Record, Encoded, Sums]):
    """An encoder-decoder (any engine) that turns ``SOURCE<TAB>TARGET`` records into likelihood records."""

    def __init__(self, tokenizer: Tokenizer, engine: Seq2SeqEngine, options: ScoreOptions, name: str = "") -> None:
        options.check()
        super().__init__(options.batch_size, options.window, options.skip_invalid)
        self.tokenizer, self.engine, self.options, self.name = tokenizer, engine, options, name
        limit = max_input_length(tokenizer, engine)
        self.max_length = min(options.max_length or limit, limit)
        self.lines = 0
        self.tokens = 0
        self.log_likelihood = 0.0

    def __call__(self, records: Iterable[Record]) -> Iterator[dict[str, Any]]:
        yield from super().__call__(records)
        if self.options.total:
            yield total_record(self.lines, self.tokens, self.log_likelihood)

    def encode(self, chunk: list[Record]) -> Sequence[Encoded | Invalid]:
        split = [r.text.split("\t") for r in chunk]
        good = [i for i, fields in enumerate(split) if len(fields) >= 2 and fields[0].strip() and fields[1].strip()]
        sources: list[list[int]] = self.tokenizer([split[i][0] for i in good])["input_ids"] if good else []
        targets = target_ids(self.tokenizer, [split[i][1] for i in good]) if good else []
        out: list[Encoded | Invalid] = [Invalid("expected SOURCE<TAB>TARGET, with text on both sides")] * len(chunk)
        for i, source, target in zip(good, sources, targets, strict=True):
            source = list(source)
            if len(source) > self.max_length:
                record = chunk[i]
                say(
                    f"{record.source}:{record.line}: the source is {len(source)} tokens; only its first "
                    f"{self.max_length} are read"
                )
                source = list(self.tokenizer(split[i][0], truncation=True, max_length=self.max_length)["input_ids"])
            out[i] = (source, target)
        return out

    def length(self, encoded: Encoded) -> int:
        return len(encoded[0]) + len(encoded[1])

    def predict(self, batch: list[Encoded]) -> Sequence[Sums]:
        values = self.engine.token_logprobs([e[0] for e in batch], [e[1] for e in batch])
        return [(float(v.astype("float64").sum()), len(v)) for v in values]

    def record(self, item: Record, result: Sums) -> dict[str, Any]:
        log_likelihood, tokens = result
        self.lines += 1
        self.tokens += tokens
        self.log_likelihood += log_likelihood
        source, target = item.text.split("\t")[:2]
        return {
            "index": item.index,
            "input": source,
            "target": target,
            "tokens": tokens,
            "log_likelihood": log_likelihood,
            "perplexity": perplexity(log_likelihood, tokens),
        }


def open_seq2seq_scorer(ref: ModelRef, options: ScoreOptions) -> Seq2SeqScorer:
    """The scorer over a located encoder-decoder, on the engine :mod:`llmtool.engines.choice` chooses."""
    require_sentencepiece(ref)
    tokenizer, engine = engines.open_seq2seq(ref, "score-seq2seq", load_torch)
    return Seq2SeqScorer(tokenizer, engine, options, ref.name)
