"""Decode attention: a few new queries per row against the KV cache, as a Pallas TPU kernel.

The sampler's decode step attends T (usually 1) new tokens of every row to the whole cache.
The flash kernel is the wrong shape for it (128-row query blocks, causal tiles over the
sequence); this kernel keeps the cache in the layout the model stores it and streams it once:

- ``q`` [rows, T, head_dim] (rows = batch * heads, merged), queries at cache slots
  ``offset .. offset + T - 1``; ``k``, ``v`` [rows, S, head_dim]: the cache as stored.
- ``key_mask`` [batch, S] bool: a slot holds a real token of that batch row (left padding
  and unwritten slots are False); row ``r`` of q/k/v is batch row ``r // heads``.
- Query t sees slot s iff ``s <= offset + t`` and ``key_mask[b, s]``: per-row lengths are
  the mask; the causal limit is the shared offset (every row writes the same slot per step).
- ``offset`` is a traced int32 scalar (``cache.index``), passed by scalar prefetch: kv blocks
  after the last written slot are neither computed nor fetched (their block index is
  clamped to the last live one, and Pallas skips the copy of a repeated block), so a step
  costs the cache written so far, not the allocated length.

Grid (rows, query blocks, kv blocks): T <= 256 new tokens are one query block (padded to 8
rows), more (a prompt appended to a non-empty cache) go in blocks of 256. The kv axis accumulates the online softmax (fp32 ``m``, ``l`` and
output) in VMEM scratch, as the flash kernel's forward. Scores and softmax are fp32, ``p`` is
cast to ``v.dtype`` for ``p @ v``, the output has ``q.dtype``. A query with no visible key
(a finished row's padding) gets an average of values instead of NaN (meaningless; unused).
Forward only: decoding takes no gradient. TPU (Mosaic) only; ``interpret=True`` runs it
anywhere (CPU tests).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from .flash_attention import MASK_VALUE, NUM_LANES, NUM_SUBLANES

DEFAULT_BLOCK_K = 512  # cache slots per grid step (a multiple of 128)
BLOCK_Q = 256  # query rows per grid step when more new tokens come (a prefill into a cache)


def _kv_block(s: int, block_k: int) -> int:
    """A kv block that tiles S exactly: S itself when it fits one block, else the largest
    multiple of 128 <= block_k dividing S (0: none, the cache must be padded)."""
    if s <= block_k:
        return s
    for bk in range(block_k - block_k % NUM_LANES, 0, -NUM_LANES):
        if s % bk == 0:
            return bk
    return 0


def _decode_kernel(*refs, sm_scale: float, bk: int):
    off_ref, q_ref, k_ref, v_ref, km_ref, o_ref, m_scr, l_scr, acc_scr = refs
    i, j = pl.program_id(1), pl.program_id(2)
    tq = q_ref.shape[0]  # query rows of this block
    off = off_ref[0] + i * tq  # the slot of this block's first query
    k_start = j * bk

    @pl.when(j == 0)
    def _init():
        m_scr[...] = jnp.full(m_scr.shape, -jnp.inf, jnp.float32)
        l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
        acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

    @pl.when(k_start <= off + tq - 1)  # a block with any slot a query may see
    def _step():
        q, k, v = q_ref[...], k_ref[...], v_ref[...]
        prec = jax.lax.Precision.HIGHEST if q.dtype == jnp.float32 else None
        s = jax.lax.dot_general(q, k, (((1,), (1,)), ((), ())), precision=prec,
                                preferred_element_type=jnp.float32) * sm_scale  # fmt: skip
        cols = k_start + jax.lax.broadcasted_iota(jnp.int32, (tq, bk), 1)
        rows = off + jax.lax.broadcasted_iota(jnp.int32, (tq, bk), 0)
        visible = (cols <= rows) & (km_ref[:1, :] != 0)  # [Tp, bk]
        s = jnp.where(visible, s, MASK_VALUE)
        m_prev, l_prev = m_scr[...], l_scr[...]  # [Tp, 128] lane-replicated
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))
        p = jnp.exp(s - m_next[:, :1])  # [Tp, bk]
        alpha = jnp.exp(m_prev - m_next)
        l_scr[...] = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
        m_scr[...] = m_next
        pv = jax.lax.dot(p.astype(v.dtype), v, precision=prec,
                         preferred_element_type=jnp.float32)  # fmt: skip  # [Tp, D]
        acc_scr[...] = acc_scr[...] * alpha[:, :1] + pv

    @pl.when(j == pl.num_programs(2) - 1)
    def _finish():
        o_ref[...] = (acc_scr[...] / l_scr[...][:, :1]).astype(o_ref.dtype)


def decode_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    key_mask: jax.Array,
    offset: jax.Array | int,
    *,
    sm_scale: float | None = None,
    block_k: int = DEFAULT_BLOCK_K,
    interpret: bool = False,
) -> jax.Array:
    """Attention of T new queries per row over the cache (see the module docstring).

    Args:
      q: [rows, T, head_dim]; rows = batch * heads (batch-major, as the KV cache stores it).
      k, v: [rows, S, head_dim], the cache (this step's keys/values already written).
      key_mask: [batch, S] bool (or 0/1 ints), True where a slot holds a real token.
      offset: int32 scalar, the cache slot of query 0 (traced: ``cache.index``).
      sm_scale: score scale, default ``1 / sqrt(head_dim)``.
      block_k: kv slots per grid step, a multiple of 128 (an upper bound: the block divides S;
        when no multiple of 128 does and S > block_k, the cache is padded, a copy per call).
      interpret: run in interpret mode (CPU tests).

    Returns:
      [rows, T, head_dim] in ``q.dtype``.
    """
    if q.ndim != 3 or k.ndim != 3 or k.shape != v.shape:
        raise ValueError(f"decode_attention takes q [rows, T, D] and k, v [rows, S, D], got "
                         f"q={q.shape} k={k.shape} v={v.shape}")  # fmt: skip
    rows, t, d = q.shape
    s_len = k.shape[1]
    if k.shape[0] != rows or k.shape[2] != d:
        raise ValueError(f"q {q.shape} and the cache {k.shape} disagree on rows or head_dim")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if key_mask.ndim != 2 or key_mask.shape[1] != s_len or rows % key_mask.shape[0]:
        raise ValueError(f"key_mask must be [batch, S={s_len}] with batch dividing rows={rows}, "
                         f"got {key_mask.shape}")  # fmt: skip
    if t > s_len:
        raise ValueError(f"more queries ({t}) than cache slots ({s_len})")
    if block_k <= 0 or block_k % NUM_LANES:
        raise ValueError(f"block_k must be a positive multiple of 128, got {block_k}")
    if d > NUM_LANES and d % NUM_LANES:
        raise ValueError(f"the TPU kernel needs head_dim <= 128 or a multiple of 128, got {d}")
    heads = rows // key_mask.shape[0]
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    bk = _kv_block(s_len, block_k)
    mask = key_mask.astype(jnp.int32)
    if bk == 0:  # no block tiles S: pad the cache (padded slots are masked out)
        bk = block_k
        pad = -(-s_len // bk) * bk - s_len
        k, v = (jnp.pad(x, ((0, 0), (0, pad), (0, 0))) for x in (k, v))
        mask = jnp.pad(mask, ((0, 0), (0, pad)))
    s_pad = k.shape[1]
    bq = -(-t // NUM_SUBLANES) * NUM_SUBLANES if t <= BLOCK_Q else BLOCK_Q
    tp = -(-t // bq) * bq
    qp = jnp.pad(q, ((0, 0), (0, tp - t), (0, 0)))  # [rows, Tp, D]
    mask8 = jnp.broadcast_to(mask[:, None, :], (mask.shape[0], NUM_SUBLANES, s_pad))
    off = jnp.reshape(jnp.asarray(offset, jnp.int32), (1,))
    nk = s_pad // bk

    # (lax.div: values are non-negative, and Mosaic lowers // through sign, which needs the
    # TPU generation at lowering time)
    def kv_blk(i, j, off_ref):  # blocks after the last visible slot repeat it (no fetch)
        return jnp.minimum(j, jax.lax.div(off_ref[0] + (i + 1) * bq - 1, bk))

    def mask_blk(r, i, j, off_ref):
        return jax.lax.div(r, heads), 0, kv_blk(i, j, off_ref)

    grid_spec = pltpu.PrefetchScalarGridSpec(
        num_scalar_prefetch=1,
        grid=(rows, tp // bq, nk),
        in_specs=[
            pl.BlockSpec((None, bq, d), lambda r, i, j, o: (r, i, 0)),
            pl.BlockSpec((None, bk, d), lambda r, i, j, o: (r, kv_blk(i, j, o), 0)),
            pl.BlockSpec((None, bk, d), lambda r, i, j, o: (r, kv_blk(i, j, o), 0)),
            pl.BlockSpec((None, NUM_SUBLANES, bk), mask_blk),
        ],
        out_specs=pl.BlockSpec((None, bq, d), lambda r, i, j, o: (r, i, 0)),
        scratch_shapes=[
            pltpu.VMEM((bq, NUM_LANES), jnp.float32),  # m: running row max
            pltpu.VMEM((bq, NUM_LANES), jnp.float32),  # l: running row sum
            pltpu.VMEM((bq, d), jnp.float32),  # un-normalised output
        ],
    )
    out = pl.pallas_call(
        functools.partial(_decode_kernel, sm_scale=scale, bk=bk),
        out_shape=jax.ShapeDtypeStruct(qp.shape, q.dtype),
        grid_spec=grid_spec,
        compiler_params=pltpu.CompilerParams(
            dimension_semantics=("parallel", "parallel", "arbitrary")
        ),
        interpret=interpret,
        name="decode_attention",
    )(off, qp, k, v, mask8)
    return out[:, :t]  # [rows, T, D]


def decode_attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    key_mask: jax.Array,
    offset: jax.Array | int,
    *,
    sm_scale: float | None = None,
) -> jax.Array:
    """Plain jnp with the same semantics (fp32 scores and softmax)."""
    rows, t, d = q.shape
    s_len = k.shape[1]
    heads = rows // key_mask.shape[0]
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    hi = jax.lax.Precision.HIGHEST
    s = jnp.einsum("rtd,rsd->rts", q, k, precision=hi, preferred_element_type=jnp.float32)
    slots = jnp.asarray(offset, jnp.int32) + jnp.arange(t)[:, None]  # [T, 1]
    visible = (jnp.arange(s_len)[None, :] <= slots) & jnp.repeat(key_mask.astype(bool), heads,
                                                                  axis=0)[:, None, :]  # fmt: skip
    p = jax.nn.softmax(jnp.where(visible, s * scale, MASK_VALUE), axis=-1)
    o = jnp.einsum("rts,rsd->rtd", p.astype(v.dtype), v, precision=hi,
                   preferred_element_type=jnp.float32)  # fmt: skip
    return o.astype(q.dtype)
