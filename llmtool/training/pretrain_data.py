"""``pretrain``'s corpus: files -> documents (Arrow, on disk) -> the layout of the examples, and the tokenizer.

A ``.txt`` file is one sentence or line per line, a blank line between documents; a CSV or JSONL
text column is one document per row. Each file is checked like ``finetune``'s data
(:mod:`llmtool.training.data`) before anything is read in full. The layout (lines, packed blocks,
the share masked) is chosen from the corpus when the flags leave it open (:func:`choose_layout`);
the tokenizer is trained on the corpus (:mod:`llmtool.training.tokenizer_train`) unless one is given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmtool.errors import InputError, ModelError, UsageError
from llmtool.settings import MIN_FREQUENCY, VOCAB_SIZE, PretrainSettings
from llmtool.training import data
from llmtool.training.data import ColumnSpec, Layout, quiet_datasets, resolve_layout
from llmtool.training.defaults import (
    BLOCK,
    FEW_BLOCKS,
    FEW_EXAMPLES,
    LINES_SAMPLE,
    MASK_BLOCKS,
    MASK_LINES,
    POSITIONS,
    SENTENCE_ENDS,
    SENTENCE_LINES_SHARE,
    SHORT_DOCUMENT_LINES,
    SHORT_LINES_SHARE,
    SMALL_BLOCK,
)
from llmtool.training.tokenizer_train import TokenizerOptions, check_pretrained_tokenizer, train_tokenizer

TOKENIZER_DIR = "tokenizer"  # where the trained tokenizer is kept (in the run's cache) for the other processes
MAX_DOCUMENT_LINES = 1000  # a longer document is cut into pieces of this many lines (memory stays bounded)


# --------------------------------------------------------------------------- the layout of the examples


def block(settings: PretrainSettings) -> int:
    """Tokens per example: --block-size, else BLOCK (choose_layout may choose SMALL_BLOCK)."""
    return settings.block_size or BLOCK


def choose_layout(settings: PretrainSettings, documents: Any) -> PretrainSettings:
    """--line-by-line / --pack as given; else lines for a corpus of short sentences, one per line
    (SHORT_LINES_SHARE of the lines fit one example, SENTENCE_LINES_SHARE end a sentence); else packing.
    --nsp builds sentence pairs either way. Also the share masked, when not given: MASK_LINES for
    lines (15% of a 7-token line is one token, and learning takes several times the steps), else
    BERT's MASK_BLOCKS."""
    if settings.line_by_line is not None or settings.nsp:
        lines = bool(settings.line_by_line)
        return dataclasses.replace(settings, line_by_line=lines, mlm_probability=masking(settings, lines))
    seen = short = sentences = tokens = docs = 0
    for batch in documents.iter(batch_size=1000):
        for lines in batch["lines"]:
            docs += 1
            for line in lines:
                seen += 1
                estimate = estimated_tokens(line)
                tokens += estimate + 1  # and a separator
                short += estimate <= block(settings)
                sentences += line.rstrip().endswith(SENTENCE_ENDS)
        if seen >= LINES_SAMPLE:
            break
    short_lines = seen > 0 and short >= SHORT_LINES_SHARE * seen
    lines = short_lines and sentences >= SENTENCE_LINES_SHARE * seen
    if short_lines and not lines and tokens // block(settings) < FEW_EXAMPLES:
        lines = True  # packing would leave so few blocks that they are memorised by position (plan.warnings)
    related = docs > 1 and seen <= SHORT_DOCUMENT_LINES * docs  # short documents: neighbouring lines belong together
    if (
        lines
        and related
        and settings.objective == "mlm"
        and settings.block_size is None
        and tokens // SMALL_BLOCK >= FEW_BLOCKS
    ):
        # masked LM on short documents of short lines learns several times faster from small packed blocks
        # (a few lines of one document each, 15% masked) than from one line each; on one stream of
        # unrelated lines, fixed blocks are memorised instead: README "Measured"
        packed = masking(settings, False)
        return dataclasses.replace(settings, line_by_line=False, block_size=SMALL_BLOCK, mlm_probability=packed)
    return dataclasses.replace(settings, line_by_line=lines, mlm_probability=masking(settings, lines))


def estimated_tokens(line: str) -> int:
    """Tokens a trained vocabulary makes of ``line``, before there is one: about 1.3 per space-separated
    word, and one per Chinese, Japanese or Korean character (scripts written without spaces, which
    WordPiece splits into characters), so that "a short line" means the same in every language."""
    wide = sum(1 for ch in line if _is_wide(ch))
    words = len("".join(" " if _is_wide(ch) else ch for ch in line).split()) if wide else len(line.split())
    return words * 4 // 3 + wide


def _is_wide(ch: str) -> bool:
    """A CJK ideograph, kana, hangul syllable or full-width punctuation mark (BERT's "Chinese character"
    ranges, and the punctuation written between them)."""
    code = ord(ch)
    return (
        0x3000 <= code <= 0x30FF  # CJK punctuation, hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul syllables
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF00 <= code <= 0xFFEF  # full-width forms
        or 0x20000 <= code <= 0x2FA1F  # CJK extensions B-F, compatibility supplement
    )


def masking(settings: PretrainSettings, lines: bool) -> float:
    if settings.mlm_probability is not None:
        return settings.mlm_probability
    return MASK_LINES if lines else MASK_BLOCKS


# --------------------------------------------------------------------------- corpus -> documents


def corpus_layouts(paths: Sequence[str], settings: PretrainSettings) -> list[Layout]:
    """Each corpus file checked (exists, not empty, header and text column) before anything is read in full."""
    if not paths:
        raise UsageError("give at least one CORPUS file")
    files = [*paths, settings.valid] if settings.valid else list(paths)
    layouts = []
    for path in files:
        table = Path(path).suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson")
        spec = ColumnSpec(text=settings.text_column if table else None)
        layouts.append(resolve_layout(path, settings.objective, spec, settings.encoding))  # type: ignore[arg-type]
    return layouts


def iter_documents(layout: Layout) -> Iterator[dict[str, Any]]:
    """``{"lines": [...], "line": N}`` per document: a .txt file's blank-line-separated paragraphs
    (cut every MAX_DOCUMENT_LINES lines), or one table row (its text's lines)."""
    from llmtool.io.streams import decode_lines
    from llmtool.training.data import iter_rows

    if layout.kind != "lines":
        for row in iter_rows(layout):
            yield {"lines": [line for line in row["text"].splitlines() if line.strip()], "line": row["line"]}
        return
    lines: list[str] = []
    start = 0
    with open(layout.path, "rb") as binary:
        for lineno, line in decode_lines(binary, layout.path, layout.encoding):
            if line.strip():
                if not lines:
                    start = lineno
                lines.append(line)
            if lines and (not line.strip() or len(lines) == MAX_DOCUMENT_LINES):
                yield {"lines": lines, "line": start}
                lines = []
    if lines:
        yield {"lines": lines, "line": start}


def _generate_documents(layouts_json: str) -> Iterator[dict[str, Any]]:
    """The generator for ``Dataset.from_generator``; module level so that it pickles."""
    for layout in json.loads(layouts_json):
        yield from iter_documents(Layout(**layout))


def _documents_dataset(layouts: list[Layout], cache_dir: str) -> Any:
    from datasets import Dataset, Features, Sequence, Value

    for layout in layouts:  # datasets fails obscurely on an empty generator: say which file is empty
        if next(iter_documents(layout), None) is None:
            raise InputError("no text (only blank lines, or only a header)", source=layout.path)
    quiet_datasets()
    key = hashlib.sha256(json.dumps([data.fingerprint(x) for x in layouts] + [MAX_DOCUMENT_LINES]).encode()).hexdigest()
    try:
        return Dataset.from_generator(
            _generate_documents,
            features=Features({"lines": Sequence(Value("string")), "line": Value("int64")}),
            gen_kwargs={"layouts_json": json.dumps([asdict(x) for x in layouts])},
            cache_dir=cache_dir,
            fingerprint=key[:32],
        )
    except Exception as exc:  # datasets wraps what the generator raised
        cause = data.llmtool_cause(exc)
        if cause is not None:
            raise cause from None
        raise


def load_documents(layouts: list[Layout], settings: PretrainSettings, cache_dir: str) -> tuple[Any, Any | None]:
    """Training and validation documents (Arrow, on disk): the --valid file, or a seeded share of the corpus."""
    corpus = layouts[:-1] if settings.valid else layouts
    source = corpus[0].path if len(corpus) == 1 else None
    train = _documents_dataset(corpus, cache_dir)
    valid = None
    if settings.valid:
        valid = _documents_dataset(layouts[-1:], cache_dir)
    elif settings.valid_split:
        n_valid = round(len(train) * settings.valid_split)
        if n_valid < 1 or len(train) - n_valid < 1:
            raise InputError(
                f"{_count(len(train), 'document')} {'is' if len(train) == 1 else 'are'} too few for "
                f"--valid-split {settings.valid_split:g}; "
                "separate documents with blank lines, or pass --valid FILE",
                source=source,
            )
        split = train.train_test_split(test_size=n_valid, seed=settings.seed, shuffle=True)
        train, valid = split["train"], split["test"]
    if settings.nsp and len(train) < 2:  # said before a tokenizer is trained for nothing
        raise InputError(
            f"--nsp draws random second sentences from other documents, and there {'is' if len(train) == 1 else 'are'} "
            f"{_count(len(train), 'training document')}; separate documents with blank lines (or one per CSV row)",
            source=source,
        )
    return train, valid


def corpus_summary(layouts: list[Layout], train: Any, valid: Any | None) -> str:
    files = ", ".join(x.path for x in layouts)
    lines = sum(len(x) for x in train["lines"]) if len(train) <= 100_000 else None
    counted = f" ({_count(lines, 'line')})" if lines is not None else ""
    held = f", {len(valid)} for validation" if valid is not None else ""
    return f"{files}: {_count(len(train), 'training document')}{counted}{held}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _texts(documents: Any) -> Iterator[str]:
    for batch in documents.iter(batch_size=1000):
        for lines in batch["lines"]:
            yield from lines


# --------------------------------------------------------------------------- tokenizer


def corpus_tokenizer(settings: PretrainSettings, documents: Any, cache_dir: str, resume_from: str | None) -> Any:
    """The run's tokenizer: the one in the checkpoint being resumed, the one asked for, or a new one.

    A new one is saved in the run's cache, so that the other processes of a distributed run (which
    call this after the main process) load the very same vocabulary instead of learning their own.
    """
    from transformers import AutoTokenizer

    saved = Path(cache_dir) / TOKENIZER_DIR
    for folder in (Path(resume_from) if resume_from else None, saved):
        if folder is not None and (folder / "tokenizer_config.json").is_file():
            return _usable(AutoTokenizer.from_pretrained(str(folder)), settings, str(folder))
    if settings.tokenizer is not None:
        return _usable(_load_tokenizer(settings.tokenizer), settings, settings.tokenizer)
    options = TokenizerOptions(
        vocab_size=settings.vocab_size or VOCAB_SIZE,
        min_frequency=settings.min_frequency or MIN_FREQUENCY,
        model_max_length=POSITIONS[settings.objective],
    )
    tokenizer = train_tokenizer(_texts(documents), settings.objective, options)  # type: ignore[arg-type]
    tokenizer.save_pretrained(str(saved))
    return _usable(tokenizer, settings, "the new tokenizer")


def _load_tokenizer(name: str) -> Any:
    from llmtool.models import ModelOptions, ModelRef, load_tokenizer, locate

    folder = Path(name).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ModelError(f"--tokenizer {name}: a file; pass the folder that holds tokenizer.json")
    # A tokenizer folder needs no config.json, so a folder is loaded as is (no model checks).
    options = ModelOptions(model=name)
    ref = ModelRef(options, str(folder), True, folder) if folder.is_dir() else locate(options)
    return load_tokenizer(ref)


def _usable(tokenizer: Any, settings: PretrainSettings, source: str) -> Any:
    from llmtool.models import ensure_pad_token

    check_pretrained_tokenizer(tokenizer, settings.objective, source)  # type: ignore[arg-type]
    ensure_pad_token(tokenizer, source)  # batches of lines need one; padded positions are never learned
    return tokenizer
