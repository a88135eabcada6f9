"""What every batched inference task shares: locating its model (and refusing one of the wrong kind),
and the loop from input records to output records.

The loop (:class:`BatchedTask`): read a window of records ahead (``batch_size * window``), encode
them at once, cut the valid ones into batches of similar length (little padding), predict, and give
the records back in input order, a window at a time; an input that cannot be processed stops the run
with its location (exit 2), or with ``skip_invalid`` becomes an error record. A task says only how to
encode, how long an encoding is, how to predict a batch and how to write a result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from llmtool.engines import choice as engines
from llmtool.errors import InputError, ModelError
from llmtool.io.inputs import chunked, error_record
from llmtool.kinds import model_kind
from llmtool.models import ModelRef
from llmtool.settings import ModelOptions
from llmtool.tasks.batching import by_length
from llmtool.tasks.registry import command, refusal


def locate(name: str, options: ModelOptions) -> ModelRef:
    """The model of command ``name``, located (failing fast when it is missing), after checking from its
    config.json that it is a kind of model the command runs (see :mod:`llmtool.tasks.registry`)."""
    ref = engines.prepare(options)
    reason = refusal(command(name), ref.name, model_kind(ref.folder))
    if reason is not None:
        raise ModelError(reason)
    return ref


class Item(Protocol):
    """An input record: where it came from, for messages and error records."""

    @property
    def index(self) -> int: ...
    @property
    def line(self) -> int: ...
    @property
    def source(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Invalid:
    """An input that cannot be processed, and why (the message of its error)."""

    reason: str


ItemT = TypeVar("ItemT", bound=Item)
EncodedT = TypeVar("EncodedT")
ResultT = TypeVar("ResultT")


class BatchedTask(Generic[ItemT, EncodedT, ResultT]):
    """The shared loop; subclasses give :meth:`encode`, :meth:`length`, :meth:`predict`, :meth:`record`
    (or override :meth:`predict_all` when their batches are not one per input, as score's windows)."""

    def __init__(self, batch_size: int, window: int, skip_invalid: bool = False) -> None:
        self.batch_size = batch_size
        self.window = window
        self.skip_invalid = skip_invalid

    def __call__(self, items: Iterable[ItemT]) -> Iterator[dict[str, Any]]:
        """Output records in input order."""
        for _, record in self.results(items):
            yield record

    def results(self, items: Iterable[ItemT]) -> Iterator[tuple[ItemT, dict[str, Any]]]:
        """(input, output record) pairs in input order, streamed a window at a time."""
        for chunk in chunked(items, max(1, self.batch_size * self.window)):
            yield from self.run(chunk)

    def run(self, chunk: list[ItemT]) -> Iterator[tuple[ItemT, dict[str, Any]]]:
        encoded = self.encode(chunk)
        valid = {i: e for i, e in enumerate(encoded) if not isinstance(e, Invalid)}
        results = self.predict_all(valid)
        for i, item in enumerate(chunk):
            outcome = encoded[i]
            if isinstance(outcome, Invalid):
                if not self.skip_invalid:
                    raise InputError(outcome.reason, source=item.source, line=item.line)
                yield item, error_record(item, outcome.reason)
                continue
            yield item, self.record(item, results[i])

    def predict_all(self, encoded: dict[int, EncodedT]) -> dict[int, ResultT]:
        """Results for the valid inputs of a window (by position), predicted in batches of similar length."""
        results: dict[int, ResultT] = {}
        for batch in by_length(list(encoded), lambda i: self.length(encoded[i]), self.batch_size):
            for i, result in zip(batch, self.predict([encoded[i] for i in batch]), strict=True):
                results[i] = result
        return results

    # ------------------------------------------------------------------ what a task says

    def encode(self, chunk: list[ItemT]) -> Sequence[EncodedT | Invalid]:
        """Each input encoded (token ids, ...), or why it is invalid."""
        raise NotImplementedError

    def length(self, encoded: EncodedT) -> int:
        """How long an encoding is, for batching by length."""
        raise NotImplementedError

    def predict(self, batch: list[EncodedT]) -> Sequence[ResultT]:
        """The result of each encoding of a batch, in order."""
        raise NotImplementedError

    def record(self, item: ItemT, result: ResultT) -> dict[str, Any]:
        """The output record of an input."""
        raise NotImplementedError
