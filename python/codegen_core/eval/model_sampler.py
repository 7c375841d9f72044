"""The :class:`~codegen_core.eval.sampler.Sampler` of the JAX model (``codegen_core.sampling``).

Everything heavy (JAX, the checkpoint) is imported when :class:`JaxSampler` is built, never
when evaluation modules are imported.
"""

from __future__ import annotations

import importlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from codegen_core.sampling_params import SamplingParams
from codegen_core.tokenizer.core import Tokenizer
from codegen_core.tokenizer.fim import INFILL_CONTROL_TOKENS

__all__ = ["JaxSampler", "SamplerStats", "length_bucket", "load_sampler"]


@dataclass
class SamplerStats:
    """Where a :class:`JaxSampler`'s time went (seconds, wall clock)."""

    compile_seconds: float = 0.0  # building the compiled programs (one per shape)
    sample_seconds: float = 0.0  # running them
    programs: int = 0  # compiled programs
    batches: int = 0  # program runs
    rows: int = 0  # real rows sampled (padding rows not counted)
    padded_rows: int = 0  # rows run only to fill a batch shape

    def summary(self) -> str:
        return (
            f"compile {self.compile_seconds:.1f} s ({self.programs} programs), "
            f"sampling {self.sample_seconds:.1f} s ({self.batches} batches, {self.rows} rows)"
        )


def length_bucket(length: int, limit: int, smallest: int = 128) -> int:
    """The padded prompt length for a prompt of ``length`` tokens: the next power of two from
    ``smallest`` up, capped at ``limit`` (so a run compiles a handful of shapes)."""
    bucket = smallest
    while bucket < length:
        bucket *= 2
    return max(min(bucket, limit), length)


class JaxSampler:
    """Continues prompts with the compiled sampling program of ``codegen_core.sampling``.

    ``model_dir`` is a transformers-style directory (``config.json`` + weights), read by
    ``codegen_core.model.hf_io.load_hf_checkpoint``; the tokenizer is
    :meth:`Tokenizer.for_checkpoint` (``tokenizer.json`` from the directory when present,
    else the built-in CodeGen, or CodeGen2 with ``codegen2=True``). Prompts are encoded with
    the infill format's control tokens allowed and every other special token as text (see
    the :class:`~codegen_core.eval.sampler.Sampler` protocol).

    Compilation is paid per shape, not per prompt: prompts are left padded to a length
    bucket (:func:`length_bucket`: 128, 256, 512, ...), and rows (prompts x samples) are run
    ``batch_rows`` at a time, a batch filled up with copies of a real row (their output is
    dropped); a call with fewer rows runs them as they are. Compiled programs are kept
    for the sampler's lifetime, so later calls (problems, MTPB turns) reuse them; ``stats``
    separates compile time from sampling time. Every batch uses a fresh seed
    (``params.seed`` + batch number), so a run is reproducible from its seed and call order.
    A prompt longer than the model's context less ``max_new_tokens`` keeps its last tokens
    (with a warning).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        codegen2: bool = False,
        batch_rows: int = 16,
        smallest_bucket: int = 128,
    ) -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
        try:
            self._jax = importlib.import_module("jax")
            jnp = importlib.import_module("jax.numpy")
            hf_io = importlib.import_module("codegen_core.model.hf_io")
            self._gen = importlib.import_module("codegen_core.sampling.generate")
            self._model = importlib.import_module("codegen_core.model.transformer")
        except ImportError as exc:
            raise RuntimeError(f"cannot load the JAX model for {model_dir}: {exc}") from exc
        self._jnp = jnp
        self.config, self.params = hf_io.load_hf_checkpoint(
            model_dir, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        )
        self.tokenizer = Tokenizer.for_checkpoint(model_dir, codegen2=codegen2)
        specials = self.tokenizer.special_tokens
        self._control = frozenset(t for t in INFILL_CONTROL_TOKENS if t in specials)
        self.batch_rows = batch_rows
        self.smallest_bucket = smallest_bucket
        self.stats = SamplerStats()
        self._compiled: dict[tuple[Any, ...], Any] = {}
        self._calls = 0
        self._warned_long = False
        self._reserved = 0

    def reserve_prompt_tokens(self, tokens: int) -> None:
        """Pad every prompt to at least ``tokens`` (rounded up to a multiple of 256) until
        called again (0 ends it): a caller whose prompts will grow (MTPB turns) then runs
        every turn in one compiled program instead of one per length bucket."""
        self._reserved = -(-max(tokens, 0) // 256) * 256

    @property
    def context(self) -> int:
        """The model's context (``n_ctx``): prompt plus new tokens must fit in it."""
        return int(self.config.n_ctx)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Ids of an evaluation prompt: infill control tokens as tokens, the rest as text."""
        return self.tokenizer.encode(prompt, allowed_special=self._control, disallowed_special=())

    def sample(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """``params.n`` raw completions per prompt (stop patterns are applied by the caller)."""
        if params.max_new_tokens >= self.context:
            raise ValueError(
                f"max_new_tokens={params.max_new_tokens} leaves no room for a prompt in the "
                f"model's context of {self.context} tokens"
            )
        room = self.context - params.max_new_tokens
        encoded = []
        for prompt in prompts:
            ids = self.encode_prompt(prompt)
            if not ids:
                raise ValueError("an evaluation prompt is empty")
            if len(ids) > room:
                if not self._warned_long:
                    warnings.warn(
                        f"a prompt of {len(ids)} tokens plus max_new_tokens="
                        f"{params.max_new_tokens} exceeds the model's context of "
                        f"{self.context}: keeping its last {room} tokens",
                        stacklevel=2,
                    )
                    self._warned_long = True
                ids = ids[-room:]
            encoded.append(ids)
        rows = [(i, j) for i in range(len(prompts)) for j in range(params.n)]
        buckets: dict[int, list[tuple[int, int]]] = {}
        for i, j in rows:
            t = length_bucket(max(len(encoded[i]), self._reserved), room, self.smallest_bucket)
            buckets.setdefault(t, []).append((i, j))
        width = min(len(rows), self.batch_rows)  # a small call (MTPB turn) runs as it is
        out: list[list[str]] = [[""] * params.n for _ in prompts]
        for t, items in sorted(buckets.items()):
            for start in range(0, len(items), width):
                chunk = items[start : start + width]
                texts = self._run([encoded[i] for i, _ in chunk], t, width, params)
                for (i, j), text in zip(chunk, texts, strict=False):
                    out[i][j] = text
        return out

    def _run(
        self, rows: list[list[int]], length: int, width: int, params: SamplingParams
    ) -> list[str]:
        """Sample one batch: ``rows`` padded to ``width`` rows of ``length`` tokens."""
        gen, jnp, model = self._gen, self._jnp, self._model
        real = len(rows)
        rows = rows + [rows[0]] * (width - real)
        tokens, mask = gen.left_pad(rows, self.config.pad_id, 1)
        pad = length - tokens.shape[1]
        tokens = np.pad(tokens, ((0, 0), (pad, 0)), constant_values=self.config.pad_id)
        mask = np.pad(mask, ((0, 0), (pad, 0)))
        sampling = replace(params, n=1, stop=())
        knobs, flags = gen._knobs(sampling)
        stop_ids = gen._stop_array(self.config, None)
        vocab_limit = gen.decodable_ids(self.tokenizer)
        cache = model.init_cache(
            self.config, width, length + params.max_new_tokens, model.cache_dtype(self.params)
        )
        key = gen.make_key(params.seed + self._calls)
        self._calls += 1
        dynamic = (self.params, cache, jnp.asarray(tokens), jnp.asarray(mask), key)
        static = {
            "config": self.config, "max_new_tokens": params.max_new_tokens, "flags": flags,
            "stream": None, "vocab_limit": vocab_limit, "empty_cache": True,
        }  # fmt: skip
        shape = (width, length, params.max_new_tokens, flags, vocab_limit)
        program = self._compiled.get(shape)
        if program is None:
            began = time.perf_counter()
            program = gen.prefill_and_decode.lower(
                *dynamic, knobs=knobs, stop_ids=stop_ids, **static
            ).compile()
            self.stats.compile_seconds += time.perf_counter() - began
            self.stats.programs += 1
            self._compiled[shape] = program
        began = time.perf_counter()
        out, n_gen, done, _ = program(*dynamic, knobs=knobs, stop_ids=stop_ids)
        out, n_gen, done = np.asarray(out), np.asarray(n_gen), np.asarray(done)
        self.stats.sample_seconds += time.perf_counter() - began
        self.stats.batches += 1
        self.stats.rows += real
        self.stats.padded_rows += width - real
        return [
            self.tokenizer.decode(out[b, : n_gen[b] - int(done[b])].tolist()) for b in range(real)
        ]


def load_sampler(model_dir: str | Path, **options: Any) -> JaxSampler:
    """The sampler for a checkpoint directory (imports JAX only now); ``options`` go to
    :class:`JaxSampler` (``dtype``, ``codegen2``, ``batch_rows``)."""
    return JaxSampler(model_dir, **options)
