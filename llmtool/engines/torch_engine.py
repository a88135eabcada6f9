"""The torch engine: a Transformers model behind the engine interface every task module uses
(:class:`~llmtool.engines.base.EncoderEngine`, :class:`~llmtool.engines.base.DecoderEngine`).

The model runs on its device; rows come unpadded and are padded here with the tokenizer's own
``pad`` (input ids with the pad id, segment ids with the pad segment, and the attention mask).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from llmtool.engines.base import FloatArray, IntArray, OnToken, Row
from llmtool.errors import ModelError

if TYPE_CHECKING:
    import torch
    from transformers import GenerationMixin, LogitsProcessor, PreTrainedModel, PreTrainedTokenizerBase


class _TorchModel:
    """A tokenizer and a Transformers model on its device."""

    name = "torch"

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.config = model.config
        self.device = next(model.parameters()).device

    def _pad(self, rows: Sequence[Row], side: str = "right") -> dict[str, torch.Tensor]:
        """Padded tensors on the model's device (``tokenizer.pad``: input ids with the pad id,
        segment ids with the pad segment, and the attention mask)."""
        plain = [{key: list(ids) for key, ids in row.items()} for row in rows]
        inputs = self.tokenizer.pad(plain, padding=True, return_tensors="pt", padding_side=side)
        return {key: value.to(self.device) for key, value in inputs.items()}


class TorchEncoder(_TorchModel):
    """A masked LM, sequence or token classifier, next-sentence or question-answering model."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        super().__init__(tokenizer, model)
        self.head = mlm_head(model)

    def mlm_logits(self, batch: Sequence[Sequence[int]], positions: Sequence[tuple[int, int]]) -> FloatArray:
        """Masked-LM logits (float32, one row per position) at the ``(row, column)`` positions only."""
        import torch

        inputs = self._pad([{"input_ids": list(ids)} for ids in batch])
        rows = torch.tensor([r for r, _ in positions], device=self.device)
        cols = torch.tensor([c for _, c in positions], device=self.device)
        with torch.inference_mode():
            if self.head is not None:
                base, head = self.head
                hidden = base(**inputs).last_hidden_state
                logits = head(hidden[rows, cols])
            else:
                logits = self.model(**inputs).logits[rows, cols]
            return logits.float().cpu().numpy()

    def sequence_logits(self, batch: Sequence[Row]) -> FloatArray:
        """The model's logits per input (classifier classes, or next-sentence's two), float32."""
        import torch

        with torch.inference_mode():
            logits: FloatArray = self.model(**self._pad(batch)).logits.float().cpu().numpy()
            return logits

    def token_logits(self, batch: Sequence[Row]) -> list[FloatArray]:
        """The per-token head's logits (float32), one ``[tokens, outputs]`` array per row: a token
        classifier's ``logits``, or a question-answering model's ``start_logits`` and ``end_logits``
        stacked as ``[tokens, 2]``."""
        import torch

        if not batch:
            return []
        with torch.inference_mode():
            out = self.model(**self._pad(batch))
            start = getattr(out, "start_logits", None)
            logits = torch.stack([start, out.end_logits], dim=-1) if start is not None else out.logits
            if logits.dim() != 3:
                raise ModelError(f"{self.model.name_or_path or type(self.model).__name__} has no per-token head")
            array: FloatArray = logits.float().cpu().numpy()
        return [array[i, : len(row["input_ids"])] for i, row in enumerate(batch)]

    def hidden_states(self, batch: Sequence[Row]) -> tuple[FloatArray, IntArray]:
        """The base model's ``last_hidden_state`` (float32, zeros past a row's end) and the attention mask (int64)."""
        import torch

        if not batch:
            size = int(getattr(self.config, "hidden_size", 0) or 0)
            return np.zeros((0, 0, size), dtype=np.float32), np.zeros((0, 0), dtype=np.int64)
        inputs = self._pad(batch)
        base = self.model.base_model  # the encoder under any head (the model itself when it has none)
        with torch.inference_mode():
            hidden = base(**inputs).last_hidden_state.float()
            mask = inputs["attention_mask"]
            hidden = hidden.masked_fill(mask.unsqueeze(-1) == 0, 0.0)
            states: FloatArray = hidden.cpu().numpy()
        return states, mask.cpu().numpy().astype(np.int64)


def mlm_head(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(encoder, head) for the architectures whose head can run on mask positions alone.

    BERT-family models keep it in ``cls``, RoBERTa-family in ``lm_head``; both take hidden states
    and return vocabulary logits. Others fall back to the full forward pass (slower, same result).
    """
    import torch

    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, torch.nn.Module):
            return base, head
    return None


class TorchDecoder(_TorchModel):
    """A causal LM: log-probabilities of given tokens, and generation."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        super().__init__(tokenizer, model)
        self.eos_token_id: int | list[int] | None = model.generation_config.eos_token_id  # None: the tokenizer's
        # The model's own generation settings (what its generation_config.json said); None when
        # Transformers only derived them from config.json.
        own = model.generation_config
        self.generation_config: dict[str, Any] | None = (
            None if getattr(own, "_from_model_config", False) else own.to_diff_dict()
        )

    def token_logprobs(self, rows: Sequence[Sequence[int]], firsts: Sequence[int] | None = None) -> list[FloatArray]:
        """Per row, log P(row[t] | row[:t]) for t from ``firsts[i]`` (default 1) to the row's end.

        Only the positions asked for go through the softmax."""
        import torch

        firsts = list(firsts) if firsts is not None else [1] * len(rows)
        inputs = self._pad([{"input_ids": list(r)} for r in rows])
        ids, attention = inputs["input_ids"], inputs["attention_mask"]
        predict = torch.zeros_like(ids, dtype=torch.bool)
        for i, (row, first) in enumerate(zip(rows, firsts, strict=True)):
            predict[i, first - 1 : len(row) - 1] = True
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=attention).logits
            r, c = predict.nonzero(as_tuple=True)
            logprobs = logits[r, c].float().log_softmax(dim=-1)
            picked = logprobs.gather(1, ids[r, c + 1].unsqueeze(1)).squeeze(1).cpu().numpy()
        out: list[FloatArray] = []
        start = 0
        for row, first in zip(rows, firsts, strict=True):
            n = max(0, len(row) - first)
            out.append(picked[start : start + n])
            start += n
        return out

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        greedy: bool,
        temperature: float,
        top_k: int,
        top_p: float,
        repetition_penalty: float,
        num_return_sequences: int,
        seed: int | None,
        row_seeds: Sequence[int] | None,
        eos_ids: AbstractSet[int],
        on_token: OnToken | None = None,
    ) -> list[list[int]]:
        """New tokens per output sequence, prompt-major (prompt 0's sequences first), EOS included.

        Sampling draws each sequence's tokens from its own generator (``row_seeds``, one per sequence,
        derived from the run's ``seed``), so a prompt's samples do not depend on which prompts share
        its batch. ``on_token(sequence, token)``
        is called for each new token of a running sequence; True stops that sequence."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        n = num_return_sequences
        inputs = self._pad([{"input_ids": list(p)} for p in prompts], side="left")  # new tokens follow each prompt
        input_ids = inputs["input_ids"].repeat_interleave(n, dim=0)
        attention = inputs["attention_mask"].repeat_interleave(n, dim=0)
        # A fresh GenerationConfig: only the values llmtool resolved apply (flag, else the model's
        # generation_config.json, else llmtool's), the same ones the CTranslate2 engine gets.
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,  # sampling, when asked, happens in the row sampler with per-row generators
            num_beams=1,
            repetition_penalty=repetition_penalty,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(eos_ids) or None,
        )
        kwargs: dict[str, Any] = {"generation_config": config}
        if not greedy:
            assert row_seeds is not None
            sampler = _row_sampler(list(row_seeds), temperature, top_k, top_p, self.device)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        if on_token is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_TokenWatcher(on_token, input_ids.shape[1], eos_ids)])
        model = cast("GenerationMixin", self.model)  # a causal LM: Transformers gives it generate()
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
        new_tokens: list[list[int]] = output[:, input_ids.shape[1] :].tolist()
        return new_tokens


def _row_sampler(
    seeds: list[int], temperature: float, top_k: int, top_p: float, device: torch.device
) -> LogitsProcessor:
    """A logits processor that samples each row with its own generator.

    It applies the standard Transformers warpers (temperature, top-k, top-p), draws one token per
    row, and returns scores where that token alone is finite, so greedy selection takes it.
    """
    import torch
    from transformers import LogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers: list[Callable[[torch.LongTensor, torch.FloatTensor], torch.FloatTensor]] = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    class RowSampler(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            for warp in warpers:
                scores = warp(input_ids, scores)
            probs = scores.float().softmax(dim=-1)
            chosen = torch.stack(
                [torch.multinomial(probs[i], 1, generator=generators[i]) for i in range(probs.shape[0])]
            )
            picked = torch.full_like(scores, float("-inf"))
            picked.scatter_(1, chosen, 0.0)
            return picked  # type: ignore[return-value]

    return RowSampler()


class _TokenWatcher:
    """A stopping criterion that hands each new token of each running row to ``on_token`` (streaming,
    stop strings); a row stops when ``on_token`` says so. Rows that ended (EOS, or stopped) are not
    watched any more: generate keeps appending padding to them."""

    def __init__(self, on_token: OnToken, prompt_length: int, eos_ids: AbstractSet[int]) -> None:
        self.on_token, self.prompt_length, self.eos_ids = on_token, prompt_length, eos_ids
        self.done: set[int] = set()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        flags = []
        last = input_ids[:, -1].tolist() if input_ids.shape[1] > self.prompt_length else []
        for row, token in enumerate(last):
            if row not in self.done and (token in self.eos_ids or self.on_token(row, token)):
                self.done.add(row)
            flags.append(row in self.done)
        return torch.tensor(flags or [False] * input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class TorchSeq2Seq(_TorchModel):
    """An encoder-decoder (``AutoModelForSeq2SeqLM``): generation with ``generate`` and target scoring."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel) -> None:
        super().__init__(tokenizer, model)
        own = model.generation_config
        start = own.decoder_start_token_id
        if start is None:
            start = getattr(model.config, "decoder_start_token_id", None)
        self.decoder_start_token_id: int | None = start if isinstance(start, int) else None
        self.generation_config: dict[str, Any] | None = (
            None if getattr(own, "_from_model_config", False) else own.to_diff_dict()
        )
        pad = getattr(model.config, "pad_token_id", None)
        if getattr(model.config, "model_type", "") == "marian" and isinstance(pad, int):
            _ban_output(model, pad)

    def _start(self) -> int:
        if self.decoder_start_token_id is None:
            raise ValueError(f"{self.tokenizer.name_or_path}: the model names no decoder_start_token_id")
        return self.decoder_start_token_id

    def generate(
        self,
        sources: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        greedy: bool,
        num_beams: int,
        temperature: float,
        top_k: int,
        top_p: float,
        length_penalty: float,
        no_repeat_ngram_size: int,
        num_return_sequences: int,
        seed: int | None,
        row_seeds: Sequence[int] | None,
        eos_ids: AbstractSet[int],
        prefix: Sequence[int] = (),
        suppress: Sequence[int] = (),
        on_token: OnToken | None = None,
    ) -> list[list[int]]:
        """Target tokens per output sequence, source-major: ``prefix``, then the new tokens, EOS included.

        A fresh ``GenerationConfig`` holds only what llmtool resolved (as for causal LMs): the model's
        other settings (``forced_eos_token_id``, ``max_length``...) do not apply behind the user's back.
        A forced prefix is given as decoder input (what ``forced_bos_token_id`` does for one token)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        n = num_return_sequences
        if not sources:
            return []
        inputs = self._pad([{"input_ids": list(s)} for s in sources])
        start = [self._start(), *prefix]
        decoder_ids = torch.tensor([start] * len(sources), dtype=torch.long, device=self.device)
        beams = max(1, num_beams) if greedy else 1
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,  # sampling, when asked, happens in the row sampler with per-row generators
            num_beams=beams,
            num_return_sequences=n if beams > 1 else 1,
            length_penalty=length_penalty,
            early_stopping=True,  # as CTranslate2: done once num_beams hypotheses have ended
            no_repeat_ngram_size=no_repeat_ngram_size,
            suppress_tokens=list(suppress) or None,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(eos_ids) or None,
            decoder_start_token_id=self._start(),
        )
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if beams == 1 and n > 1:  # samples: each source n times, each copy with its own generator
            ids, mask = ids.repeat_interleave(n, dim=0), mask.repeat_interleave(n, dim=0)
            decoder_ids = decoder_ids.repeat_interleave(n, dim=0)
        kwargs: dict[str, Any] = {"generation_config": config}
        if not greedy:
            assert row_seeds is not None
            sampler = _row_sampler(list(row_seeds), temperature, top_k, top_p, self.device)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
        if on_token is not None and beams == 1:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_TokenWatcher(on_token, len(start), eos_ids)])
        model = cast("GenerationMixin", self.model)
        own = self.model.generation_config
        # generate() fills what the config leaves unset from the model's own (forced_eos_token_id,
        # bad_words_ids, min_length...): blank while it runs, so that only the values above apply.
        self.model.generation_config = GenerationConfig()
        try:
            with torch.inference_mode():
                output = model.generate(input_ids=ids, attention_mask=mask, decoder_input_ids=decoder_ids, **kwargs)
        finally:
            self.model.generation_config = own
        rows: list[list[int]] = output[:, 1:].tolist()
        out = []
        for row in rows:  # generate pads the rows that ended early: cut after the first EOS
            tokens = row[: len(prefix)]
            for token in row[len(prefix) :]:
                tokens.append(token)
                if token in eos_ids:
                    break
            out.append(tokens)
        return out

    def token_logprobs(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> list[FloatArray]:
        """Per pair, log P(target[t] | source, decoder start + target[:t]) for every t (float32)."""
        import torch

        if not sources:
            return []
        inputs = self._pad([{"input_ids": list(s)} for s in sources])
        start = self._start()
        longest = max(len(t) for t in targets)
        decoder = torch.full((len(targets), max(1, longest)), start, dtype=torch.long, device=self.device)
        decoder_mask = torch.zeros_like(decoder)
        for i, target in enumerate(targets):
            row = [start, *target[:-1]]
            decoder[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            decoder_mask[i, : len(row)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=inputs["input_ids"],
                attention_mask=inputs["attention_mask"],
                decoder_input_ids=decoder,
                decoder_attention_mask=decoder_mask,
            ).logits
            logprobs = logits.float().log_softmax(dim=-1)
        out: list[FloatArray] = []
        for i, target in enumerate(targets):
            picked = logprobs[i, torch.arange(len(target)), torch.tensor(list(target), dtype=torch.long)]
            out.append(picked.cpu().numpy().astype(np.float32))
        return out


def _ban_output(model: PreTrainedModel, token: int) -> None:
    """Leave ``token`` out of the model's output distribution (its logit -inf), in generation and scoring.

    Marian's pad token is the decoder's start and never an output: OPUS-MT's generation_config bans it,
    and CTranslate2's conversion drops it from the vocabulary, so that its probability mass goes to
    the other tokens. The same here: the log-probabilities (and so the beams) of both engines agree."""
    head = model.get_output_embeddings()
    if head is None:
        return

    def hook(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output[..., token] = float("-inf")
        return output

    head.register_forward_hook(hook)
