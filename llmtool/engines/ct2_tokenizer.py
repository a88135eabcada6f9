"""A torch-free stand-in for the Hugging Face tokenizer, for the CTranslate2 engine.

:func:`export_tokenizer` runs at conversion time (transformers is there): it saves the Rust
tokenizer the HF tokenizer drives (``tokenizer.json``, with the post-processor and added tokens
exactly as the HF wrapper left them) and ``tokenizer_meta.json``, the few settings the wrapper
adds on top (special tokens, truncation side, clean-up of spaces, the chat template...).

:class:`FastTokenizer` reads those two files with the ``tokenizers`` library alone and answers the
subset of the HF API llmtool uses, with the same results: ``__call__`` sets truncation on the Rust
tokenizer the way ``TokenizersBackend.set_truncation_and_padding`` does, ``decode`` applies the
same space clean-up, and ``apply_chat_template`` renders with a Jinja environment configured like
transformers' own. Neither module-level nor run-time code imports torch or transformers.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llmtool.errors import ModelError

META_FILE = "tokenizer_meta.json"
TOKENIZER_FILE = "tokenizer.json"
META_FORMAT = 1
SPECIAL_NAMES = ("bos", "eos", "unk", "sep", "pad", "cls", "mask")
VERY_LARGE_INTEGER = int(1e30)  # what transformers reports as model_max_length when there is no limit
LARGE_INTEGER = int(1e20)  # above this, transformers treats model_max_length as "no limit"
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def export_tokenizer(hf_tokenizer: Any, folder: str | os.PathLike[str]) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_meta.json`` for :meth:`FastTokenizer.load`.

    Needs a tokenizer backed by the ``tokenizers`` library (every tokenizer of transformers 5.x
    that has a ``backend_tokenizer``); a Python-only tokenizer raises :class:`ModelError`.
    """
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(
            f"the tokenizer of {getattr(hf_tokenizer, 'name_or_path', '?')} has no tokenizers backend; "
            "the ctranslate2 engine needs a fast tokenizer"
        )
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    backend.save(str(out / TOKENIZER_FILE))
    specials: dict[str, dict[str, Any]] = {}
    for name in SPECIAL_NAMES:
        token = getattr(hf_tokenizer, f"{name}_token", None)
        token_id = getattr(hf_tokenizer, f"{name}_token_id", None) if token is not None else None
        specials[name] = {"token": None if token is None else str(token), "id": token_id}
    model_max = getattr(hf_tokenizer, "model_max_length", None)
    added = [
        {
            "id": int(i),
            "content": str(t.content),
            "special": bool(t.special),
            "lstrip": bool(t.lstrip),
            "rstrip": bool(t.rstrip),
            "normalized": bool(t.normalized),
            "single_word": bool(t.single_word),
        }
        for i, t in sorted(hf_tokenizer.added_tokens_decoder.items())
    ]
    template = getattr(hf_tokenizer, "chat_template", None)
    meta = {
        "format": META_FORMAT,
        "class": type(hf_tokenizer).__name__,
        "name_or_path": str(getattr(hf_tokenizer, "name_or_path", "")),
        "special_tokens": specials,
        "special_tokens_map": {k: str(v) for k, v in hf_tokenizer.special_tokens_map.items()},
        "all_special_tokens": [str(t) for t in hf_tokenizer.all_special_tokens],
        "all_special_ids": [int(i) for i in hf_tokenizer.all_special_ids],
        "model_max_length": int(model_max) if isinstance(model_max, int) and model_max < 1_000_000 else None,
        "padding_side": str(getattr(hf_tokenizer, "padding_side", "right")),
        "truncation_side": str(getattr(hf_tokenizer, "truncation_side", "right")),
        "model_input_names": list(getattr(hf_tokenizer, "model_input_names", ["input_ids", "attention_mask"])),
        "split_special_tokens": bool(getattr(hf_tokenizer, "split_special_tokens", False)),
        "clean_up_tokenization_spaces": _effective_clean_up(hf_tokenizer),
        "pad_token_type_id": int(getattr(hf_tokenizer, "pad_token_type_id", 0) or 0),
        "lowercase": _lowercases(hf_tokenizer),
        "chat_template": template if isinstance(template, (str, dict)) else None,
        "added_tokens": added,
    }
    _write_json(out / META_FILE, meta)


def _effective_clean_up(hf_tokenizer: Any) -> bool:
    """Whether ``decode`` applies ``clean_up_tokenization`` (transformers skips it for BPE models)."""
    if not getattr(hf_tokenizer, "clean_up_tokenization_spaces", False):
        return False
    model_kind = type(hf_tokenizer.backend_tokenizer.model).__name__
    forced = getattr(hf_tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
    return not (model_kind == "BPE" and not forced)


def _lowercases(hf_tokenizer: Any) -> bool:
    flag = getattr(hf_tokenizer, "do_lower_case", None)
    if flag is None:
        flag = getattr(hf_tokenizer, "init_kwargs", {}).get("do_lower_case")
    if isinstance(flag, bool):
        return flag
    state = json.loads(hf_tokenizer.backend_tokenizer.to_str())
    return _normalizer_lowercases(state.get("normalizer"))


def _normalizer_lowercases(normalizer: Any) -> bool:
    if not isinstance(normalizer, dict):
        return False
    if normalizer.get("type") == "Lowercase" or (
        normalizer.get("type") == "BertNormalizer" and normalizer.get("lowercase")
    ):
        return True
    return any(_normalizer_lowercases(n) for n in normalizer.get("normalizers", []) or [])


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


class FastTokenizer:
    """The part of the HF tokenizer API llmtool's task code uses, over ``tokenizers`` alone."""

    def __init__(self, backend: Any, meta: dict[str, Any]) -> None:
        self._tokenizer = backend
        self.meta = meta
        specials = meta["special_tokens"]
        self.bos_token: str | None = specials["bos"]["token"]
        self.bos_token_id: int | None = specials["bos"]["id"]
        self.eos_token: str | None = specials["eos"]["token"]
        self.eos_token_id: int | None = specials["eos"]["id"]
        self.unk_token: str | None = specials["unk"]["token"]
        self.unk_token_id: int | None = specials["unk"]["id"]
        self.sep_token: str | None = specials["sep"]["token"]
        self.sep_token_id: int | None = specials["sep"]["id"]
        self.pad_token: str | None = specials["pad"]["token"]
        self.pad_token_id: int | None = specials["pad"]["id"]
        self.cls_token: str | None = specials["cls"]["token"]
        self.cls_token_id: int | None = specials["cls"]["id"]
        self.mask_token: str | None = specials["mask"]["token"]
        self.mask_token_id: int | None = specials["mask"]["id"]
        self.all_special_ids: list[int] = list(meta["all_special_ids"])
        self.all_special_tokens: list[str] = list(meta["all_special_tokens"])
        self.special_tokens_map: dict[str, str] = dict(meta["special_tokens_map"])
        limit = meta.get("model_max_length")
        self.model_max_length: int = int(limit) if limit else VERY_LARGE_INTEGER
        self.padding_side: str = meta.get("padding_side", "right")
        self.truncation_side: str = meta.get("truncation_side", "right")
        self.model_input_names: list[str] = list(meta.get("model_input_names", ["input_ids", "attention_mask"]))
        self.split_special_tokens: bool = bool(meta.get("split_special_tokens", False))
        self.clean_up_tokenization_spaces: bool = bool(meta.get("clean_up_tokenization_spaces", False))
        self.do_lower_case: bool = bool(meta.get("lowercase", False))
        self.chat_template: str | dict[str, str] | None = meta.get("chat_template")
        self.name_or_path: str = meta.get("name_or_path", "")
        self.is_fast = True

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> FastTokenizer:
        from tokenizers import Tokenizer

        where = Path(folder)
        try:
            meta = json.loads((where / META_FILE).read_text(encoding="utf-8"))
            backend = Tokenizer.from_file(str(where / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ModelError(f"cannot read the tokenizer in {where}: {' '.join(str(exc).split())}") from exc
        if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
            raise ModelError(f"{where / META_FILE}: not a tokenizer description this llmtool writes")
        if backend.padding is not None:  # a tokenizer.json may pad (all-MiniLM-L6-v2's: to 128); HF's pads when asked
            backend.no_padding()
        return cls(backend, meta)

    # -- encoding -------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        text_pair: str | Sequence[str] | None = None,
        *,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
    ) -> dict[str, Any]:
        """Like ``hf_tokenizer(text, text_pair, add_special_tokens=..., truncation=..., max_length=...)``
        without padding: a dict of lists (of lists, for a list of texts). As there, ``max_length``
        alone (truncation left None) truncates longest_first, and ``truncation=False`` does not."""
        batched = isinstance(text, (list, tuple))
        if batched:
            if isinstance(text_pair, str):
                raise TypeError("when tokenizing batches of text, `text_pair` must be a list or tuple")
            if text_pair is not None and len(text_pair) != len(text):
                raise ValueError(
                    f"batch length of `text`: {len(text)} does not match batch length of `text_pair`: {len(text_pair)}."
                )
            inputs: list[Any] = list(zip(text, text_pair, strict=True)) if text_pair is not None else list(text)
        else:
            inputs = [(text, text_pair)] if text_pair else [text]
        self._set_truncation(truncation, max_length)
        if self._tokenizer.encode_special_tokens != self.split_special_tokens:
            self._tokenizer.encode_special_tokens = self.split_special_tokens
        encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens) if inputs else []
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if "token_type_ids" in self.model_input_names:
            out["token_type_ids"] = [e.type_ids for e in encodings]
        if "attention_mask" in self.model_input_names:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        if not batched:
            out = {k: v[0] for k, v in out.items()}
        return out

    def _set_truncation(self, truncation: bool | str | None, max_length: int | None) -> None:
        # transformers: max_length alone (truncation=None) turns on longest_first truncation
        if truncation is None:
            truncation = "longest_first" if max_length is not None else False
        strategy: str | None
        if truncation is True:
            strategy = "longest_first"
        elif truncation is False or truncation == "do_not_truncate":
            strategy = None
        elif isinstance(truncation, str) and truncation in TRUNCATION_STRATEGIES:
            strategy = truncation
        else:
            raise ValueError(f"{truncation!r} is not a valid TruncationStrategy")
        if strategy is not None and max_length is None:
            if self.model_max_length > LARGE_INTEGER:
                strategy = None
            else:
                max_length = self.model_max_length
        current = self._tokenizer.truncation
        if strategy is None:
            if current is not None:
                self._tokenizer.no_truncation()
            return
        target = {"max_length": max_length, "stride": 0, "strategy": strategy, "direction": self.truncation_side}
        if current is None or {k: current.get(k) for k in target} != target:
            self._tokenizer.enable_truncation(**target)

    def encode(self, text: str, text_pair: str | None = None, *, add_special_tokens: bool = True) -> list[int]:
        self._set_truncation(False, None)
        return list(self._tokenizer.encode(text, text_pair, add_special_tokens=add_special_tokens).ids)

    def tokenize(self, text: str, *, add_special_tokens: bool = False) -> list[str]:
        self._set_truncation(False, None)
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).tokens)

    # -- decoding -------------------------------------------------------------------------------

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        """Like ``hf_tokenizer.decode``: one string, or a list of strings for a list of sequences."""
        ids = _plain_ids(ids)
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], (list, tuple)):
            return [self._decode_one(list(seq), skip_special_tokens) for seq in ids]
        return self._decode_one(ids, skip_special_tokens)

    def batch_decode(self, sequences: Iterable[Any], skip_special_tokens: bool = False) -> list[str]:
        return [self._decode_one(list(_plain_ids(s)), skip_special_tokens) for s in sequences]

    def _decode_one(self, ids: list[int], skip_special_tokens: bool) -> str:
        text: str = self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self.clean_up_tokenization_spaces else text

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> Any:
        ids = _plain_ids(ids)
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> Any:
        def one(token: str) -> int | None:
            found = self._tokenizer.token_to_id(token)
            return self.unk_token_id if found is None else int(found)

        if isinstance(tokens, str):
            return one(tokens)
        return [one(t) for t in tokens]

    def get_vocab(self) -> dict[str, int]:
        vocab: dict[str, int] = self._tokenizer.get_vocab(with_added_tokens=True)
        return vocab

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=False))

    def __len__(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    @property
    def backend_tokenizer(self) -> Any:
        return self._tokenizer

    def __repr__(self) -> str:
        return f"FastTokenizer(name_or_path={self.name_or_path!r}, vocab_size={len(self)})"

    # -- chat -----------------------------------------------------------------------------------

    def apply_chat_template(
        self,
        messages: Sequence[Any],
        tokenize: bool = False,
        add_generation_prompt: bool = True,
        *,
        chat_template: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        documents: list[dict[str, Any]] | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Render ``messages`` like ``hf_tokenizer.apply_chat_template`` (without tool callables,
        ``continue_final_message`` or assistant masks). ``tokenize=True`` returns what transformers 5
        returns: a dict with input_ids (and attention_mask), or the ids alone with ``return_dict=False``."""
        template = self._get_chat_template(chat_template, tools)
        if isinstance(messages, (list, tuple)) and not messages:
            raise ValueError("Cannot apply chat template to an empty conversation. Provide at least one message.")
        batched = isinstance(messages[0], (list, tuple))
        conversations = list(messages) if batched else [messages]
        variables = {**self.special_tokens_map, **kwargs}
        rendered = [
            render_chat_template(
                template,
                _normalize_messages(chat),
                add_generation_prompt=add_generation_prompt,
                tools=tools,
                documents=documents,
                **variables,
            )
            for chat in conversations
        ]
        result: Any = rendered if batched else rendered[0]
        if not tokenize:
            return result
        encoded = self(result, add_special_tokens=False)
        return encoded if return_dict else encoded["input_ids"]

    def _get_chat_template(self, chat_template: str | None, tools: Any) -> str:
        template: Any = chat_template if chat_template is not None else self.chat_template
        if isinstance(template, dict):
            named = template
            if chat_template is not None and chat_template in named:
                return str(named[chat_template])
            if tools is not None and "tool_use" in named:
                return str(named["tool_use"])
            if "default" in named:
                return str(named["default"])
            raise ValueError(
                "This tokenizer has several chat templates and none is named 'default'; pass chat_template"
            )
        if not template:
            raise ValueError(
                "Cannot use chat template functions because tokenizer.chat_template is not set and no template "
                "argument was passed!"
            )
        return str(template)


def _plain_ids(ids: Any) -> Any:
    if hasattr(ids, "tolist"):  # numpy arrays and scalars
        ids = ids.tolist()
    return ids


def clean_up_tokenization(text: str) -> str:
    """transformers' ``PreTrainedTokenizerBase.clean_up_tokenization``."""
    return (
        text.replace(" .", ".")
        .replace(" ?", "?")
        .replace(" !", "!")
        .replace(" ,", ",")
        .replace(" ' ", "'")
        .replace(" n't", "n't")
        .replace(" 'm", "'m")
        .replace(" 's", "'s")
        .replace(" 've", "'ve")
        .replace(" 're", "'re")
    )


def _normalize_messages(conversation: Any) -> list[dict[str, Any]]:
    """Drop the keys whose value is None and copy reasoning under its aliases, as transformers does."""
    out: list[dict[str, Any]] = []
    for message in getattr(conversation, "messages", conversation):
        if not isinstance(message, dict):
            raise TypeError(f"Chat messages should be dicts, but got {message!r}.")
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def render_chat_template(template: str, messages: list[dict[str, Any]], **variables: Any) -> str:
    """Render one conversation with the template, in an environment configured like transformers'."""
    compiled = _compile(template)
    rendered: str = compiled.render(messages=messages, **variables)
    return rendered


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    from datetime import datetime

    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.utils
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body (transformers tracks it for masks)."""

        tags = {"generation"}  # noqa: RUF012

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
    ) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    class TemplateDict:
        def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        def __init__(*args: Any, **kwargs: Any) -> None:
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}."
                )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["dict"] = TemplateDict()
    env.globals["namespace"] = TemplateNamespace
    return env.from_string(template)
