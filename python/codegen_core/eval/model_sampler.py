"""A :class:`~codegen_core.eval.sampler.Sampler` over the JAX model in ``codegen_core.sampling``.

Everything heavy (JAX, the checkpoint) is imported when :class:`JaxSampler` is built, never
when evaluation modules are imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from codegen_core.eval.sampler import SamplingParams

__all__ = ["JaxSampler"]


class JaxSampler:
    """Continues prompts with ``codegen_core.sampling.generate`` on a loaded checkpoint.

    ``model_dir`` is a transformers-style directory (``config.json`` + weights), read by
    ``codegen_core.model.hf_io.load_hf_checkpoint``. The tokenizer is ``tokenizer.json``
    from the directory when present, else the built-in CodeGen (or CodeGen2 with
    ``codegen2=True``) vocabulary. Every call uses a fresh seed (``params.seed`` + call
    number), so batches of the same prompt differ while a run stays reproducible.
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
        try:
            jnp = importlib.import_module("jax.numpy")
            hf_io = importlib.import_module("codegen_core.model.hf_io")
            self._sampling = importlib.import_module("codegen_core.sampling")
        except ImportError as exc:
            raise RuntimeError(f"cannot load the JAX model for {model_dir}: {exc}") from exc
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be 'float32' or 'bfloat16', got {dtype!r}")
        self.config, self.params = hf_io.load_hf_checkpoint(
            model_dir, dtype=jnp.bfloat16 if dtype == "bfloat16" else jnp.float32
        )
        self.tokenizer = _load_tokenizer(model_dir, codegen2=codegen2)
        self.batch_rows = batch_rows
        self._calls = 0

    def sample(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        """``params.n`` raw completions per prompt (stop patterns are applied by the caller)."""
        sampling = self._sampling.SamplingParams(
            max_new_tokens=params.max_new_tokens,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
        )
        out: list[list[str]] = []
        per_call = max(1, self.batch_rows // params.n)
        for start in range(0, len(prompts), per_call):
            chunk = list(prompts[start : start + per_call])
            result = self._sampling.generate(
                self.params,
                self.config,
                chunk,
                sampling=sampling,
                num_samples=params.n,
                seed=params.seed + self._calls,
                tokenizer=self.tokenizer,
            )
            self._calls += 1
            texts = result.texts
            if texts is None or len(texts) != len(chunk) * params.n:
                raise RuntimeError("codegen_core.sampling.generate returned no texts per row")
            out += [texts[i * params.n : (i + 1) * params.n] for i in range(len(chunk))]
        return out


def _load_tokenizer(model_dir: Path, *, codegen2: bool) -> Any:
    path = model_dir / "tokenizer.json"
    try:
        codegen_core = importlib.import_module("codegen_core")
        tokenizer_cls = codegen_core.Tokenizer
    except (ImportError, AttributeError):
        if not path.exists():
            raise RuntimeError(
                f"{model_dir} has no tokenizer.json and codegen_core.Tokenizer is unavailable"
            ) from None
        tokenizers = importlib.import_module("tokenizers")
        return tokenizers.Tokenizer.from_file(str(path))
    if path.exists():
        return tokenizer_cls.from_file(str(path))
    return tokenizer_cls.codegen2() if codegen2 else tokenizer_cls.codegen()
