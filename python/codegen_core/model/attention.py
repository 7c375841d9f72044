"""The one attention function of the model.

``attention`` dispatches to the Pallas flash-attention kernel (``codegen_core.pallas_kernels``)
when it runs on this backend and the call is a plain causal self-attention over one segment
(training, full forward); everything else (KV-cache prefill/decode, CPU) takes the XLA path,
``xla_attention``, which is also the reference the kernel is tested against.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

try:  # written concurrently by another package; never required
    from codegen_core import pallas_kernels as _pk

    _flash = getattr(_pk, "flash_attention", None)
    _pallas_available = getattr(_pk, "pallas_available", None)
except ImportError:  # pragma: no cover - depends on the install
    _flash = None
    _pallas_available = None

Impl = Literal["auto", "xla", "pallas"]

_NEG = float(jnp.finfo(jnp.float32).min)


def pallas_ok() -> bool:
    """True when the Pallas flash-attention kernel is importable and runs on this backend."""
    if _flash is None or _pallas_available is None:
        return False
    return bool(_pallas_available())


def xla_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array | None,
    q_offset: jax.Array | int,
    sm_scale: float,
) -> jax.Array:
    """Causal attention with fp32 scores and softmax.

    q: (B, nh, T, hs) queries at cache slots ``q_offset .. q_offset + T - 1``.
    k, v: (B, nh, S, hs) keys/values at slots ``0 .. S - 1``. Heads-major, as the Pallas
    kernel takes them: the per-head dots then need no transposed copy of the cache.
    key_mask: (B, S) bool, False for padding or not-yet-written slots (None: all valid).
    Query t sees key s iff ``s <= q_offset + t`` and ``key_mask[b, s]``. A query with no
    visible key (a padding row) gets a uniform average instead of NaN, as transformers does.
    """
    t_len, s_len = q.shape[2], k.shape[2]
    scores = jnp.einsum(
        "bhtd,bhsd->bhts", q, k, preferred_element_type=jnp.float32
    )  # (B, nh, T, S)
    q_slot = q_offset + jnp.arange(t_len)[:, None]  # (T, 1)
    visible = jnp.arange(s_len)[None, :] <= q_slot  # (T, S)
    visible = visible[None, None]  # (1, 1, T, S)
    if key_mask is not None:
        visible = visible & key_mask[:, None, None, :]  # (B, 1, T, S)
    scores = jnp.where(visible, scores * sm_scale, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # (B, nh, T, S)
    return jnp.einsum("bhts,bhsd->bhtd", probs, v, preferred_element_type=jnp.float32).astype(
        v.dtype
    )  # (B, nh, T, hs)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array | None = None,
    q_offset: jax.Array | int = 0,
    sm_scale: float | None = None,
    impl: Impl = "auto",
) -> jax.Array:
    """Causal multi-head attention; shapes as in :func:`xla_attention`.

    ``impl="auto"`` uses Pallas when :func:`pallas_ok` and the call is self-attention without
    a cache offset (``q_offset == 0`` as a Python int and T == S); padding is expressed to the
    kernel as segment ids (padding = segment 0, tokens = segment 1), so real tokens never see
    padding. ``impl="pallas"`` raises if the kernel cannot be used.
    """
    if (q.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2]
            or q.shape[3] != k.shape[3]):  # fmt: skip
        raise ValueError(f"attention shapes q={q.shape} k={k.shape} v={v.shape} do not match")
    scale = sm_scale if sm_scale is not None else q.shape[-1] ** -0.5
    self_attn = isinstance(q_offset, int) and q_offset == 0 and q.shape[2] == k.shape[2]
    use_pallas = impl == "pallas" or (impl == "auto" and self_attn and pallas_ok())
    if use_pallas:
        if not self_attn or _flash is None:
            raise ValueError("impl='pallas' needs self-attention (q_offset=0, T == S)")
        seg = None if key_mask is None else key_mask.astype(jnp.int32)  # (B, S)
        return _flash(q, k, v, causal=True, sm_scale=scale, segment_ids=seg)  # (B, nh, T, hs)
    return xla_attention(q, k, v, key_mask=key_mask, q_offset=q_offset, sm_scale=scale)
