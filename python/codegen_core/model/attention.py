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


# Query block of the XLA path's causal skipping: with a static offset, queries
# [t0, t0 + block) only read keys [0, offset + t0 + block), so about half of the score and
# softmax work of a long self-attention (prefill, training) is never done.
CAUSAL_BLOCK = 128


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
    The KV cache's merged layout is accepted too: q (B * nh, T, hs), k, v (B * nh, S, hs),
    key_mask (B * nh, S) (the cache is read as stored; see ``KVCache``).
    key_mask: (B, S) bool, False for padding or not-yet-written slots (None: all valid).
    Query t sees key s iff ``s <= q_offset + t`` and ``key_mask[b, s]``. A query with no
    visible key (a padding row) gets a uniform average instead of NaN, as transformers does
    (over the keys of its query block when blocked; padding rows never reach real tokens).
    With a static (Python int) ``q_offset``, queries go in blocks of ``CAUSAL_BLOCK`` that
    read only the keys they can see.
    """
    t_len, s_len = q.shape[-2], k.shape[-2]
    if not isinstance(q_offset, int) or t_len < 2 * CAUSAL_BLOCK:
        return _attend(q, k, v, key_mask=key_mask, q_offset=q_offset, sm_scale=sm_scale)
    outs = []
    for t0 in range(0, t_len, CAUSAL_BLOCK):
        t1 = min(t_len, t0 + CAUSAL_BLOCK)
        s1 = max(1, min(s_len, q_offset + t1))  # keys this block can see
        km = None if key_mask is None else key_mask[:, :s1]
        outs.append(_attend(q[..., t0:t1, :], k[..., :s1, :], v[..., :s1, :], key_mask=km,
                            q_offset=q_offset + t0, sm_scale=sm_scale))  # fmt: skip
    return jnp.concatenate(outs, axis=-2)


def _attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array | None,
    q_offset: jax.Array | int,
    sm_scale: float,
) -> jax.Array:
    t_len, s_len = q.shape[-2], k.shape[-2]
    scores = jnp.einsum(
        "...td,...sd->...ts", q, k, preferred_element_type=jnp.float32
    )  # (B, nh, T, S) or (B * nh, T, S)
    q_slot = q_offset + jnp.arange(t_len)[:, None]  # (T, 1)
    visible = jnp.arange(s_len)[None, :] <= q_slot  # (T, S)
    if key_mask is not None:
        # (B, 1, 1, S) or (B * nh, 1, S): broadcast over heads (4-D) and queries
        km = key_mask.reshape(key_mask.shape[0], *([1] * (q.ndim - 2)), s_len)
        visible = visible & km
    scores = jnp.where(visible, scores * sm_scale, _NEG)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)  # (..., T, S)
    return jnp.einsum("...ts,...sd->...td", probs, v, preferred_element_type=jnp.float32).astype(
        v.dtype
    )  # (B, nh, T, hs) or (B * nh, T, hs)


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
