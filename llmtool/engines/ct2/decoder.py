"""The CTranslate2 decoder engine: a converted GPT-2 or Llama, scoring (log-probabilities of given
tokens) and generation with ``ctranslate2.Generator``. It implements
:class:`llmtool.engines.base.DecoderEngine`.

Only ctranslate2 and numpy are imported here: never torch or transformers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ctranslate2
import numpy as np

from llmtool.engines.base import FloatArray
from llmtool.engines.ct2.cache import CT2_DIR, read_json
from llmtool.engines.ct2.runtime import load_checked, threads, to_numpy, wait_for
from llmtool.errors import ModelError, UsageError, one_line


class Ct2Decoder:
    """A converted GPT-2 or Llama decoder."""

    name = "ctranslate2"

    def __init__(
        self,
        entry: Path,
        meta: dict[str, Any],
        device: str,
        compute_type: str,
        intra_threads: int,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.entry = entry
        self.config = SimpleNamespace(**(config or {}))  # the model's config.json, as attributes
        self.meta = meta
        self.device = device
        self.compute_type = compute_type
        self.intra_threads = intra_threads
        self.generator = self._new_generator()
        self.vocab: list[str] = read_json(entry / CT2_DIR / "vocabulary.json")
        self._unique_vocab = len(set(self.vocab)) == len(self.vocab)
        self.vocab_size = len(self.vocab)
        self.max_length: int = int(meta["max_positions"])
        self.context_length = self.max_length
        self.learned_positions: bool = bool(meta.get("learned_positions", True))
        self.generation_config: dict[str, Any] | None = meta.get("generation_config")
        self.eos_token_id: int | list[int] | None = meta.get("eos_token_id")
        self.bos_token_id: int | list[int] | None = meta.get("bos_token_id")
        self.pad_token_id: int | list[int] | None = meta.get("pad_token_id")
        self._seed: int | None = None
        self._sampled = False

    def _new_generator(self) -> ctranslate2.Generator:
        return ctranslate2.Generator(
            str(self.entry / CT2_DIR),
            device=self.device,
            compute_type=self.compute_type,
            intra_threads=self.intra_threads,
        )

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        try:
            return [self.vocab[int(i)] for i in ids]
        except IndexError:
            raise UsageError(f"a token id is outside the vocabulary of {self.vocab_size}") from None

    def _check_length(self, length: int) -> None:
        if self.learned_positions and length > self.max_length:
            raise UsageError(f"a sequence of {length} tokens is longer than the model's {self.max_length} positions")

    # -- scoring --------------------------------------------------------------------------------

    def token_logprobs(self, rows: Sequence[Sequence[int]], firsts: Sequence[int] | None = None) -> list[FloatArray]:
        """Per row, log P(row[t] | row[:t]) for t from ``firsts[i]`` (default 1) to the row's end (float32)."""
        every = self._all_logprobs(rows)
        if firsts is None:
            return every
        return [values[first - 1 :] for values, first in zip(every, firsts, strict=True)]

    def _all_logprobs(self, rows: Sequence[Sequence[int]]) -> list[FloatArray]:
        out: list[FloatArray] = [np.zeros(0, dtype=np.float32) for _ in rows]
        todo = [i for i, row in enumerate(rows) if len(row) >= 2]
        for i in todo:
            self._check_length(len(rows[i]))
        if not todo:
            return out
        if self._unique_vocab:
            results = self.generator.score_batch([self._tokens(rows[i]) for i in todo], max_input_length=0)
            for i, result in zip(todo, results, strict=True):
                out[i] = np.asarray(result.log_probs, dtype=np.float32)
            return out
        for i in todo:  # vocabulary strings repeat: score by ids (one row at a time bounds the memory)
            ids = [int(t) for t in rows[i]]
            log_probs = to_numpy(self.generator.forward_batch([ids[:-1]], return_log_probs=True))[0]
            out[i] = log_probs[np.arange(len(ids) - 1), ids[1:]].astype(np.float32)
        return out

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        greedy: bool = True,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        num_return_sequences: int = 1,
        seed: int | None = None,
        row_seeds: Sequence[int] | None = None,
        eos_ids: Iterable[int] = (),
        on_token: Callable[[int, int], bool | None] | None = None,
    ) -> list[list[int]]:
        """New tokens per sequence, prompt-major (prompt 0's n sequences, then prompt 1's...), with
        the EOS token when one was produced. ``on_token(sequence, token)`` sees each token as it is
        made; returning True stops that sequence.

        Greedy decoding reproduces ``model.generate``'s tokens, repetition penalty included (it
        penalizes the prompt's tokens too, which CTranslate2's loop leaves out: such steps are
        checked against the step's logits and decoding resumes from the corrected token). Sampling
        follows the same processors (temperature, top-k, top-p) with CTranslate2's random
        generator; with a seed, prompts are sampled one at a time, in order, so that a run repeats
        whatever the batching (with a repetition penalty, the first prompt token goes unpenalized).
        ``row_seeds`` is accepted and ignored: CTranslate2 draws from one seeded generator per run
        (see :meth:`_reseed`), not one per sequence."""
        n = max(1, int(num_return_sequences))
        eos = sorted({int(e) for e in eos_ids})
        outputs: list[list[int]] = [[] for _ in range(len(prompts) * n)]
        if max_new_tokens <= 0 or not prompts:
            return outputs
        budgets = []
        for prompt in prompts:
            if not prompt:
                raise UsageError("cannot generate from an empty prompt")
            self._check_length(len(prompt))
            room = self.max_length - len(prompt) if self.learned_positions else max_new_tokens
            if room <= 0:
                raise UsageError(f"a prompt of {len(prompt)} tokens leaves no room in {self.max_length} positions")
            budgets.append(min(int(max_new_tokens), room))
        sampling = not greedy and temperature > 0 and top_k != 1
        jobs = [(p * n + j, [int(t) for t in prompts[p]], budgets[p]) for p in range(len(prompts)) for j in range(n)]
        if not sampling:
            if repetition_penalty == 1.0:
                self._run(jobs, outputs, eos, on_token, {"sampling_topk": 1})
            else:
                for job in jobs:
                    self._greedy_penalized(job, outputs, eos, on_token, float(repetition_penalty))
            return outputs
        options = {
            "sampling_topk": max(0, int(top_k)) if 0 < int(top_k) < self.vocab_size else 0,
            "sampling_topp": float(top_p),
            "sampling_temperature": float(temperature),
            "repetition_penalty": float(repetition_penalty),
        }
        include_prompt = repetition_penalty != 1.0  # the prompt then enters the penalized history
        if seed is None:
            self._sampled = True
            self._run(jobs, outputs, eos, on_token, options, include_prompt=include_prompt)
            return outputs
        self._reseed(int(seed))
        for p in range(len(prompts)):
            self._run(jobs[p * n : (p + 1) * n], outputs, eos, on_token, options, include_prompt=include_prompt)
        return outputs

    def _reseed(self, seed: int) -> None:
        """CTranslate2 seeds each worker thread's generator once, at its first draw: a new seed
        needs a fresh Generator (new threads) unless nothing was drawn yet."""
        if self._seed == seed:
            return
        if self._sampled:
            self.generator = self._new_generator()
        ctranslate2.set_random_seed(seed % (2**32))
        self._seed = seed
        self._sampled = True

    def _run(
        self,
        jobs: Sequence[tuple[int, list[int], int]],
        outputs: list[list[int]],
        eos: list[int],
        on_token: Callable[[int, int], bool | None] | None,
        options: dict[str, Any],
        *,
        include_prompt: bool = False,
        check: Callable[[int, Any], int | None] | None = None,
    ) -> list[str | None]:
        """One generate_batch call; tokens are taken from its callback. Returns why each job ended:
        "eos", "stopped" (by on_token), "budget", "corrected" (``check`` replaced a token: the job
        stopped there and needs to resume), or None (CTranslate2 ended it)."""
        starts = [job[1] for job in jobs]
        # Steps before prefix[b] replay the prompt (CTranslate2 forwards the shortest prompt's
        # length at once and constrains the rest); they are skipped.
        if include_prompt:
            prefix = [len(s) - 1 for s in starts]
            max_length = max(job[2] + prefix[b] for b, job in enumerate(jobs))
        else:
            forwarded = min(len(s) for s in starts) - 1
            prefix = [len(s) - forwarded - 1 for s in starts]
            replayed = forwarded == 0  # then CTranslate2 counts the replayed prompt in max_length
            max_length = max(job[2] + (prefix[b] if replayed else 0) for b, job in enumerate(jobs))
        done = [False] * len(jobs)
        ended: list[str | None] = [None] * len(jobs)
        counts = [0] * len(jobs)
        failure: list[BaseException] = []
        eos_set = set(eos)

        def callback(step: Any) -> bool:
            b = int(step.batch_id)
            if done[b] or failure:
                return True
            if int(step.step) < prefix[b]:
                return False
            try:
                token = int(step.token_id)
                replaced = check(b, step) if check is not None else None
                if replaced is not None:
                    token = replaced
                index = jobs[b][0]
                outputs[index].append(token)
                counts[b] += 1
                stop = bool(on_token(index, token)) if on_token is not None else False
                if stop:
                    ended[b] = "stopped"
                elif token in eos_set:
                    ended[b] = "eos"
                elif counts[b] >= jobs[b][2]:
                    ended[b] = "budget"
                elif replaced is not None:
                    ended[b] = "corrected"
                done[b] = ended[b] is not None
            except BaseException as exc:  # raised in CTranslate2's thread: carried over to the caller's
                failure.append(exc)
                return True
            return done[b]

        pending = self.generator.generate_batch(
            [self._tokens(s) for s in starts],
            max_length=max_length,
            include_prompt_in_result=include_prompt,
            end_token=eos,
            return_end_token=True,
            asynchronous=True,
            callback=callback,
            **options,
        )
        wait_for(pending, failure)
        return ended

    def _greedy_penalized(
        self,
        job: tuple[int, list[int], int],
        outputs: list[list[int]],
        eos: list[int],
        on_token: Callable[[int, int], bool | None] | None,
        penalty: float,
    ) -> None:
        """Greedy search with transformers' repetition penalty over prompt and output.

        CTranslate2 penalizes only what its decoding loop produced; the logits of each step show
        whether penalizing the prompt's other tokens changes the argmax. When it does, the
        corrected token is kept and decoding resumes after it."""
        index, prompt, budget = job
        while True:
            made = outputs[index]
            left = budget - len(made)
            if left <= 0:
                return
            start = prompt + made
            steps = min(left, 64)  # bounds the logits CTranslate2 keeps per call
            produced: set[int] = set()
            history = set(start)

            def check(b: int, step: Any, produced: set[int] = produced, history: set[int] = history) -> int | None:
                token = int(step.token_id)
                extra = [t for t in history if t not in produced]
                result = None
                if extra:
                    logits = to_numpy(step.logits).reshape(-1)
                    chosen = logits[extra]
                    logits[extra] = np.where(chosen < 0, chosen * penalty, chosen / penalty)
                    best = int(np.argmax(logits))
                    if best != token:
                        result = best
                produced.add(token if result is None else result)
                return result

            ended = self._run(
                [(index, start, steps)],
                outputs,
                eos,
                on_token,
                {"sampling_topk": 1, "repetition_penalty": penalty, "return_logits_vocab": True},
                check=check,
            )
            if ended[0] not in ("corrected", "budget"):
                return  # EOS, or on_token stopped it


def load_decoder(
    entry: str | os.PathLike[str],
    device: str = "cpu",
    compute_type: str = "default",
    *,
    intra_threads: int | None = None,
    config: Mapping[str, Any] | None = None,
) -> Ct2Decoder:
    """Load a decoder entry (``intra_threads``: default ``$OMP_NUM_THREADS``, else CTranslate2's);
    ``config``: the model's config.json, as a dict."""
    where, meta = load_checked(entry, "decoder")
    try:
        return Ct2Decoder(where, meta, device, compute_type, threads(intra_threads), config=config)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load the CTranslate2 model in {where}: {one_line(str(exc))}") from exc
