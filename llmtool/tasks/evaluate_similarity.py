"""``llmtool evaluate`` for sentence encoders: Spearman and Pearson correlation of cosine similarity with gold
scores (the STS measure), on a table of sentence pairs.

A model is evaluated this way when it is a sentence encoder: its folder has sentence-transformers'
``modules.json``, or its config.json records a bare encoder class (``BertModel``, ``RobertaModel``, ...:
no head, so neither a classifier nor a language model).

The data: a .csv/.tsv with a header, the two sentences in ``sentence1``/``sentence2`` (or the columns
--text-column and --text-pair-column name) and the gold score in ``score`` (or ``similarity``, or the
column --label-column names, ``label`` by default); or the STS Benchmark's own headerless .tsv (genre,
file, year, id, score, sentence 1, sentence 2: fields 5-7 read by position, any further fields ignored),
recognised by a first row of seven or more tab-separated fields whose fifth is a number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import Console, check_readable, chunked, decode_lines, open_binary
from llmtool.io.tables import csv_rows, find_column, is_number, is_table
from llmtool.models import ModelRef
from llmtool.settings import EmbedOptions, EvaluateOptions
from llmtool.tasks.embed import Embedder, load_embedder, sentence_reader
from llmtool.tasks.pooling import read_sentence_config

FIRST_COLUMNS = ("sentence1", "text1", "sentence_a", "text_a")
SECOND_COLUMNS = ("sentence2", "text2", "sentence_b", "text_b")
GOLD_COLUMNS = ("score", "similarity", "similarity_score", "gold", "label")

Pair = tuple[int, str, str, float]  # (line, sentence 1, sentence 2, gold score)


def is_sentence_encoder(ref: ModelRef, config: Any) -> bool:
    """A sentence-transformers model, or a bare encoder (its recorded classes all plain ``...Model``)."""
    if ref.folder is not None and (ref.folder / "modules.json").is_file():
        return True
    recorded = getattr(config, "architectures", None) or []
    return bool(recorded) and all(name.endswith("Model") and not name.endswith("LMHeadModel") for name in recorded)


# --------------------------------------------------------------------------- data


def sts_layout(path: str, encoding: str) -> bool:
    """Whether the file is the STS Benchmark's headerless layout (score in field 5, sentences in 6 and 7)."""
    if Path(path).suffix.lower() != ".tsv" or not Path(path).is_file():
        return False
    try:
        for _, line in decode_lines(open_binary(path), path, encoding):
            fields = line.split("\t")
            return len(fields) >= 7 and is_number(fields[4])
    except (OSError, InputError):
        return False  # said by whoever reads it next
    return False


def read_pairs(path: str, opts: EvaluateOptions) -> Iterator[Pair]:
    """The sentence pairs and gold scores of DATA (see the module's docstring for the layouts)."""
    if path == "-" or not is_table(path):
        raise UsageError(f"{path}: a sentence encoder is evaluated on a .csv or .tsv file of sentence pairs and scores")
    check_readable(path)
    if sts_layout(path, opts.encoding):
        return _sts_pairs(path, opts.encoding)
    header, rows = csv_rows(path, opts.encoding)
    first = _column(header, opts.text_column, FIRST_COLUMNS, path, "--text-column")
    second = _column(header, opts.pair_column, SECOND_COLUMNS, path, "--text-pair-column")
    named = opts.label_column if opts.label_column != EvaluateOptions().label_column else None
    gold = _column(header, named, GOLD_COLUMNS, path, "--label-column")

    def pairs() -> Iterator[Pair]:
        for line, row in rows:
            yield line, row[first], row[second], _score(row[gold], path, line)

    return pairs()


def _column(header: list[str], named: str | None, candidates: tuple[str, ...], path: str, flag: str) -> int:
    if named is not None:
        return find_column(header, named, path, flag)
    for name in candidates:
        if name in header:
            return header.index(name)
    columns = ", ".join(repr(h) for h in header)
    raise InputError(f"no {' or '.join(repr(c) for c in candidates[:2])} column; pass {flag} (columns: {columns})",
                     source=path, line=1)  # fmt: skip


def _sts_pairs(path: str, encoding: str) -> Iterator[Pair]:
    for line, text in decode_lines(open_binary(path), path, encoding):
        if not text.strip():
            continue
        fields = text.split("\t")
        if len(fields) < 7:
            raise InputError(f"{len(fields)} fields; the STS Benchmark layout has 7 (score, then the sentences, "
                             "in fields 5-7)", source=path, line=line)  # fmt: skip
        yield line, fields[5], fields[6], _score(fields[4], path, line)


def _score(cell: str, path: str, line: int) -> float:
    if not is_number(cell):
        raise InputError(f"gold score {cell!r} is not a number", source=path, line=line)
    return float(cell)


# --------------------------------------------------------------------------- metrics


def ranks(values: Any) -> Any:
    """1-based ranks, ties given their average rank (as scipy.stats.rankdata)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1]
    ends = np.r_[starts[1:], len(values)]
    out = np.empty(len(values), dtype=np.float64)
    for start, end in zip(starts, ends, strict=True):
        out[order[start:end]] = (start + end + 1) / 2
    return out


def pearson(x: Any, y: Any) -> float:
    import numpy as np

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def spearman(x: Any, y: Any) -> float:
    return pearson(ranks(x), ranks(y))


# --------------------------------------------------------------------------- evaluation


def evaluate_similarity(data: str, ref: ModelRef, opts: EvaluateOptions, console: Console) -> dict[str, Any]:
    """Embed both sentences of each pair; correlate their cosine similarity with the gold scores."""
    import numpy as np

    from llmtool.engines import choice as engines
    from llmtool.tasks.pooling import normalize

    if opts.plot is not None:
        raise UsageError("--plot draws a classifier's confusion matrix; a sentence encoder has none")
    pairs = read_pairs(data, opts)  # the header and columns are checked before the model loads
    sentence = read_sentence_config(sentence_reader(ref), ref.name)
    tokenizer, encoder = engines.open_encoder(ref, "embed", load_embedder)
    embedder = Embedder(
        tokenizer, encoder, sentence, EmbedOptions(batch_size=opts.batch_size, max_length=opts.max_length)
    )
    cosines: list[float] = []
    gold: list[float] = []
    window = max(1, opts.batch_size * 8)
    with console.progress("pairs") as bar:
        for chunk in chunked(pairs, window):
            first, cut1 = embedder.encode([p[1] for p in chunk])
            second, cut2 = embedder.encode([p[2] for p in chunk])
            embedder.truncated += sum(cut1) + sum(cut2)
            cosines.extend((normalize(first) * normalize(second)).sum(axis=1).tolist())
            gold.extend(p[3] for p in chunk)
            bar.advance(len(chunk))
    embedder.warn_truncated()
    if len(gold) < 2:
        raise InputError("fewer than two sentence pairs: no correlation to compute", source=data)
    return {
        "task": "similarity",
        "model": ref.name,
        "data": data,
        "pairs": len(gold),
        "spearman": spearman(cosines, gold),
        "pearson": pearson(np.asarray(cosines), np.asarray(gold)),
    }


def similarity_summary(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines of the plain report (and the Rich table)."""
    return [
        ("pairs", str(result["pairs"])),
        ("spearman", f"{result['spearman']:.4f}"),
        ("pearson", f"{result['pearson']:.4f}"),
    ]


def similarity_tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    for key in ("pairs", "spearman", "pearson"):
        yield [key, "", "", result[key]]
