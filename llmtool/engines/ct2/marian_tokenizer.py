"""Marian's (OPUS-MT's) tokenizer for the CTranslate2 engine, with sentencepiece alone: no torch, no
Transformers.

It reads the files :meth:`transformers.MarianTokenizer.save_pretrained` writes (``source.spm``,
``target.spm``, ``vocab.json``, ``tokenizer_config.json``) and answers what llmtool's tasks ask of a
tokenizer with Transformers' results (tests/test_seq2seq_engines.py compares them): sentencepiece
pieces mapped through vocab.json (a piece it lacks is ``<unk>``), a leading ``>>code<<`` kept whole,
special tokens in the text kept whole, the end token appended; decoding joins pieces with the
sentencepiece model, special tokens between them as text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SPIECE_UNDERLINE = "\u2581"


def _content(value: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class MarianSentencePiece:
    """The subset of ``MarianTokenizer`` llmtool uses, over sentencepiece."""

    def __init__(self, folder: Path) -> None:
        import sentencepiece

        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.encoder: dict[str, int] = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        self.separate_vocabs = bool(config.get("separate_vocabs", False))
        target_file = folder / "target_vocab.json"
        target = json.loads(target_file.read_text(encoding="utf-8")) if self.separate_vocabs else self.encoder
        self.target_encoder: dict[str, int] = target
        self.decoder = {i: t for t, i in target.items()}
        self.spm_source = sentencepiece.SentencePieceProcessor(model_file=str(folder / "source.spm"))
        self.spm_target = sentencepiece.SentencePieceProcessor(model_file=str(folder / "target.spm"))
        self.eos_token = _content(config.get("eos_token")) or "</s>"
        self.unk_token = _content(config.get("unk_token")) or "<unk>"
        self.pad_token: str | None = _content(config.get("pad_token")) or "<pad>"
        self.eos_token_id: int | None = self.encoder.get(self.eos_token)
        self.unk_token_id: int | None = self.encoder.get(self.unk_token)
        self.pad_token_id: int | None = self.encoder.get(self.pad_token)
        self.bos_token_id: int | None = None
        self.mask_token: str | None = None
        self.mask_token_id: int | None = None
        self.chat_template: str | dict[str, str] | None = None
        specials = {self.eos_token, self.unk_token, self.pad_token}
        for entry in (config.get("added_tokens_decoder") or {}).values():
            if isinstance(entry, dict) and entry.get("special") and isinstance(entry.get("content"), str):
                specials.add(entry["content"])
        self.all_special_tokens = sorted(specials)
        self.all_special_ids = sorted(self.encoder[t] for t in specials if t in self.encoder)
        self.model_max_length = int(config.get("model_max_length") or 512)
        self.name_or_path = str(config.get("name_or_path") or folder)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")")

    # -- encoding -------------------------------------------------------------------------------

    def _pieces(self, text: str, target: bool) -> list[str]:
        spm = self.spm_target if target else self.spm_source
        out: list[str] = []
        for chunk in self._split.split(text):
            if not chunk:
                continue
            if chunk in self.all_special_tokens:
                out.append(chunk)
                continue
            chunk = chunk.strip() if out else chunk
            code: list[str] = []
            if chunk.startswith(">>") and (end := chunk.find("<<")) != -1:
                code, chunk = [chunk[: end + 2]], chunk[end + 2 :]
            out += code + (spm.encode(chunk, out_type=str) if chunk else [])
        return out

    def _ids(self, text: str, target: bool, add_special_tokens: bool, limit: int | None) -> list[int]:
        encoder = self.target_encoder if target else self.encoder
        unk = encoder[self.unk_token]
        ids = [encoder.get(p, unk) for p in self._pieces(text, target)]
        if limit is not None:
            ids = ids[: max(0, limit - (1 if add_special_tokens else 0))]
        return [*ids, self.eos_token_id] if add_special_tokens and self.eos_token_id is not None else ids

    def __call__(
        self,
        text: str | list[str] | None = None,
        text_pair: str | list[str] | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        text_target: str | list[str] | None = None,
    ) -> dict[str, Any]:
        target = text is None
        given = text_target if target else text
        assert given is not None
        limit = (max_length or self.model_max_length) if truncation else None
        if isinstance(given, str):
            return {"input_ids": self._ids(given, target, add_special_tokens, limit)}
        return {"input_ids": [self._ids(t, target, add_special_tokens, limit) for t in given]}

    # -- decoding -------------------------------------------------------------------------------

    def convert_ids_to_tokens(self, ids: int | Sequence[int], /) -> str | list[str]:
        spm = self.spm_source if not self.separate_vocabs else self.spm_target

        def one(i: int) -> str:
            return self.decoder.get(int(i)) or spm.IdToPiece(int(i)) or self.unk_token

        return one(ids) if isinstance(ids, int) else [one(i) for i in ids]

    def decode(self, ids: Sequence[int], /, skip_special_tokens: bool = False) -> str:
        tokens = self.convert_ids_to_tokens(list(ids))
        assert isinstance(tokens, list)
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in self.all_special_tokens]
        spm = self.spm_source if not self.separate_vocabs else self.spm_target
        decode: Callable[[list[str]], str] = spm.decode_pieces
        out, pending = "", list[str]()
        for token in tokens:
            if token in self.all_special_tokens:
                out += decode(pending) + token + " "
                pending = []
            else:
                pending.append(token)
        out += decode(pending)
        return out.replace(SPIECE_UNDERLINE, " ").strip()

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    @property
    def apply_chat_template(self) -> Callable[..., Any]:
        raise AttributeError("a Marian tokenizer has no chat template")
