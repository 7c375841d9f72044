"""Turning next-token logits into tokens: greedy, temperature, top-k, top-p.

Order as in transformers' warpers: temperature, then top-k, then top-p. The filters take
traced values (no recompilation per setting); whether a filter runs at all is static.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


def top_k_filter(logits: jax.Array, k: jax.Array) -> jax.Array:
    """Keep the k largest logits per row (ties with the k-th kept); k <= 0 keeps all.

    logits: (B, V) fp32; k: () int.
    """
    v = logits.shape[-1]
    k = jnp.where(k <= 0, v, jnp.minimum(k, v))
    sorted_desc = -jnp.sort(-logits, axis=-1)  # (B, V)
    kth = jnp.take_along_axis(sorted_desc, jnp.broadcast_to(k - 1, (logits.shape[0], 1)), -1)
    return jnp.where(logits < kth, _NEG_INF, logits)


def _order_key(x: jax.Array) -> jax.Array:
    """int32 keys ordered as the float32 values (no NaN): -0.0 and 0.0 share a key."""
    bits = jax.lax.bitcast_convert_type(x.astype(jnp.float32), jnp.int32)
    return jnp.where(bits < 0, -(bits & jnp.int32(0x7FFFFFFF)), bits)


def top_p_filter(logits: jax.Array, p: jax.Array) -> jax.Array:
    """Nucleus filter: keep the smallest set of top tokens whose probability reaches p.

    A token is kept when the probability mass ranked strictly above it is < p, so the top
    token always survives; ties with the last kept logit are kept.

    No sort: the threshold is the smallest logit whose strictly-larger mass is < p, found by
    bisection over the logits' order-preserving int32 keys (33 masked sums over V instead of
    a (B, V) sort, which XLA CPU runs ~10x slower for a 51200-id vocabulary).
    """
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)  # (B, V)
    key = _order_key(logits)  # (B, V)
    lo = key.min(-1, keepdims=True) - 1  # mass above it is everything: >= p (not kept)
    hi = key.max(-1, keepdims=True)  # mass above it is 0 < p (kept)

    def halve(_: int, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lo, hi = bounds
        mid = (lo & hi) + ((lo ^ hi) >> 1)  # floor((lo + hi) / 2) without int32 overflow
        above = jnp.where(key > mid, probs, 0.0).sum(-1, keepdims=True)
        kept = above < p
        return jnp.where(kept, lo, mid), jnp.where(kept, mid, hi)

    _, threshold = jax.lax.fori_loop(0, 33, halve, (lo, hi))  # threshold: (B, 1) key
    return jnp.where(key < threshold, _NEG_INF, logits)


def sample_next(
    logits: jax.Array,
    key: jax.Array,
    *,
    greedy: bool,
    temperature: jax.Array | float = 1.0,
    top_k: jax.Array | int = 0,
    top_p: jax.Array | float = 1.0,
    use_top_k: bool = False,
    use_top_p: bool = False,
) -> jax.Array:
    """Next tokens (B,) int32 from logits (B, V)."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if use_top_k:
        logits = top_k_filter(logits, jnp.asarray(top_k))
    if use_top_p:
        logits = top_p_filter(logits, jnp.asarray(top_p))
    return _categorical(key, logits)


def _categorical(key: jax.Array, logits: jax.Array) -> jax.Array:
    """One draw per row from softmax(logits) (B, V) by inverting the CDF with one uniform
    per row: exact like ``jax.random.categorical`` (a -inf logit is never drawn) but without
    B x V Gumbel noise, which costs XLA CPU more than a small model's whole decode step."""
    probs = jnp.exp(logits - logits.max(-1, keepdims=True))  # (B, V), unnormalised
    cdf = jnp.cumsum(probs, axis=-1)
    u = 1.0 - jax.random.uniform(key, (logits.shape[0], 1))  # (B, 1) in (0, 1]
    # the first index whose cdf reaches u * total: its probability is > 0
    return jnp.sum(cdf < u * cdf[:, -1:], axis=-1).astype(jnp.int32)
