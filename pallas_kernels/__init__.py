"""Pallas kernels (flash attention, rotary) with plain-JAX references.

Installed as ``codegen_core.pallas_kernels``. The model calls ``flash_attention`` and
``apply_rotary`` unconditionally: with ``backend="auto"`` they run the compiled Pallas kernels
where ``pallas_available()`` says so and the plain-XLA references elsewhere (CPU).
"""

from __future__ import annotations

import jax

from .flash_attention import BlockSizes, attention_reference, flash_attention
from .rotary import apply_rotary, rotary_reference

__all__ = [
    "BlockSizes",
    "apply_rotary",
    "attention_reference",
    "flash_attention",
    "pallas_available",
    "rotary_reference",
]


def pallas_available(backend: str | None = None) -> bool:
    """Whether the compiled (non-interpret) Pallas kernels run on ``backend``.

    ``backend`` is a JAX platform name ("tpu", "gpu", "cuda", "rocm", "cpu"); None means
    ``jax.default_backend()``. TPU: Mosaic kernels (flash attention and rotary). NVIDIA GPU:
    Triton flash attention (rotary uses XLA there). CPU and anything else: no (use XLA).
    """
    platform = backend if backend is not None else jax.default_backend()
    return platform in ("tpu", "gpu", "cuda")
