"""Sampling: one jit-compiled program per (shapes, settings) runs prefill and the whole
decode loop (``lax.while_loop``), so no Python runs per token.

Batches of prompts of different lengths are left padded into one (B, T) array; padding
never becomes visible to attention and rotary positions count only real tokens, so each
row gives what it would give alone (up to float rounding). Rows stop independently on a
stop token (EOS by default); the loop ends when all rows stopped or ``max_new_tokens``.
Stop *patterns* (CodeGen's ``^#``, ``\\n\\n\\n``, ...) are applied to the decoded text
afterwards, as CodeGen's own sampler does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from codegen_core.model.config import CodeGenConfig
from codegen_core.model.transformer import KVCache, Params, cache_dtype, forward, init_cache
from codegen_core.sampling.logits import sample_next
from codegen_core.sampling_params import SamplingParams
from codegen_core.tokenizer.fim import encode_text
from codegen_core.tokenizer.stop import truncate_before_pattern

__all__ = ["GenerationOutput", "SamplingParams", "generate", "left_pad", "prefill_and_decode"]

StreamFn = Callable[[int, np.ndarray], None]


@dataclass
class GenerationOutput:
    """Per output row (prompt i's samples are rows i*n .. i*n + n - 1)."""

    tokens: list[list[int]]  # generated ids, the stop token excluded
    finished: list[bool]  # True when a stop token ended the row
    prompt_index: list[int]  # which prompt each row continues
    texts: list[str] | None = None  # decoded (and stop-pattern truncated) when a tokenizer given


# ---- the compiled program -----------------------------------------------------------------
def _decode_loop(
    params: Params,
    cache: KVCache,
    logits: jax.Array,
    key: jax.Array,
    *,
    knobs: tuple[jax.Array, jax.Array, jax.Array],
    stop_ids: jax.Array,
    config: CodeGenConfig,
    max_new_tokens: int,
    flags: tuple[bool, bool, bool],
    stream: StreamFn | None,
    vocab_limit: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, KVCache]:
    """Sample up to max_new_tokens tokens per row; every sampled token is fed to the cache.

    vocab_limit: only ids below it are sampled (the tokenizer's size: CodeGen checkpoints
    have 51200 embedding rows for 50295 CodeGen1 ids, and an untrained row must not come out).

    logits: (B, V) next-token logits after the prompt. Returns (tokens (B, N) padded with
    the pad id, n_generated (B,) stop token included, stopped (B,), cache).
    """
    batch = logits.shape[0]
    greedy, use_top_k, use_top_p = flags
    temperature, top_k, top_p = knobs
    pad = jnp.int32(config.pad_id)

    def cond(state: tuple[Any, ...]) -> jax.Array:
        i, _, _, _, _, done, _ = state
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(state: tuple[Any, ...]) -> tuple[Any, ...]:
        i, cache, logits, key, out, done, n_gen = state
        key, sub = jax.random.split(key)
        if vocab_limit is not None and vocab_limit < logits.shape[-1]:
            logits = jnp.where(jnp.arange(logits.shape[-1]) < vocab_limit, logits, -jnp.inf)
        tok = sample_next(
            logits, sub, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p,
            use_top_k=use_top_k, use_top_p=use_top_p,
        )  # fmt: skip
        live = ~done
        tok = jnp.where(live, tok, pad)  # (B,)
        if stream is not None:
            io_callback(stream, None, i, jnp.where(live, tok, -1), ordered=True)
        out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, i))
        n_gen = n_gen + live.astype(jnp.int32)
        done = done | (live & jnp.isin(tok, stop_ids))
        next_logits, cache = forward(
            params, tok[:, None], config, token_mask=live[:, None], cache=cache
        )
        return i + 1, cache, next_logits[:, 0], key, out, done, n_gen

    out = jnp.full((batch, max_new_tokens), pad, jnp.int32)
    done = jnp.zeros((batch,), bool)
    n_gen = jnp.zeros((batch,), jnp.int32)
    state = (jnp.int32(0), cache, logits, key, out, done, n_gen)
    _, cache, _, _, out, done, n_gen = jax.lax.while_loop(cond, body, state)
    return out, n_gen, done, cache


@functools.partial(
    jax.jit,
    static_argnames=("config", "max_new_tokens", "flags", "stream", "vocab_limit", "empty_cache"),
    donate_argnames=("cache",),
)
def prefill_and_decode(
    params: Params,
    cache: KVCache,
    tokens: jax.Array,
    token_mask: jax.Array,
    key: jax.Array,
    *,
    knobs: tuple[jax.Array, jax.Array, jax.Array],
    stop_ids: jax.Array,
    config: CodeGenConfig,
    max_new_tokens: int,
    flags: tuple[bool, bool, bool],
    stream: StreamFn | None = None,
    vocab_limit: int | None = None,
    empty_cache: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array, KVCache]:
    """Append tokens (B, T) (left padded, mask 0 = pad) to the cache, then sample.

    The cache is donated (updated in place). ``flags`` = (greedy, use_top_k, use_top_p);
    ``knobs`` = (temperature, top_k, top_p) as traced scalars. ``empty_cache=True`` promises
    nothing is cached yet (a first prefill: the prompt self-attends, see ``forward``).
    """
    logits, cache = forward(
        params, tokens, config, token_mask=token_mask, cache=cache, last_only=True,
        empty_cache=empty_cache,
    )  # fmt: skip
    return _decode_loop(
        params, cache, logits[:, 0], key, knobs=knobs, stop_ids=stop_ids,
        config=config, max_new_tokens=max_new_tokens, flags=flags, stream=stream,
        vocab_limit=vocab_limit,
    )  # fmt: skip


# ---- host-side helpers --------------------------------------------------------------------
def left_pad(
    rows: Sequence[Sequence[int]], pad_id: int, multiple: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, mask) int32 arrays (B, T), T a multiple of ``multiple``, rows right-aligned."""
    if not rows:
        raise ValueError("no prompts given")
    longest = max(len(r) for r in rows)
    if longest == 0:
        raise ValueError("every prompt is empty; give at least one token")
    t = -(-longest // multiple) * multiple
    tokens = np.full((len(rows), t), pad_id, np.int32)
    mask = np.zeros((len(rows), t), np.int32)
    for i, r in enumerate(rows):
        if len(r) == 0:
            raise ValueError(f"prompt {i} is empty; give at least one token")
        tokens[i, t - len(r) :] = np.asarray(r, np.int32)
        mask[i, t - len(r) :] = 1
    return tokens, mask


def decodable_ids(tokenizer: Any) -> int | None:
    """The number of ids ``tokenizer`` can decode (codegen_core.Tokenizer.vocab_size), if known."""
    size = getattr(tokenizer, "vocab_size", None)
    return size if isinstance(size, int) else None


def truncate_text(text: str, stop_patterns: Sequence[str] | None) -> str:
    """Cut ``text`` where CodeGen's sampler would (``truncate_before_pattern``); no patterns,
    no cut."""
    return truncate_before_pattern(text, stop_patterns) if stop_patterns else text


def make_key(seed: int | jax.Array | None) -> jax.Array:
    if seed is None:
        return jax.random.key(0)
    if isinstance(seed, int):
        return jax.random.key(seed)
    return seed


def _knobs(sp: SamplingParams) -> tuple[tuple[jax.Array, ...], tuple[bool, bool, bool]]:
    knobs = (jnp.float32(max(sp.temperature, 1e-6)), jnp.int32(sp.top_k), jnp.float32(sp.top_p))
    flags = (sp.greedy, (not sp.greedy) and sp.top_k > 0, (not sp.greedy) and sp.top_p < 1.0)
    return knobs, flags


def _stop_array(config: CodeGenConfig, stop_token_ids: Sequence[int] | None) -> jax.Array:
    ids = (config.eos_token_id,) if stop_token_ids is None else tuple(stop_token_ids)
    return jnp.asarray(ids if ids else (-1,), jnp.int32)


def generate(
    params: Params,
    config: CodeGenConfig,
    prompts: Sequence[Sequence[int]] | Sequence[str],
    *,
    sampling: SamplingParams | None = None,
    num_samples: int | None = None,
    seed: int | jax.Array | None = None,
    stop_token_ids: Sequence[int] | None = None,
    tokenizer: Any = None,
    stop_patterns: Sequence[str] | None = None,
    pad_to_multiple: int = 8,
    stream: StreamFn | None = None,
) -> GenerationOutput:
    """Continue every prompt ``num_samples`` times.

    prompts: token id lists, or strings (then ``tokenizer`` is required; text is encoded as
    text, so special-token strings in it are not control tokens: pass ids for those).
    sampling: the settings (default greedy, :class:`SamplingParams`); ``num_samples``,
    ``seed`` and ``stop_patterns`` default to its ``n``, ``seed`` and ``stop``. seed: an int
    or a ``jax.random.key``; the same seed and inputs give the same samples.
    stop_token_ids: default (config.eos_token_id,). stop_patterns: applied to the decoded
    text (needs a tokenizer). pad_to_multiple: the padded prompt length is rounded up to it
    so prompts of similar length share one compiled program. stream(step, tokens) is called
    from inside the compiled loop with each step's tokens (B,) (-1 for finished rows).
    """
    sp = sampling or SamplingParams()
    num_samples = sp.n if num_samples is None else num_samples
    seed = sp.seed if seed is None else seed
    stop_patterns = sp.stop if stop_patterns is None else stop_patterns
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if stop_patterns and tokenizer is None:
        raise ValueError("stop_patterns are applied to text: pass a tokenizer")
    if len(prompts) and isinstance(prompts[0], str):
        if tokenizer is None:
            raise ValueError("text prompts need a tokenizer (or pass token id lists)")
        rows = [encode_text(tokenizer, p) for p in prompts]  # type: ignore[arg-type]
    else:
        rows = [list(map(int, p)) for p in prompts]
    for i, r in enumerate(rows):
        bad = [t for t in r if not 0 <= t < config.vocab_size]
        if bad:
            raise ValueError(f"prompt {i} has token id {bad[0]} outside [0, {config.vocab_size})")
    prompt_index = [i for i in range(len(rows)) for _ in range(num_samples)]
    tokens, mask = left_pad([rows[i] for i in prompt_index], config.pad_id, pad_to_multiple)
    batch, t = tokens.shape
    cache = init_cache(config, batch, t + sp.max_new_tokens, cache_dtype(params))
    knobs, flags = _knobs(sp)
    out, n_gen, done, _ = prefill_and_decode(
        params, cache, jnp.asarray(tokens), jnp.asarray(mask), make_key(seed),
        knobs=knobs, stop_ids=_stop_array(config, stop_token_ids),
        config=config, max_new_tokens=sp.max_new_tokens, flags=flags, stream=stream,
        vocab_limit=decodable_ids(tokenizer), empty_cache=True,
    )  # fmt: skip
    out, n_gen, done = np.asarray(out), np.asarray(n_gen), np.asarray(done)
    gen = [out[b, : n_gen[b] - int(done[b])].tolist() for b in range(batch)]
    texts = None
    if tokenizer is not None:
        texts = [truncate_text(tokenizer.decode(g), stop_patterns) for g in gen]
    return GenerationOutput(
        tokens=gen, finished=done.tolist(), prompt_index=prompt_index, texts=texts
    )
