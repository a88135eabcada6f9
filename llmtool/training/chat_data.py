"""Prompt/response training data for ``finetune --task clm``: read and check it, and turn it into
examples whose loss covers only the response tokens.

Two forms:

- ``--prompt-column P --response-column R`` on a .csv/.tsv/.jsonl file: one prompt and its response per row;
- a .jsonl file whose records hold ``messages``, lists of ``{"role", "content"}`` (system, user,
  assistant, ...) with at least one assistant turn (picked up without a flag).

Both become conversations (a row is ``[user: P, assistant: R]``). With a tokenizer that has a chat
template, a conversation is rendered by it (so ``generate --chat`` prompts the way training did);
without one, by the plain template: the turns joined by newlines, each assistant turn followed by the
end-of-text token (so a plain ``generate "PROMPT"`` answers after a newline and stops). Every token of
the prompt side (everything but the assistant turns and their end-of-text) gets the label -100, and
each conversation is one example, never packed with others.

Every check runs before a model loads; a failure is one :class:`InputError` naming file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmtool.errors import InputError, UsageError
from llmtool.io.streams import check_readable, decode_lines, open_binary
from llmtool.io.tables import csv_rows, find_column
from llmtool.training.data import Layout, TrainingData, arrow_rows, file_kind, hold_out, quiet_datasets
from llmtool.training.defaults import FEW_VALID

MESSAGES = "messages"  # the JSONL field of conversations
ASSISTANT = "assistant"
PLAIN_SEPARATOR = "\n"  # the plain template: between turns (before each response)
IGNORE = -100  # the label of a token the loss does not cover


@dataclass(frozen=True)
class ChatLayout(Layout):
    """A prompt/response file: the two columns (fields), or ``messages`` records."""

    prompt: str | None = None
    response: str | None = None

    def describe(self) -> str:
        if self.prompt is None:
            return f"conversations in {MESSAGES!r}"
        return f"prompt={self.prompt!r}, response={self.response!r}"


def has_messages(path: str, text_column: str | None, encoding: str = "utf-8") -> bool:
    """Whether ``path`` is JSON Lines of conversations: its first record has a ``messages`` field."""
    if text_column is not None or file_kind(path) != "jsonl":
        return False
    check_readable(path)
    for _, line in decode_lines(open_binary(path), path, encoding):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                return False
            return isinstance(record, dict) and MESSAGES in record and "text" not in record
    return False


def resolve_layout(path: str, prompt: str | None, response: str | None, encoding: str = "utf-8") -> ChatLayout:
    """Check the file (and, for tables, its header); reads only the first rows."""
    import os

    check_readable(path)
    if os.path.getsize(path) == 0:
        raise InputError("empty file", source=path)
    kind = file_kind(path)
    if kind == "lines":
        raise UsageError(f"{path}: prompt/response data is a .csv, .tsv or .jsonl file")
    if kind in ("csv", "tsv"):
        if prompt is None or response is None:
            raise UsageError(f"{path}: name the columns with --prompt-column and --response-column")
        header, _ = csv_rows(path, encoding)
        find_column(header, prompt, path, "--prompt-column")
        find_column(header, response, path, "--response-column")
        if prompt == response:
            raise UsageError("--prompt-column and --response-column name the same column")
    return ChatLayout(path, kind, "", encoding=encoding, prompt=prompt, response=response)


def iter_conversations(layout: ChatLayout) -> Iterator[dict[str, Any]]:
    """``{"messages": JSON text, "line"}`` per row, checked as it is read."""
    if layout.kind in ("csv", "tsv"):
        header, rows = csv_rows(layout.path, layout.encoding)
        assert layout.prompt is not None and layout.response is not None
        p, r = header.index(layout.prompt), header.index(layout.response)
        for line, row in rows:
            yield _row(layout, line, row[p], row[r], (p + 1, r + 1))
        return
    for line, text in decode_lines(open_binary(layout.path), layout.path, layout.encoding):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise InputError(f"not valid JSON ({getattr(exc, 'msg', exc)})", source=layout.path, line=line) from None
        if not isinstance(record, dict):
            raise InputError("a record must be a JSON object", source=layout.path, line=line)
        if layout.prompt is None:
            yield {"messages": json.dumps(_messages(record, layout.path, line)), "line": line}
            continue
        values = []
        for name, flag in ((layout.prompt, "--prompt-column"), (layout.response, "--response-column")):
            if name not in record:
                fields = ", ".join(repr(k) for k in record)
                raise InputError(f"no field {name!r} ({flag}); fields: {fields}", source=layout.path, line=line)
            if not isinstance(record[name], str):
                raise InputError(f"field {name!r} is not a string", source=layout.path, line=line)
            values.append(record[name])
        yield _row(layout, line, values[0], values[1], (None, None))


def _row(layout: ChatLayout, line: int, prompt: str, response: str, columns: tuple[int | None, int | None]) -> dict:
    for value, name, column in ((prompt, layout.prompt, columns[0]), (response, layout.response, columns[1])):
        if not value.strip():
            what = "response" if name == layout.response else "prompt"
            raise InputError(f"empty {what} in {name!r}", source=layout.path, line=line, column=column)
    messages = [{"role": "user", "content": prompt}, {"role": ASSISTANT, "content": response}]
    return {"messages": json.dumps(messages), "line": line}


def _messages(record: dict[str, Any], path: str, line: int) -> list[dict[str, str]]:
    messages = record.get(MESSAGES)
    if not isinstance(messages, list) or not messages:
        raise InputError(f"{MESSAGES!r} must be a non-empty list of {{role, content}} objects", source=path, line=line)
    out = []
    for i, m in enumerate(messages, 1):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"message {i} needs a string 'role' and a string 'content'", source=path, line=line)
        out.append({"role": m["role"], "content": m["content"]})
    answers = [m for m in out if m["role"] == ASSISTANT]
    if not answers:
        raise InputError("the conversation has no assistant turn: nothing to learn", source=path, line=line)
    if any(not m["content"].strip() for m in answers):
        raise InputError("an assistant turn is empty", source=path, line=line)
    return out


def _generate(layout_json: str) -> Iterator[dict[str, Any]]:
    """The generator handed to ``Dataset.from_generator`` (module level, so it pickles)."""
    yield from iter_conversations(ChatLayout(**json.loads(layout_json)))


def load_conversations(layout: ChatLayout, cache_dir: str) -> Any:
    """Every conversation of a checked file as an on-disk Arrow dataset (columns ``messages``, ``line``)."""
    if next(iter_conversations(layout), None) is None:
        raise InputError("no data rows (only a header, or blank lines)", source=layout.path)
    quiet_datasets()
    from datasets import Features, Value

    return arrow_rows(_generate, Features({"messages": Value("string"), "line": Value("int64")}), layout, cache_dir)


def prepare(
    train_path: str,
    prompt: str | None,
    response: str | None,
    *,
    cache_dir: str,
    valid_path: str | None = None,
    valid_split: float = 0.1,
    seed: int = 42,
    encoding: str = "utf-8",
) -> TrainingData:
    """Check and load prompt/response (or conversation) data, and split off validation rows (seeded)."""
    layout = resolve_layout(train_path, prompt, response, encoding)
    valid_layout = resolve_layout(valid_path, prompt, response, encoding) if valid_path else None
    rows = load_conversations(layout, cache_dir)
    data = TrainingData("clm", rows, None, layout, valid_source="none")
    if valid_layout is None and valid_split > 0 and round(len(rows) * valid_split) < FEW_VALID:
        # Each response teaches its own answer: held-out rows are answers never trained, and a loss on fewer
        # than FEW_VALID of them picks the checkpoint by noise (tests/test_defaults_hold.py has the figures).
        data.valid_source = f"none: {valid_split:.0%} of {len(rows)} rows is under {FEW_VALID}; every row trains"
        return data
    valid = load_conversations(valid_layout, cache_dir) if valid_layout is not None else None
    hold_out(data, valid, valid_layout.path if valid_layout else "", valid_split, seed)
    return data


# --------------------------------------------------------------------------- examples


class ChatEncoder:
    """Token ids and labels of conversations: -100 on every prompt-side token, the ids on the answers.

    Each piece (the prompt up to an assistant turn, the turn itself) is tokenized on its own, as
    ``generate`` tokenizes a prompt, and the pieces' ids concatenated; ``limit`` truncates (``length``
    keeps each conversation's untruncated token count).
    """

    def __init__(self, tokenizer: Any, limit: int | None) -> None:
        self.tokenizer, self.limit = tokenizer, limit
        self.templated = bool(getattr(tokenizer, "chat_template", None))

    def __call__(self, batch: dict[str, list[Any]]) -> dict[str, Any]:
        ids, labels, lengths = [], [], []
        for text in batch["messages"]:
            x, y = self.encode(json.loads(text))
            lengths.append(len(x))
            if self.limit is not None:
                x, y = x[: self.limit], y[: self.limit]
            ids.append(x)
            labels.append(y)
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids], "labels": labels, "length": lengths}

    def encode(self, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
        ids: list[int] = []
        labels: list[int] = []
        for n, (text, trained) in enumerate(self.pieces(messages)):
            if not text:
                continue
            special = n == 0 and not self.templated  # BOS as `generate` adds it to a plain prompt
            piece = list(self.tokenizer(text, add_special_tokens=special)["input_ids"])
            if trained:
                eos = self.tokenizer.eos_token
                if eos is not None and not text.endswith(eos) and self.tokenizer.eos_token_id is not None:
                    piece.append(self.tokenizer.eos_token_id)  # the answer ends: generation learns to stop
            ids += piece
            labels += piece if trained else [IGNORE] * len(piece)
        return ids, labels

    def pieces(self, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
        """(text, trained) in order: the prompt side untrained, each assistant turn trained."""
        if not self.templated:
            out: list[tuple[str, bool]] = []
            for m in messages:
                sep = PLAIN_SEPARATOR if out else ""
                out.append((sep + m["content"], m["role"] == ASSISTANT))
            return _joined(out)
        out, done = [], ""
        for i, m in enumerate(messages):
            if m["role"] != ASSISTANT:
                continue
            head = self._render(messages[:i], prompt=True) if i else ""
            full = self._render(messages[: i + 1], prompt=False)
            if not head.startswith(done) or not full.startswith(head):
                raise UsageError("the tokenizer's chat template does not render a conversation as a prefix of its "
                                 "continuation; train with --prompt-column on plain text instead")  # fmt: skip
            out += [(head[len(done) :], False), (full[len(head) :], True)]
            done = full
        rest = self._render(messages, prompt=False)[len(done) :]
        return [*out, (rest, False)]

    def _render(self, messages: list[dict[str, str]], prompt: bool) -> str:
        rendered: str = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        return rendered


def _joined(pieces: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Neighbouring untrained pieces as one text (the prompt tokenized whole, as `generate` does)."""
    out: list[tuple[str, bool]] = []
    for text, trained in pieces:
        if out and not trained and not out[-1][1]:
            out[-1] = (out[-1][0] + text, False)
        else:
            out.append((text, trained))
    return out


def collator(tokenizer: Any) -> Any:
    """Pads a batch of conversations: inputs with the pad token, labels with -100 (the loss skips padding)."""
    from transformers import DataCollatorForTokenClassification

    return DataCollatorForTokenClassification(tokenizer)


def has_answer(labels: list[int]) -> bool:
    return any(label != IGNORE for label in labels)


def cut_warning(split: str, conversations: int, dropped: int, cut: int, limit: int) -> list[str]:
    """What --block-size did to the conversations of one split, as warnings (none when it cut nothing)."""
    out = []
    if dropped:
        out.append(f"{dropped} of {conversations} {split} conversations have no response token within "
                   f"--block-size {limit} and are left out; raise --block-size")  # fmt: skip
    if cut:
        out.append(f"{cut} of {conversations} {split} conversations are cut at --block-size {limit} "
                   "(the end of their response is not trained); raise --block-size")  # fmt: skip
    return out
