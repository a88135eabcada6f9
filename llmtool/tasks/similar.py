"""``llmtool similar``: rank input lines by cosine similarity to one or more queries.

The input is embedded a window at a time (:class:`llmtool.tasks.embed.Embedder`) and each window's
vectors are dropped once scored: per query, a heap keeps the ``k`` best lines so far, so memory stays
flat however long the input (``--all`` keeps every line's score and text, never the vectors).
Queries are few and held in memory. Ties go to the earlier line.

Prompts follow sentence-transformers' ``encode_query``/``encode_document``: queries get the model's
``query`` prompt and input lines its ``document`` (else ``passage``, else ``corpus``) prompt, when
the model has them; ``--query-prompt``/``--prompt`` (or the ``-name`` forms) say otherwise.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from llmtool.errors import UsageError
from llmtool.io.streams import Formatter, Record, as_records
from llmtool.settings import ModelOptions, SimilarOptions
from llmtool.tasks.embed import DEFAULT_MODEL, DOCUMENT_PROMPTS, Embedder, choose_prompt, open_embedder
from llmtool.tasks.pooling import normalize

Hit = tuple[float, int, Record]  # (score, -index, the input): a min-heap pops the worst, a later line first on ties


class Ranking:
    """The best lines for each query, fed one window of vectors at a time."""

    def __init__(self, queries: Any, k: int | None) -> None:
        self.queries = queries  # unit-length query vectors, queries x dim
        self.k = k  # None: keep every line
        self.heaps: list[list[Hit]] = [[] for _ in range(len(queries))]

    def add(self, records: Sequence[Record], vectors: Any) -> None:
        import numpy as np

        if not records:
            return
        scores = normalize(vectors) @ self.queries.T  # lines x queries
        for q, heap in enumerate(self.heaps):
            column = scores[:, q]
            if self.k is None:
                picks: Any = range(len(records))
            elif len(column) > self.k:  # only this window's k best can enter the heap (stable: ties to the earlier)
                picks = np.argsort(-column, kind="stable")[: self.k]
            else:
                picks = range(len(column))
            for i in picks:
                hit = (float(column[i]), -records[i].index, records[i])
                if self.k is None or len(heap) < self.k:
                    heapq.heappush(heap, hit)
                elif hit[:2] > heap[0][:2]:
                    heapq.heapreplace(heap, hit)

    def best(self, q: int) -> list[Hit]:
        return sorted(self.heaps[q], key=lambda h: h[:2], reverse=True)


def rank(
    embedder: Embedder, queries: Sequence[str], records: Iterable[Record], options: SimilarOptions, query_prompt: str
) -> Iterator[dict[str, Any]]:
    """One record per query, in query order, once the whole input has been read."""
    vectors, _ = embedder.encode(list(queries), prompt=query_prompt)
    ranking = Ranking(normalize(vectors), None if options.all else options.top_k)
    for chunk, chunk_vectors in embedder.batches(records):
        ranking.add(chunk, chunk_vectors)
    for q, query in enumerate(queries):
        results = [
            {"rank": n, "score": round(score, 6), "index": r.index, "line": r.line, "input": r.text}
            for n, (score, _, r) in enumerate(ranking.best(q), start=1)
        ]
        yield {"query_index": q, "query": query, "results": results}


# --------------------------------------------------------------------------- formats


def formatter(several: bool) -> Formatter:
    """text: ``SCORE<TAB>LINE<TAB>TEXT`` per match, best first; with several queries each group starts with
    ``# QUERY`` and groups are separated by a blank line. tsv: a row per match."""

    def text(result: dict[str, Any]) -> str:
        rows = [f"{h['score']:.4f}\t{h['line']}\t{h['input']}" for h in result["results"]]
        if several:
            rows.insert(0, f"# {result['query']}")
            if result["query_index"] > 0:
                rows.insert(0, "")
        return "\n".join(rows)

    def tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
        for h in result["results"]:
            yield [result["query_index"], result["query"], h["rank"], f"{h['score']:.6f}", h["line"], h["index"],
                   h["input"]]  # fmt: skip

    return Formatter(
        text=text,
        tsv_header=("query_index", "query", "rank", "score", "line", "index", "input"),
        tsv_rows=tsv_rows,
    )


# --------------------------------------------------------------------------- Python API


def similar(
    queries: str | Sequence[str],
    inputs: Iterable[str] | Iterable[Record],
    *,
    model: str = "",
    options: SimilarOptions | None = None,
    model_options: ModelOptions | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Rank ``inputs`` by cosine similarity to each query; yields ``{"query_index", "query", "results":
    [{"rank", "score", "index", "line", "input"}]}`` per query (what ``llmtool similar --json`` prints).
    ``kwargs`` are :class:`SimilarOptions` fields (``top_k=5``).

    >>> next(similar("a cat", ["a dog", "a kitten", "a car"], top_k=1))["results"][0]["input"]  # doctest: +SKIP
    'a kitten'
    """
    opts = options or SimilarOptions(**kwargs)
    opts.check()
    query_list = [queries] if isinstance(queries, str) else [q for q in queries if q.strip()]
    if not query_list or not all(q.strip() for q in query_list):
        raise UsageError("no query: give a QUERY or --queries FILE with at least one line")
    embedder = open_embedder(model_options or ModelOptions(model=model or DEFAULT_MODEL), opts, "similar")
    sentence = embedder.sentence
    embedder.prompt = choose_prompt(opts.prompt, opts.prompt_name, sentence, DOCUMENT_PROMPTS)
    query_prompt = choose_prompt(opts.query_prompt, opts.query_prompt_name, sentence, ("query",))
    return rank(embedder, query_list, as_records(inputs), opts, query_prompt)
