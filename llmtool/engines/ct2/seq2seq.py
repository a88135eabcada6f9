"""The CTranslate2 encoder-decoder engine: a converted T5, BART, Marian, mBART or M2M100/NLLB model run
by ``ctranslate2.Translator``, for generation (greedy, beam search, sampling) and target scoring. It
implements :class:`llmtool.engines.base.Seq2SeqEngine`.

CTranslate2's own limits are never left to their defaults: inputs are not truncated here (the task
truncates, and says so) and the decoding length is the one asked for (the defaults cut inputs at
1024 tokens and outputs at 256, silently). Only ctranslate2 and numpy are imported here.
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
from llmtool.engines.ct2.runtime import load_checked, threads, wait_for
from llmtool.errors import ModelError, UsageError, one_line

VOCABULARY_FILES = ("shared_vocabulary.json", "target_vocabulary.json")


class Ct2Seq2Seq:
    """A converted encoder-decoder."""

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
        self.meta = meta
        self.config = SimpleNamespace(**(config or {}))  # the model's config.json, as attributes
        self.device, self.compute_type, self.intra_threads = device, compute_type, intra_threads
        self.translator = self._new_translator()
        where = entry / CT2_DIR
        if (where / "shared_vocabulary.json").is_file():
            self.source_vocab = self.target_vocab = list(read_json(where / "shared_vocabulary.json"))
        else:
            self.source_vocab = list(read_json(where / "source_vocabulary.json"))
            self.target_vocab = list(read_json(where / "target_vocabulary.json"))
        self.target_ids = {token: i for i, token in enumerate(self.target_vocab)}
        self.max_length: int = int(meta.get("max_positions") or 0)
        self.generation_config: dict[str, Any] | None = meta.get("generation_config")
        start = (self.generation_config or {}).get("decoder_start_token_id", meta.get("decoder_start_token_id"))
        self.decoder_start_token_id: int | None = start if isinstance(start, int) else None
        self._seed: int | None = None
        self._sampled = False

    def _new_translator(self) -> ctranslate2.Translator:
        return ctranslate2.Translator(
            str(self.entry / CT2_DIR),
            device=self.device,
            compute_type=self.compute_type,
            intra_threads=self.intra_threads,
        )

    def _source(self, ids: Sequence[int]) -> list[str]:
        if self.max_length and len(ids) > self.max_length:
            raise UsageError(f"a source of {len(ids)} tokens is longer than the model's {self.max_length} positions")
        try:
            return [self.source_vocab[int(i)] for i in ids]
        except IndexError:
            raise UsageError(f"a token id is outside the vocabulary of {len(self.source_vocab)}") from None

    def _target(self, ids: Sequence[int]) -> list[str]:
        try:
            return [self.target_vocab[int(i)] for i in ids]
        except IndexError:
            raise UsageError(f"a token id is outside the target vocabulary of {len(self.target_vocab)}") from None

    # -- generation -----------------------------------------------------------------------------

    def generate(
        self,
        sources: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        greedy: bool = True,
        num_beams: int = 1,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        num_return_sequences: int = 1,
        seed: int | None = None,
        row_seeds: Sequence[int] | None = None,
        eos_ids: Iterable[int] = (),
        prefix: Sequence[int] = (),
        suppress: Sequence[int] = (),
        on_token: Callable[[int, int], bool] | None = None,
    ) -> list[list[int]]:
        """Target tokens per output sequence, source-major: ``prefix``, the new tokens, EOS included.

        Sampling with a seed runs the sources one at a time, in order, from one generator seeded per run,
        so that a run repeats whatever the batching; ``row_seeds`` is accepted and ignored (CTranslate2
        has no generator per sequence)."""
        n = max(1, int(num_return_sequences))
        if not sources:
            return []
        eos = sorted({int(e) for e in eos_ids})
        beams = max(1, int(num_beams)) if greedy else 1
        suppressed = [[self.target_vocab[i]] for i in suppress if 0 <= i < len(self.target_vocab)]
        options: dict[str, Any] = {
            "beam_size": beams,
            "num_hypotheses": n if beams > 1 else 1,
            "length_penalty": float(length_penalty),
            "no_repeat_ngram_size": int(no_repeat_ngram_size),
            "suppress_sequences": suppressed or None,
            "end_token": eos or None,
            "return_end_token": True,
            "max_input_length": 0,  # not CTranslate2's 1024: the task truncates, and says so
            "max_decoding_length": int(max_new_tokens) + len(prefix),  # not CTranslate2's 256
            "min_decoding_length": 0,
            "patience": 1,
        }
        if not greedy:
            options.update(
                sampling_topk=int(top_k) if 0 < int(top_k) < len(self.target_vocab) else 0,
                sampling_topp=float(top_p),
                sampling_temperature=float(temperature),
            )
        jobs = [(s * n + j, list(sources[s])) for s in range(len(sources)) for j in range(n if beams == 1 else 1)]
        outputs: list[list[int]] = [[] for _ in range(len(sources) * n)]
        if greedy or seed is None:
            if not greedy:
                self._sampled = True
            self._run(jobs, outputs, n if beams > 1 else 1, list(prefix), options, on_token if beams == 1 else None)
            return outputs
        self._reseed(int(seed))
        for job in jobs:
            self._run([job], outputs, 1, list(prefix), options, on_token)
        return outputs

    def _reseed(self, seed: int) -> None:
        """CTranslate2 seeds each worker thread's generator at its first draw: a new seed needs a fresh
        Translator (new threads) unless nothing was drawn yet."""
        if self._seed == seed:
            return
        if self._sampled:
            self.translator = self._new_translator()
        ctranslate2.set_random_seed(seed % (2**32))
        self._seed = seed
        self._sampled = True

    def _run(
        self,
        jobs: Sequence[tuple[int, list[int]]],
        outputs: list[list[int]],
        hypotheses: int,
        prefix: list[int],
        options: dict[str, Any],
        on_token: Callable[[int, int], bool] | None,
    ) -> None:
        """One translate_batch call; job ``(index, source)`` fills ``outputs[index:index + hypotheses]``."""
        stopped = [False] * len(jobs)
        failure: list[BaseException] = []
        eos = set(options["end_token"] or [])

        def callback(step: Any) -> bool:
            b = int(step.batch_id)
            if stopped[b] or failure:
                return True
            if int(step.step) < len(prefix):  # the forced prefix
                return False
            try:
                token = int(step.token_id)
                stopped[b] = token in eos or on_token is None or bool(on_token(jobs[b][0], token))
            except BaseException as exc:  # raised in CTranslate2's thread: carried over to the caller's
                failure.append(exc)
                return True
            return stopped[b] and token not in eos

        extra: dict[str, Any] = {"callback": callback} if on_token is not None else {}
        pending = self.translator.translate_batch(
            [self._source(source) for _, source in jobs],
            target_prefix=[self._target(prefix) for _ in jobs] if prefix else None,
            asynchronous=True,
            **options,
            **extra,
        )
        results = wait_for(pending, failure)
        for (index, _), result in zip(jobs, results, strict=True):
            for h, hypothesis in enumerate(result.hypotheses[:hypotheses]):
                outputs[index + h] = [self.target_ids[token] for token in hypothesis]

    # -- scoring --------------------------------------------------------------------------------

    def token_logprobs(self, sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> list[FloatArray]:
        """Per pair, log P(target[t] | source, decoder start + target[:t]) for every t (float32).

        ``score_batch`` always scores an end token after the target: a target that ends with one is
        given without it; for one that does not, the extra score is dropped."""
        out: list[FloatArray] = [np.zeros(0, dtype=np.float32) for _ in sources]
        end = self.meta.get("eos_token_id")
        ends = set(end if isinstance(end, list) else [end] if isinstance(end, int) else [])
        todo = [i for i, target in enumerate(targets) if len(target) > 0]
        if not todo:
            return out
        given = [list(targets[i][:-1]) if targets[i][-1] in ends else list(targets[i]) for i in todo]
        results = self.translator.score_batch(
            [self._source(sources[i]) for i in todo], [self._target(t) for t in given], max_input_length=0
        )
        for i, result in zip(todo, results, strict=True):
            out[i] = np.asarray(result.log_probs, dtype=np.float32)[: len(targets[i])]
        return out


def load_seq2seq(
    entry: str | os.PathLike[str],
    device: str = "cpu",
    compute_type: str = "default",
    *,
    intra_threads: int | None = None,
    config: Mapping[str, Any] | None = None,
) -> Ct2Seq2Seq:
    """Load an encoder-decoder entry (``intra_threads``: default ``$OMP_NUM_THREADS``, else CTranslate2's);
    ``config``: the model's config.json, as a dict."""
    where, meta = load_checked(entry, "seq2seq")
    try:
        return Ct2Seq2Seq(where, meta, device, compute_type, threads(intra_threads), config=config)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load the CTranslate2 model in {where}: {one_line(str(exc))}") from exc
