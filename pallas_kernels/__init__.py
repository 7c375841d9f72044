"""Pallas kernels (flash attention, decode attention, rotary) with plain-JAX references.

Installed as ``codegen_core.pallas_kernels``. The model picks between them and XLA with one
rule, ``codegen_core.model.attention.kernel_backend`` (from ``CodeGenConfig.attention_impl``,
``rotary_impl`` and ``interpret``): flash attention for training, scoring and first prefills,
decode attention for KV-cache steps, rotary for every position embedding. The modules are
imported normally: a broken kernel module fails the model's import.
"""

from __future__ import annotations

import jax

from .decode_attention import decode_attention, decode_attention_reference
from .flash_attention import BlockSizes, attention_reference, flash_attention
from .rotary import apply_rotary, rotary_reference

__all__ = [
    "BlockSizes",
    "apply_rotary",
    "attention_reference",
    "decode_attention",
    "decode_attention_reference",
    "flash_attention",
    "pallas_available",
    "rotary_reference",
]


def pallas_available(backend: str | None = None) -> bool:
    """Whether the compiled (non-interpret) Pallas flash-attention kernel runs on ``backend``.

    ``backend`` is a JAX platform name ("tpu", "gpu", "cuda", "rocm", "cpu"); None means
    ``jax.default_backend()``. TPU: Mosaic kernels (flash attention, decode attention and
    rotary). NVIDIA GPU: Triton flash attention (rotary and decode use XLA there). CPU and
    anything else: no (use XLA).
    """
    platform = backend if backend is not None else jax.default_backend()
    return platform in ("tpu", "gpu", "cuda")
