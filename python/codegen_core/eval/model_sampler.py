"""The :class:`~codegen_core.eval.sampler.Sampler` of the JAX model (``codegen_core.sampling``).

Everything heavy (JAX, the checkpoint) is imported when :class:`JaxSampler` is built, never
when evaluation modules are imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from codegen_core.sampling_params import SamplingParams
from codegen_core.tokenizer.core import Tokenizer
from codegen_core.tokenizer.fim import INFILL_CONTROL_TOKENS

__all__ = ["JaxSampler", "load_sampler"]


class JaxSampler:
    """Continues prompts with ``codegen_core.sampling.generate`` on a loaded checkpoint.

    ``model_dir`` is a transformers-style directory (``config.json`` + weights), read by
    ``codegen_core.model.hf_io.load_hf_checkpoint``; the tokenizer is
    :meth:`Tokenizer.for_checkpoint` (``tokenizer.json`` from the directory when present,
    else the built-in CodeGen, or CodeGen2 with ``codegen2=True``). Prompts are encoded with
    the infill format's control tokens allowed and every other special token as text (see
    the :class:`~codegen_core.eval.sampler.Sampler` protocol). Every call uses a fresh seed
    (``params.seed`` + call number), so batches of the same prompt differ while a run stays
    reproducible.
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        dtype: str = "float32",
        codegen2: bool = False,
        batch_rows: int = 32,
    ) -> None:
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise FileNotFoundError(f"model directory {model_dir} does not exist")
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        try:
            jnp = importlib.import_module("jax.numpy")
            hf_io = importlib.import_module("codegen_core.model.hf_io")
            self._generate = importlib.import_module("codegen_core.sampling.generate").generate
        except ImportError as exc:
            raise RuntimeError(f"cannot load the JAX model for {model_dir}: {exc}") from exc
        self.config, self.params = hf_io.load_hf_checkpoint(
            model_dir, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        )
        self.tokenizer = Tokenizer.for_checkpoint(model_dir, codegen2=codegen2)
        specials = self.tokenizer.special_tokens
        self._control = frozenset(t for t in INFILL_CONTROL_TOKENS if t in specials)
        self.batch_rows = batch_rows
        self._calls = 0

    def encode_prompt(self, prompt: str) -> list[int]:
        """Ids of an evaluation prompt: infill control tokens as tokens, the rest as text."""
        return self.tokenizer.encode(prompt, allowed_special=self._control, disallowed_special=())

    def sample(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """``params.n`` raw completions per prompt (stop patterns are applied by the caller)."""
        sampling = replace(params, stop=())  # raw text: the evaluation truncates
        out: list[list[str]] = []
        per_call = max(1, self.batch_rows // params.n)
        for start in range(0, len(prompts), per_call):
            chunk = list(prompts[start : start + per_call])
            result = self._generate(
                self.params,
                self.config,
                [self.encode_prompt(p) for p in chunk],
                sampling=sampling,
                seed=params.seed + self._calls,
                tokenizer=self.tokenizer,
            )
            self._calls += 1
            texts = result.texts
            if texts is None or len(texts) != len(chunk) * params.n:
                raise RuntimeError("codegen_core.sampling.generate returned no texts per row")
            out += [texts[i * params.n : (i + 1) * params.n] for i in range(len(chunk))]
        return out


def load_sampler(model_dir: str | Path, **options: Any) -> JaxSampler:
    """The sampler for a checkpoint directory (imports JAX only now); ``options`` go to
    :class:`JaxSampler` (``dtype``, ``codegen2``, ``batch_rows``)."""
    return JaxSampler(model_dir, **options)
