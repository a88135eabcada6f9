"""The CTranslate2 encoder engine: a converted BERT or RoBERTa, with the heads CTranslate2 leaves out
(masked LM, next sentence, sequence classifier, token classifier, question answering's span head)
computed in numpy. It implements
:class:`llmtool.engines.base.EncoderEngine`.

Only ctranslate2, numpy and safetensors' numpy API are imported here: never torch or transformers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ctranslate2
import numpy as np

from llmtool.engines.base import FloatArray, IntArray, Row
from llmtool.engines.ct2.cache import CT2_DIR, HEADS_FILE
from llmtool.engines.ct2.runtime import activation, layer_norm, load_checked, threads, to_numpy
from llmtool.errors import ModelError, UsageError, one_line


class Ct2Encoder:
    """A converted BERT or RoBERTa encoder, with its heads computed in numpy.

    ``sequence_logits`` computes the next-sentence head for ``task`` "next-sentence", the classifier
    for any other task; without a task, the classifier when the entry has one, else next-sentence."""

    name = "ctranslate2"

    def __init__(
        self,
        entry: Path,
        meta: dict[str, Any],
        device: str,
        compute_type: str,
        intra_threads: int,
        *,
        task: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        from safetensors.numpy import load_file

        self.entry = entry
        self.meta = meta
        self.config = SimpleNamespace(**(config or {}))  # the model's config.json, as attributes
        self.model_type: str = meta["model_type"]
        self.heads: dict[str, FloatArray] = load_file(str(entry / HEADS_FILE))
        self.encoder = ctranslate2.Encoder(
            str(entry / CT2_DIR), device=device, compute_type=compute_type, intra_threads=intra_threads
        )
        self.device = device
        self.compute_type = compute_type
        self.max_length: int = int(meta["max_positions"])
        self.vocab_size: int = int(meta["vocab_size"])
        self.num_labels: int | None = meta.get("num_labels")
        self.id2label: dict[int, str] = {int(k): v for k, v in (meta.get("id2label") or {}).items()}
        self.problem_type: str | None = meta.get("problem_type")
        self.has_mlm: bool = bool(meta["heads"]["mlm"])
        self.has_nsp: bool = bool(meta["heads"]["nsp"] and meta["heads"]["pooler"])
        self.has_classifier: bool = bool(meta["heads"]["classifier"])
        # The per-token head: "classifier" (a token classifier), "qa_outputs" (question answering), or None.
        self.token_head: str | None = meta.get("token_head")
        if task is None:
            task = "classify" if self.has_classifier or not self.has_nsp else "next-sentence"
        self.sequence_head = "next-sentence" if task == "next-sentence" else "classifier"

    def _forward(self, rows: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None) -> Any:
        for i, row in enumerate(rows):
            if not row:
                raise UsageError("cannot encode an empty sequence")
            if len(row) > self.max_length:
                raise UsageError(f"a sequence of {len(row)} tokens is longer than the model's {self.max_length}")
            if type_ids is not None and len(type_ids[i]) != len(row):
                raise UsageError("token_type_ids and input_ids differ in length")
        ids = [[int(t) for t in row] for row in rows]
        types = None
        if self.model_type == "bert":
            types = [[int(t) for t in r] for r in type_ids] if type_ids is not None else [[0] * len(r) for r in ids]
        return self.encoder.forward_batch(ids, token_type_ids=types)

    def _rows(self, batch: Sequence[Row]) -> Any:
        ids = [row["input_ids"] for row in batch]
        types = [row["token_type_ids"] for row in batch] if all("token_type_ids" in row for row in batch) else None
        return self._forward(ids, types)

    def mlm_logits(
        self,
        batch: Sequence[Sequence[int]],
        positions: Sequence[tuple[int, int]],
        type_ids: Sequence[Sequence[int]] | None = None,
    ) -> FloatArray:
        """The masked-LM logits (float32, len(positions) x vocab) at those (row, column) positions."""
        if not self.has_mlm:
            raise ModelError(f"{self.meta.get('source')} has no masked-LM head")
        if not positions:
            return np.zeros((0, self.heads["mlm.decoder.weight"].shape[0]), dtype=np.float32)
        used = sorted({int(r) for r, _ in positions})
        for r, c in positions:
            if not 0 <= int(r) < len(batch) or not 0 <= int(c) < len(batch[int(r)]):
                raise UsageError(f"position ({r}, {c}) is outside the batch")
        where = {r: i for i, r in enumerate(used)}
        sub_types = [type_ids[r] for r in used] if type_ids is not None else None
        out = self._forward([batch[r] for r in used], sub_types)
        hidden = to_numpy(out.last_hidden_state)
        rows = np.array([where[int(r)] for r, _ in positions])
        cols = np.array([int(c) for _, c in positions])
        return self._mlm_head(hidden[rows, cols])

    def _mlm_head(self, x: FloatArray) -> FloatArray:
        h = self.heads
        x = x @ h["mlm.dense.weight"].T + h["mlm.dense.bias"]
        x = activation(str(self.meta["mlm_activation"]), x)
        x = layer_norm(x, h["mlm.norm.weight"], h["mlm.norm.bias"], float(self.meta["layer_norm_eps"]))
        logits: FloatArray = x @ h["mlm.decoder.weight"].T + h["mlm.decoder.bias"]
        return logits.astype(np.float32, copy=False)

    def sequence_logits(self, batch: Sequence[Row]) -> FloatArray:
        """The sequence head's logits for unpadded rows {input_ids[, token_type_ids]}: the classifier's
        (b x num_labels), or the next-sentence head's (b x 2; index 0: B follows A)."""
        if self.sequence_head == "next-sentence":
            return self._nsp_logits(batch)
        kind = self.meta["heads"]["classifier"]
        if not kind:
            raise ModelError(f"{self.meta.get('source')} has no sequence-classification head")
        if not batch:
            return np.zeros((0, int(self.num_labels or 0)), dtype=np.float32)
        out = self._rows(batch)
        h = self.heads
        if kind == "bert":
            if not self.meta["heads"]["pooler"]:
                raise ModelError(f"{self.meta.get('source')} has a classifier but no pooler")
            pooled = to_numpy(out.pooler_output)
            logits = pooled @ h["classifier.weight"].T + h["classifier.bias"]
        else:
            first = to_numpy(out.last_hidden_state)[:, 0]
            x = np.tanh(first @ h["classifier.dense.weight"].T + h["classifier.dense.bias"])
            logits = x @ h["classifier.out_proj.weight"].T + h["classifier.out_proj.bias"]
        return np.asarray(logits, dtype=np.float32)

    def _nsp_logits(self, batch: Sequence[Row]) -> FloatArray:
        if not self.has_nsp:
            raise ModelError(f"{self.meta.get('source')} has no next-sentence head")
        if not batch:
            return np.zeros((0, 2), dtype=np.float32)
        pooled = to_numpy(self._rows(batch).pooler_output)
        return np.asarray(pooled @ self.heads["nsp.weight"].T + self.heads["nsp.bias"], dtype=np.float32)

    def token_logits(self, batch: Sequence[Row]) -> list[FloatArray]:
        """The per-token head's logits on the last hidden states, one float32 ``[tokens, outputs]`` array
        per unpadded row: a token classifier's labels, or question answering's (start, end)."""
        if self.token_head is None:
            raise ModelError(f"{self.meta.get('source')} has no token-classification or question-answering head")
        if not batch:
            return []
        hidden = to_numpy(self._rows(batch).last_hidden_state)
        logits = hidden @ self.heads["token.weight"].T + self.heads["token.bias"]
        logits = np.asarray(logits, dtype=np.float32)
        return [logits[i, : len(row["input_ids"])] for i, row in enumerate(batch)]

    def hidden_states(self, batch: Sequence[Row]) -> tuple[FloatArray, IntArray]:
        """The encoder's last hidden states (rows x longest row x hidden, zeros past a row's end) and
        the attention mask (rows x longest row, int64) for unpadded rows {input_ids[, token_type_ids]}."""
        lengths = np.array([len(row["input_ids"]) for row in batch], dtype=np.int64)
        if not batch:
            size = int(getattr(self.config, "hidden_size", 0) or 0)
            return np.zeros((0, 0, size), dtype=np.float32), np.zeros((0, 0), dtype=np.int64)
        hidden = to_numpy(self._rows(batch).last_hidden_state)
        mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        hidden[mask == 0] = 0.0
        return hidden, mask


def load_encoder(
    entry: str | os.PathLike[str],
    device: str = "cpu",
    compute_type: str = "default",
    *,
    intra_threads: int | None = None,
    task: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Ct2Encoder:
    """Load an encoder entry (``intra_threads``: default ``$OMP_NUM_THREADS``, else CTranslate2's) for
    ``task`` (which head ``sequence_logits`` computes); ``config``: the model's config.json, as a dict."""
    where, meta = load_checked(entry, "encoder")
    try:
        return Ct2Encoder(where, meta, device, compute_type, threads(intra_threads), task=task, config=config)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load the CTranslate2 model in {where}: {one_line(str(exc))}") from exc
