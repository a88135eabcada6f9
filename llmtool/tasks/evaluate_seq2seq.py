"""``llmtool evaluate`` on an encoder-decoder: the model translates (or summarizes) each source of a
table, and its outputs are scored against the references, corpus-level: BLEU and chrF by sacrebleu
(with their signatures, so that a figure can be reproduced), ROUGE-1/2/L by
:mod:`llmtool.tasks.rouge` (rouge-score's definitions).

DATA: ``SOURCE<TAB>REFERENCE`` lines (Tatoeba's fra-eng.txt as it comes), or a .csv/.tsv/.jsonl file
(:mod:`llmtool.tasks.seq2seq_pairs`; ``--text-column`` names the source, ``--pair-column`` the
reference). Summaries when the columns say so (summary, dialogue, article...): the model's
``summarization`` settings and prefix apply; else translation. BLEU tokenizes with sacrebleu's
``13a``, or ``zh`` when most of the references' characters are Chinese, Japanese or Korean.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llmtool.errors import InputError, UsageError
from llmtool.io.console import Console
from llmtool.io.inputs import Record, chunked
from llmtool.io.streams import read_records
from llmtool.models import ModelRef
from llmtool.settings import EvaluateOptions, SummarizeOptions, TranslateOptions
from llmtool.tasks.rouge import corpus_rouge
from llmtool.tasks.seq2seq import Seq2Seq, open_model
from llmtool.tasks.seq2seq_pairs import SUMMARY_COLUMNS, Pair, is_pair_file, pairs_of_records, read_pair_file

EXTRA = "pip install 'llmtool[translate]'"


def read_pairs(data: str, opts: EvaluateOptions) -> tuple[str, Iterator[Pair]]:
    """("translate" or "summarize", the (source, reference) pairs of DATA)."""
    if is_pair_file(data):
        (source, target), pairs = read_pair_file(data, opts.text_column, opts.pair_column, opts.encoding)
        summary = source.lower() in SUMMARY_COLUMNS or target.lower() in SUMMARY_COLUMNS
        return ("summarize" if summary else "translate"), pairs
    if opts.text_column or opts.pair_column:
        raise UsageError("--text-column/--pair-column name columns of a .csv, .tsv or .jsonl file")
    return "translate", pairs_of_records(read_records(None, data, None, encoding=opts.encoding))


def bleu_tokenizer(references: list[str]) -> str:
    """sacrebleu's ``zh`` tokenizer when most characters of the references are CJK, else its default ``13a``."""
    text = "".join(references)
    letters = [c for c in text if not c.isspace()]
    cjk = sum(1 for c in letters if "\u2e80" <= c <= "\u9fff" or "\uac00" <= c <= "\ud7af" or "\uf900" <= c <= "\ufaff")
    return "zh" if letters and cjk * 2 > len(letters) else "13a"


def corpus_scores(predictions: list[str], references: list[str]) -> dict[str, Any]:
    """BLEU and chrF (sacrebleu, with signatures) and ROUGE-1/2/L F-measures, corpus-level."""
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError:
        raise UsageError(f"evaluating an encoder-decoder needs sacrebleu: {EXTRA}") from None
    bleu = BLEU(tokenize=bleu_tokenizer(references))
    chrf = CHRF()
    bleu_score = bleu.corpus_score(predictions, [references])
    chrf_score = chrf.corpus_score(predictions, [references])
    return {
        "bleu": bleu_score.score,
        "bleu_signature": str(bleu.get_signature()),
        "chrf": chrf_score.score,
        "chrf_signature": str(chrf.get_signature()),
        **corpus_rouge(references, predictions),
    }


def evaluate_seq2seq(data: str, ref: ModelRef, opts: EvaluateOptions, console: Console) -> dict[str, Any]:
    """Generate for each source with the model's own settings, then score against the references."""
    if opts.plot is not None:
        raise UsageError("--plot draws a classifier's confusion matrix; an encoder-decoder has none")
    try:
        import sacrebleu  # noqa: F401  (checked before the model loads)
    except ImportError:
        raise UsageError(f"evaluating an encoder-decoder needs sacrebleu: {EXTRA}") from None
    task, pairs = read_pairs(data, opts)
    options: TranslateOptions | SummarizeOptions
    options = SummarizeOptions(batch_size=opts.batch_size, max_length=opts.max_length)
    if task == "translate":
        options = TranslateOptions(batch_size=opts.batch_size, max_length=opts.max_length)
    runner: Seq2Seq
    runner, _ = open_model("evaluate", task, options, ref.options)
    predictions: list[str] = []
    references: list[str] = []
    with console.progress("pairs") as bar:
        for chunk in chunked(pairs, max(1, opts.batch_size * 4)):
            records = [Record(p.index, p.line, p.source, p.where) for p in chunk]
            for result in runner(records):
                predictions.append(result["generations"][0]["text"])
            references.extend(p.target for p in chunk)
            bar.advance(len(chunk))
    if not references:
        raise InputError("no (source, reference) pairs", source=data)
    return {
        "task": "seq2seq",
        "generation": task,
        "model": ref.name,
        "data": data,
        "pairs": len(references),
        **corpus_scores(predictions, references),
    }


def seq2seq_summary(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines of the plain report (and the Rich table)."""
    return [
        ("pairs", str(result["pairs"])),
        ("BLEU", f"{result['bleu']:.2f}"),
        ("chrF", f"{result['chrf']:.2f}"),
        ("ROUGE-1", f"{result['rouge1']:.4f}"),
        ("ROUGE-2", f"{result['rouge2']:.4f}"),
        ("ROUGE-L", f"{result['rougeL']:.4f}"),
        ("BLEU signature", result["bleu_signature"]),
        ("chrF signature", result["chrf_signature"]),
    ]


def seq2seq_tsv_rows(result: dict[str, Any]) -> Iterator[list[object]]:
    for key in ("pairs", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "bleu_signature", "chrf_signature"):
        yield [key, "", "", result[key]]
