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


def top_p_filter(logits: jax.Array, p: jax.Array) -> jax.Array:
    """Nucleus filter: keep the smallest set of top tokens whose probability reaches p.

    A token is kept when the probability mass ranked strictly above it is < p, so the top
    token always survives; ties with the last kept logit are kept.
    """
    sorted_desc = -jnp.sort(-logits, axis=-1)  # (B, V)
    probs = jax.nn.softmax(sorted_desc, axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_above < p
    # smallest kept logit per row (sorted_desc is descending and keep is a prefix)
    n_keep = jnp.maximum(keep.sum(-1, keepdims=True), 1)
    threshold = jnp.take_along_axis(sorted_desc, n_keep - 1, -1)
    return jnp.where(logits < threshold, _NEG_INF, logits)


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
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
