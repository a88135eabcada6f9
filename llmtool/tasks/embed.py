"""``llmtool embed``: one sentence vector per input line, as the model's sentence-transformers files say.

The engine gives the encoder's last hidden states; pooling and normalisation are computed here in
numpy (:mod:`llmtool.tasks.pooling`), the same for both engines, so a converted model embeds
without torch. The pooling mode, normalisation, length limit and prompts come from the model's
own files (``modules.json``, ``1_Pooling/config.json``, ``sentence_bert_config.json``,
``config_sentence_transformers.json``); ``--pooling``, ``--normalize/--no-normalize``,
``--max-length``, ``--prompt`` and ``--prompt-name`` override them. A plain encoder without those
files gets mean pooling, normalised.

Inputs are read a window at a time, tokenised, cut into batches of similar length, embedded, and
written back in input order. Inputs longer than the limit are truncated, and the run ends with one
warning that counts them (never silently). ``--output FILE.npy`` writes the vectors as one float32
matrix, row i for input record i, through a temporary file renamed into place when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmtool.engines import choice as engines
from llmtool.errors import ModelError, UsageError
from llmtool.io.console import say
from llmtool.io.streams import Formatter, Record, as_records, chunked
from llmtool.models import ModelRef, ensure_pad_token, load, max_input_length
from llmtool.settings import EmbedOptions, ModelOptions
from llmtool.tasks.batching import by_length
from llmtool.tasks.pooling import JsonReader, SentenceConfig, folder_reader, normalize, pool, read_sentence_config
from llmtool.tasks.registry import command

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = command("embed").default_model or ""
DECIMALS = 8  # of each value in text, TSV and JSON output (--output .npy keeps float32 exactly)
DOCUMENT_PROMPTS = ("document", "passage", "corpus")  # sentence-transformers' encode_document order


# --------------------------------------------------------------------------- the model


def sentence_reader(ref: ModelRef) -> JsonReader:
    """Read the model's sentence-transformers files: from its folder, else (a Hub model not yet
    downloaded) from the Hub, a missing file being None."""
    if ref.folder is not None:
        return folder_reader(ref.folder)

    def read(name: str) -> Any:
        import json

        from huggingface_hub import hf_hub_download

        try:
            path = hf_hub_download(ref.source, name, revision=ref.options.revision)
        except Exception as exc:  # a file the model does not have is the common case
            if "NotFound" in type(exc).__name__:
                return None
            raise ModelError(f"cannot read {name} of {ref.name}: {' '.join(str(exc).split())}") from exc
        return json.loads(Path(path).read_text(encoding="utf-8"))

    return read


def load_embedder(ref: ModelRef) -> engines.LoadedModel:
    """Tokenizer and the bare encoder (any head left out) for the torch engine."""
    from transformers import AutoModel

    tokenizer, model = load(AutoModel, ref)
    ensure_pad_token(tokenizer, ref.name)
    return tokenizer, model


def choose_prompt(text: str | None, name: str | None, sentence: SentenceConfig, defaults: Sequence[str] = ()) -> str:
    """The prompt put before each input: ``text`` (--prompt), else the model's prompt ``name``, else the
    first of ``defaults`` the model has, else its default prompt, else none."""
    if text is not None:
        return text
    if name is not None:
        if name not in sentence.prompts:
            known = ", ".join(sentence.prompts) or "none"
            raise UsageError(f"the model has no prompt named {name!r} (its prompts: {known})")
        return sentence.prompts[name]
    for candidate in defaults:
        if candidate in sentence.prompts:
            return sentence.prompts[candidate]
    if sentence.default_prompt_name:
        return sentence.prompts.get(sentence.default_prompt_name, "")
    return ""


class Embedder:
    """An encoder (any engine) and the model's way of pooling: texts in, float32 vectors out."""

    def __init__(self, tokenizer: Any, encoder: Any, sentence: SentenceConfig, options: EmbedOptions) -> None:
        options.check()
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.sentence = sentence
        self.options = options
        self.pooling: tuple[str, ...] = (options.pooling,) if options.pooling else sentence.pooling
        self.normalize = sentence.normalize if options.normalize is None else options.normalize
        limit = max_input_length(tokenizer, encoder)
        if options.max_length is not None and options.max_length > limit:
            raise UsageError(f"--max-length {options.max_length} is over the model's limit of {limit} tokens")
        self.max_length = options.max_length or min(sentence.max_seq_length or limit, limit)
        self.limit_source = (
            "--max-length" if options.max_length else "max_seq_length" if sentence.max_seq_length else "the model's"
        )
        self.prompt = choose_prompt(options.prompt, options.prompt_name, sentence)
        self.truncated = 0
        self.first_truncated: Record | None = None
        hidden = getattr(encoder.config, "hidden_size", None) or getattr(encoder.config, "n_embd", None)
        self.dimension: int | None = int(hidden) * len(self.pooling) if hidden else None

    # ------------------------------------------------------------------ vectors

    def encode(self, texts: Sequence[str], prompt: str | None = None) -> tuple[np.ndarray, list[bool]]:
        """Vectors (float32, len(texts) x dim, in order) and which texts were truncated."""
        import numpy as np

        prompt = self.prompt if prompt is None else prompt
        if not texts:
            return np.zeros((0, self.dimension or 0), dtype=np.float32), []
        encoded, cut = self._tokenize([prompt + t for t in texts])
        skip = self._prompt_tokens(prompt) if prompt and not self.sentence.include_prompt else 0
        out: np.ndarray | None = None
        for batch in by_length(range(len(texts)), lambda i: len(encoded[i]["input_ids"]), self.options.batch_size):
            hidden, mask = self.encoder.hidden_states([encoded[i] for i in batch])
            vectors = pool(hidden, mask, self.pooling, skip)
            if self.normalize:
                vectors = normalize(vectors)
            if out is None:
                out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            out[batch] = vectors
        assert out is not None
        return out, cut

    def batches(self, records: Iterable[Record]) -> Iterator[tuple[list[Record], np.ndarray]]:
        """(records, their vectors) a window at a time, in input order; truncations are counted."""
        window = max(1, self.options.batch_size * self.options.window)
        for chunk in chunked(records, window):
            vectors, cut = self.encode([r.text for r in chunk])
            for record, was_cut in zip(chunk, cut, strict=True):
                if was_cut:
                    self.truncated += 1
                    self.first_truncated = self.first_truncated or record
            yield chunk, vectors
        self.warn_truncated()

    def pairs(self, records: Iterable[Record]) -> Iterator[tuple[Record, np.ndarray]]:
        """(record, its vector) for each input, in order."""
        for chunk, vectors in self.batches(records):
            yield from zip(chunk, vectors, strict=True)

    def warn_truncated(self) -> None:
        """Say once how many inputs were truncated (then forget them: a later run says its own)."""
        if not self.truncated:
            return
        first = self.first_truncated
        where = f"; the first: {first.source} line {first.line}" if first is not None else ""
        limit = f"{self.max_length} tokens ({self.limit_source})"
        inputs = "input was" if self.truncated == 1 else "inputs were"
        say(f"warning: {self.truncated} {inputs} longer than {limit} and truncated to fit{where}")
        self.truncated, self.first_truncated = 0, None

    # ------------------------------------------------------------------ internals

    def _tokenize(self, texts: list[str]) -> tuple[list[dict[str, list[int]]], list[bool]]:
        """Token ids per text, truncated at the limit; and which texts were (found by tokenizing in full first)."""
        if self.sentence.do_lower_case:
            texts = [t.lower() for t in texts]
        full = self.tokenizer(texts, truncation=False)
        keys = [k for k in ("input_ids", "token_type_ids") if k in full]
        rows = [{k: list(full[k][i]) for k in keys} for i in range(len(texts))]
        long = [i for i, row in enumerate(rows) if len(row["input_ids"]) > self.max_length]
        if long:
            cut = self.tokenizer([texts[i] for i in long], truncation=True, max_length=self.max_length)
            for n, i in enumerate(long):
                rows[i] = {k: list(cut[k][n]) for k in keys}
        flags = [False] * len(texts)
        for i in long:
            flags[i] = True
        return rows, flags

    def _prompt_tokens(self, prompt: str) -> int:
        """Leading tokens that belong to the prompt (with the start token), as sentence-transformers counts them."""
        ids = list(self.tokenizer([prompt], truncation=False)["input_ids"][0])
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        return len(ids) - 1 if ids and ids[-1] in special else len(ids)

    def record(self, record: Record, vector: np.ndarray, as_array: bool = False) -> dict[str, Any]:
        """The output record of one input: ``{"index", "input", "embedding"}``."""
        import numpy as np

        values: Any = vector if as_array else np.round(vector.astype(np.float64), DECIMALS).tolist()
        return {"index": record.index, "input": record.text, "embedding": values}


def open_embedder(model_options: ModelOptions, options: EmbedOptions, command: str = "embed") -> Embedder:
    """Locate the model (refusing one of the wrong kind for ``command``), read its sentence-transformers
    files (before any weights load), open the encoder."""
    from llmtool.tasks.base import locate

    options.check()
    ref = locate(command, model_options)
    sentence = read_sentence_config(sentence_reader(ref), ref.name)
    choose_prompt(options.prompt, options.prompt_name, sentence)  # an unknown --prompt-name fails now
    tokenizer, encoder = engines.open_encoder(ref, "embed", load_embedder)
    return Embedder(tokenizer, encoder, sentence, options)


# --------------------------------------------------------------------------- .npy output


NPY_HEADER = 128  # bytes: magic, version, length, and the dict padded with spaces (a multiple of 64)


def npy_header(rows: int, dim: int) -> bytes:
    """A version 1.0 ``.npy`` header for a little-endian float32 C-order matrix, exactly NPY_HEADER bytes."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = text.ljust(NPY_HEADER - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body.encode("latin-1")


def check_npy_path(path: str) -> None:
    """``--output`` must name a .npy file in a folder that exists (checked before the model loads)."""
    target = Path(path)
    if target.suffix.lower() != ".npy":
        raise UsageError(f"--output {path!r}: the matrix is written as NumPy .npy; name a .npy file")
    if target.is_dir():
        raise UsageError(f"--output {path!r} is a folder; name a .npy file")
    if not target.resolve().parent.is_dir():
        raise UsageError(f"--output {path!r}: the folder {target.parent} does not exist")


def write_npy(pairs: Iterable[tuple[Record, np.ndarray]], path: str, dimension: int | None = None) -> tuple[int, int]:
    """Write each vector as a row of a float32 matrix in ``path``; return (rows, dimension).

    Rows are appended to a temporary file beside ``path`` as they come (memory stays flat), the header
    written last, and the file renamed into place: ``path`` is never left half-written."""
    import numpy as np

    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    rows, dim = 0, dimension
    try:
        with open(tmp, "wb") as f:
            f.write(b"\0" * NPY_HEADER)
            for _, vector in pairs:
                row = np.ascontiguousarray(vector, dtype="<f4")
                if rows == 0:
                    dim = row.shape[0]
                f.write(row.tobytes())
                rows += 1
            f.seek(0)
            f.write(npy_header(rows, dim or 0))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return rows, dim or 0


# --------------------------------------------------------------------------- formats


def _floats(values: Sequence[float]) -> str:
    return " ".join(repr(v) for v in values)


FORMATTER = Formatter(
    text=lambda r: f"{r['index']}\t{_floats(r['embedding'])}",
    tsv_header=("index", "input", "embedding"),
    tsv_rows=lambda r: [[r["index"], r["input"], _floats(r["embedding"])]],
)


# --------------------------------------------------------------------------- Python API


def embed(
    inputs: str | Iterable[str] | Iterable[Record],
    *,
    model: str = "",
    options: EmbedOptions | None = None,
    model_options: ModelOptions | None = None,
    as_arrays: bool = False,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Embed each input; yields ``{"index", "input", "embedding"}`` per input, in order (the records
    ``llmtool embed --json`` prints). ``as_arrays``: each embedding as a float32 numpy array (exact)
    instead of a list of floats rounded to 8 decimals. ``kwargs`` are :class:`EmbedOptions` fields.

    >>> for r in embed(["a cat", "a dog"], model="sentence-transformers/all-MiniLM-L6-v2"):
    ...     print(r["index"], len(r["embedding"]))  # doctest: +SKIP
    """
    opts = options or EmbedOptions(**kwargs)
    embedder = open_embedder(model_options or ModelOptions(model=model or DEFAULT_MODEL), opts)
    return (embedder.record(r, v, as_arrays) for r, v in embedder.pairs(as_records(inputs)))
