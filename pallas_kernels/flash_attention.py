"""Flash attention (forward + backward) as Pallas kernels for TPU (Mosaic) and GPU (Triton).

FlashAttention-2 (Dao, 2023, https://arxiv.org/abs/2307.08691): the [q_seq, kv_seq] score
matrix is never materialised. The forward pass streams kv blocks past a resident q block and
keeps the running row max ``m``, row sum ``l`` and the un-normalised output in fp32; it also
writes ``lse = m + log(l)`` so the backward pass can recompute the probabilities of any block
(``p = exp(s - lse)``) instead of storing them.

Layout and semantics (the model calls exactly this):

- ``q`` is [batch, heads, q_seq, head_dim]; ``k``, ``v`` are [batch, heads, kv_seq, head_dim]
  with ``q_seq <= kv_seq``. When ``q_seq < kv_seq`` the queries are the *last* ``q_seq``
  positions of the kv sequence (bottom-right alignment, as in a KV cache): query row ``i``
  sits at absolute position ``i + kv_seq - q_seq``, and the causal mask keeps keys ``j`` with
  ``j <= i + kv_seq - q_seq``.
- ``segment_ids`` [batch, kv_seq] int32: documents packed into one sequence attend only within
  their document (query and key must carry equal ids). The query ids are the last ``q_seq``
  entries, with the same alignment as the causal mask.
- Scores and softmax statistics are fp32; ``p`` is cast to ``v.dtype`` before the ``p @ v``
  matmul (as every flash kernel does); the output has ``q.dtype``.
- Sequence lengths that are not multiples of the block sizes are padded internally (zeros for
  q/k/v, padded keys masked out) and the output is sliced back: any length works.
- A query row that can see no key at all (only possible with segment ids whose query id is
  absent from the keys it may see) gets an average of values instead of NaN; such rows are
  meaningless and the kernel and the reference need not agree on them.

- fp32 inputs get fp32 matmuls (``Precision.HIGHEST``; Triton would otherwise use TF32).

Backends: ``"tpu"`` (Mosaic kernels with VMEM scratch accumulators), ``"gpu"`` (Triton
kernels that loop over the other sequence inside the kernel), ``"xla"`` (the plain-jnp
reference, autodiff for the gradient). ``"auto"`` picks by ``jax.default_backend()``; on CPU it
picks ``"xla"`` unless ``interpret=True``, in which case the TPU kernels run in interpret mode.

Practical notes:

- TPU blocks are multiples of 128 tokens, so a 1-token decode step pads q to 128 rows: use the
  XLA path (or a dedicated decode kernel) for cached decoding, this kernel for prefill/training.
- TPU head_dim must be <= 128 or a multiple of 128 (64, 80, 128, 256 are fine). On GPU the
  head_dim is zero-padded to a power of two (80 -> 128) because Triton tiles must be.
- A ``pallas_call`` is not partitioned automatically: under a mesh, call this inside
  ``shard_map`` with batch and/or heads sharded (each device then runs the kernel locally).
- jax >= 0.11 emits a DeprecationWarning for the Pallas Triton backend the GPU kernels use;
  the kernels still compile and pass there (checked on an H100 with jax 0.11.2).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as plgpu

Backend = Literal["auto", "tpu", "gpu", "xla"]

# Finite "minus infinity": a fully masked row then yields exp(0) = 1 weights instead of NaN.
MASK_VALUE = -0.7 * float(np.finfo(np.float32).max)
NUM_LANES = 128  # TPU vreg lane count: kv blocks and the lane-replicated m/l/lse are this wide.
NUM_SUBLANES = 8
TPU_BLOCK_ALIGN = 128
GPU_MIN_BLOCK = 16  # smallest tile Triton's tl.dot accepts
TRANS_B = (((1,), (1,)), ((), ()))  # contract the last dims: x @ y.T

_SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


@dataclasses.dataclass(frozen=True)
class BlockSizes:
    """Tile sizes (in tokens) of the forward and backward kernels.

    Each is an upper bound: a block larger than the (aligned) sequence shrinks to it. On TPU
    every size must be a multiple of 128 (kv blocks are the lane dimension of the score tile);
    on GPU a power of two >= 16.
    """

    block_q: int = 512  # forward: query rows resident per grid step
    block_k: int = 512  # forward: kv rows streamed per step
    block_q_bwd: int = 256  # backward (dq and dk/dv kernels): query rows per step
    block_k_bwd: int = 256  # backward: kv rows per step

    @classmethod
    def get_default(cls, backend: str | None = None) -> BlockSizes:
        """Defaults for ``backend`` ("tpu" or "gpu"; None = ``jax.default_backend()``)."""
        backend = backend or jax.default_backend()
        if backend in ("gpu", "cuda", "rocm"):
            # Triton keeps q, k, v tiles in shared memory: 64-row tiles fit head_dim 256.
            return cls(block_q=64, block_k=64, block_q_bwd=64, block_k_bwd=64)
        return cls()


@dataclasses.dataclass(frozen=True)
class _Config:
    """Static (hashable) description of one padded attention problem."""

    backend: Literal["tpu", "gpu"]
    causal: bool
    sm_scale: float
    q_len: int  # unpadded lengths
    kv_len: int
    kv_padded: int  # kv length after padding to the block sizes
    block_q: int  # effective block sizes (divide the padded lengths)
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    interpret: bool
    head_dim: int  # unpadded (the GPU path pads it to a power of two)
    backward: Literal["pallas", "xla"]

    @property
    def offset(self) -> int:
        """Absolute position of query row 0 (bottom-right causal alignment)."""
        return self.kv_len - self.q_len


# --------------------------------------------------------------------------------------------
# Block math shared by every kernel.
# --------------------------------------------------------------------------------------------


def _block_mask(
    q_start: jax.Array | int,
    k_start: jax.Array | int,
    shape: tuple[int, int],
    cfg: _Config,
    *,
    q_seg: jax.Array | None,
    k_seg: jax.Array | None,
) -> jax.Array | None:
    """Visibility of the [block_q, block_k] tile whose corner is (q_start, k_start)."""
    mask = None
    need_pos = cfg.causal or cfg.kv_len < cfg.kv_padded
    if need_pos:
        cols = k_start + jax.lax.broadcasted_iota(jnp.int32, shape, 1)
    if cfg.causal:
        rows = q_start + jax.lax.broadcasted_iota(jnp.int32, shape, 0)
        mask = cols <= rows + cfg.offset
    if cfg.kv_len < cfg.kv_padded:  # padded keys are never visible
        valid = cols < cfg.kv_len
        mask = valid if mask is None else jnp.logical_and(mask, valid)
    if q_seg is not None:
        same = q_seg == k_seg
        mask = same if mask is None else jnp.logical_and(mask, same)
    return mask


def _precision(dtype) -> jax.lax.Precision | None:
    """fp32 inputs get true fp32 matmuls (Triton's default is TF32, ~1e-3 relative error)."""
    return jax.lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else None


def _dot(x: jax.Array, y: jax.Array) -> jax.Array:
    """x @ y with fp32 accumulation."""
    return jax.lax.dot(x, y, precision=_precision(x.dtype), preferred_element_type=jnp.float32)


def _dot_t(x: jax.Array, y: jax.Array) -> jax.Array:
    """x @ y.T with fp32 accumulation."""
    return jax.lax.dot_general(
        x, y, TRANS_B, precision=_precision(x.dtype), preferred_element_type=jnp.float32
    )


def _scores(q: jax.Array, k: jax.Array, sm_scale: float, mask: jax.Array | None) -> jax.Array:
    s = _dot_t(q, k)  # [bq, bk]
    s = s * sm_scale
    return s if mask is None else jnp.where(mask, s, MASK_VALUE)


def _lanes(x: jax.Array, n: int) -> jax.Array:
    """Lane-replicated [rows, 128] statistics -> [rows, n] (TPU layout-friendly broadcast)."""
    if n % NUM_LANES == 0:
        return jnp.tile(x, (1, n // NUM_LANES))
    if n < NUM_LANES:
        return x[:, :n]
    raise ValueError(f"TPU kernels need head_dim <= 128 or a multiple of 128, got {n=}")


# --------------------------------------------------------------------------------------------
# TPU (Mosaic) kernels. Grid (batch, heads, outer block, inner block); the inner axis is a
# reduction ("arbitrary") accumulating into VMEM scratch; q/k/v tiles are [block, head_dim].
# --------------------------------------------------------------------------------------------


def _tpu_causal_runs(cfg: _Config, q_start, bq: int, k_start) -> jax.Array | bool:
    """Whether the tile has any visible entry under the causal mask."""
    if not cfg.causal:
        return True
    return k_start <= q_start + bq - 1 + cfg.offset


def _tpu_fwd_kernel(*refs, cfg: _Config, has_seg: bool):
    if has_seg:
        q_ref, k_ref, v_ref, qs_ref, ks_ref, o_ref, lse_ref, m_scr, l_scr, acc_scr = refs
    else:
        q_ref, k_ref, v_ref, o_ref, lse_ref, m_scr, l_scr, acc_scr = refs
        qs_ref = ks_ref = None
    bq, bk = cfg.block_q, cfg.block_k
    head_dim = q_ref.shape[-1]
    i, j = pl.program_id(2), pl.program_id(3)
    q_start, k_start = i * bq, j * bk

    @pl.when(j == 0)
    def _init():
        m_scr[...] = jnp.full(m_scr.shape, -jnp.inf, jnp.float32)
        l_scr[...] = jnp.zeros(l_scr.shape, jnp.float32)
        acc_scr[...] = jnp.zeros(acc_scr.shape, jnp.float32)

    # In FlashAttention-2 algorithm 1 the kv loop is innermost: here it is grid axis 3.
    @pl.when(_tpu_causal_runs(cfg, q_start, bq, k_start))
    def _step():
        q_seg = k_seg = None
        if has_seg:
            q_seg = jnp.tile(qs_ref[...], (1, bk // NUM_LANES))  # [bq, bk]
            k_seg = ks_ref[:1, :]  # [1, bk]
        mask = _block_mask(
            q_start,
            k_start,
            (bq, bk),
            cfg,
            q_seg=q_seg,
            k_seg=k_seg,
        )
        s = _scores(q_ref[...], k_ref[...], cfg.sm_scale, mask)  # [bq, bk]
        m_prev, l_prev = m_scr[...], l_scr[...]  # [bq, 128]
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=1, keepdims=True))  # [bq, 128]
        p = jnp.exp(s - _lanes(m_next, bk))  # [bq, bk]
        alpha = jnp.exp(m_prev - m_next)  # [bq, 128]
        l_scr[...] = alpha * l_prev + jnp.sum(p, axis=1, keepdims=True)
        m_scr[...] = m_next
        v = v_ref[...]
        pv = _dot(p.astype(v.dtype), v)  # [bq, D]
        acc_scr[...] = acc_scr[...] * _lanes(alpha, head_dim) + pv

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        l = l_scr[...]
        o_ref[...] = (acc_scr[...] / _lanes(l, head_dim)).astype(o_ref.dtype)
        lse_ref[...] = m_scr[...] + jnp.log(l)


def _tpu_bwd_block(cfg: _Config, has_seg: bool, refs: tuple, q_start, k_start):
    """One backward block, shared by the dk/dv and dq kernels: recompute the probabilities
    from the saved log-sum-exp and the score gradients. Returns (q, k, do, p, ds), p and ds
    [bq, bk] (FlashAttention-2, algorithm 2)."""
    q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, di_ref = refs
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    q_seg = k_seg = None
    if has_seg:
        q_seg = jnp.tile(qs_ref[...], (1, bk // NUM_LANES))  # [bq, bk]
        k_seg = ks_ref[:1, :]  # [1, bk]
    mask = _block_mask(q_start, k_start, (bq, bk), cfg, q_seg=q_seg, k_seg=k_seg)
    q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
    s = _scores(q, k, cfg.sm_scale, mask)  # [bq, bk]
    p = jnp.exp(s - _lanes(lse_ref[...], bk))  # [bq, bk], rows already normalised
    dp = _dot_t(do, v)  # [bq, bk]
    ds = p * (dp - _lanes(di_ref[...], bk))  # [bq, bk]
    return q, k, do, p, ds


def _tpu_dkv_kernel(*refs, cfg: _Config, has_seg: bool):
    if has_seg:
        (q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, di_ref) = refs[:8]
        dk_ref, dv_ref, dk_scr, dv_scr = refs[8:]
    else:
        (q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref) = refs[:6]
        dk_ref, dv_ref, dk_scr, dv_scr = refs[6:]
        qs_ref = ks_ref = None
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    j, i = pl.program_id(2), pl.program_id(3)  # kv block outer, q block inner (reduction)
    q_start, k_start = i * bq, j * bk

    @pl.when(i == 0)
    def _init():
        dk_scr[...] = jnp.zeros(dk_scr.shape, jnp.float32)
        dv_scr[...] = jnp.zeros(dv_scr.shape, jnp.float32)

    @pl.when(_tpu_causal_runs(cfg, q_start, bq, k_start))
    def _step():
        q, _, do, p, ds = _tpu_bwd_block(
            cfg, has_seg, (q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, di_ref),
            q_start, k_start,
        )  # fmt: skip
        dv_scr[...] += _dot(p.astype(do.dtype).T, do)  # [bk, D]
        dk_scr[...] += _dot(ds.astype(q.dtype).T, q)  # [bk, D]

    @pl.when(i == pl.num_programs(3) - 1)
    def _finish():
        dk_ref[...] = (dk_scr[...] * cfg.sm_scale).astype(dk_ref.dtype)
        dv_ref[...] = dv_scr[...].astype(dv_ref.dtype)


def _tpu_dq_kernel(*refs, cfg: _Config, has_seg: bool):
    if has_seg:
        (q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, di_ref) = refs[:8]
        dq_ref, dq_scr = refs[8:]
    else:
        (q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref) = refs[:6]
        dq_ref, dq_scr = refs[6:]
        qs_ref = ks_ref = None
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    i, j = pl.program_id(2), pl.program_id(3)  # q block outer, kv block inner (reduction)
    q_start, k_start = i * bq, j * bk

    @pl.when(j == 0)
    def _init():
        dq_scr[...] = jnp.zeros(dq_scr.shape, jnp.float32)

    @pl.when(_tpu_causal_runs(cfg, q_start, bq, k_start))
    def _step():
        _, k, _, _, ds = _tpu_bwd_block(
            cfg, has_seg, (q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, di_ref),
            q_start, k_start,
        )  # fmt: skip
        dq_scr[...] += _dot(ds.astype(k.dtype), k)  # [bq, D]

    @pl.when(j == pl.num_programs(3) - 1)
    def _finish():
        dq_ref[...] = (dq_scr[...] * cfg.sm_scale).astype(dq_ref.dtype)


def _div(x: jax.Array, m: int) -> jax.Array:
    """x // m for non-negative int32 ``x``: truncating division, which lowers everywhere
    (jnp's floor division emits a sign fix-up that Mosaic lowering needs a TPU to resolve)."""
    return jax.lax.div(x, jnp.asarray(m, dtype=x.dtype))


def _last_kv_block(cfg: _Config, i, bq: int, bk: int, n_kv: int):
    """Last kv block a causal q block ``i`` can see (index maps clamp to it: no wasted DMA)."""
    return jnp.minimum(n_kv - 1, _div(i * bq + bq - 1 + cfg.offset, bk))


def _first_q_block(cfg: _Config, j, bq: int, bk: int):
    """First q block that can see causal kv block ``j``."""
    return _div(jnp.maximum(0, j * bk - cfg.offset), bq)


def _tpu_params() -> pltpu.CompilerParams:
    return pltpu.CompilerParams(
        dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")
    )


def _tpu_seg_args(q_seg: jax.Array, kv_seg: jax.Array) -> list[jax.Array]:
    """Segment ids in layouts Mosaic tiles cheaply: q ids along sublanes, kv ids along lanes."""
    b, sq = q_seg.shape
    sk = kv_seg.shape[1]
    return [
        jnp.broadcast_to(q_seg[:, :, None], (b, sq, NUM_LANES)),  # [B, Sq, 128]
        jnp.broadcast_to(kv_seg[:, None, :], (b, NUM_SUBLANES, sk)),  # [B, 8, Sk]
    ]


def _tpu_forward(cfg, q, k, v, seg):
    q_seg, kv_seg = seg if seg is not None else (None, None)
    b, h, sq, d = q.shape
    sk = k.shape[2]
    bq, bk = cfg.block_q, cfg.block_k
    nq, nk = sq // bq, sk // bk
    has_seg = q_seg is not None

    def kv_blk(i, j):
        return jnp.minimum(j, _last_kv_block(cfg, i, bq, bk, nk)) if cfg.causal else j

    q_spec = pl.BlockSpec((None, None, bq, d), lambda b_, h_, i, j: (b_, h_, i, 0))
    kv_spec = pl.BlockSpec((None, None, bk, d), lambda b_, h_, i, j: (b_, h_, kv_blk(i, j), 0))
    in_specs = [q_spec, kv_spec, kv_spec]
    args = [q, k, v]
    if has_seg:
        in_specs += [
            pl.BlockSpec((None, bq, NUM_LANES), lambda b_, h_, i, j: (b_, i, 0)),
            pl.BlockSpec((None, NUM_SUBLANES, bk), lambda b_, h_, i, j: (b_, 0, kv_blk(i, j))),
        ]
        args += _tpu_seg_args(q_seg, kv_seg)
    lse_spec = pl.BlockSpec((None, None, bq, NUM_LANES), lambda b_, h_, i, j: (b_, h_, i, 0))
    o, lse = pl.pallas_call(
        functools.partial(_tpu_fwd_kernel, cfg=cfg, has_seg=has_seg),
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((b, h, sq, NUM_LANES), jnp.float32),
        ],
        grid=(b, h, nq, nk),
        in_specs=in_specs,
        out_specs=[q_spec, lse_spec],
        scratch_shapes=[
            pltpu.VMEM((bq, NUM_LANES), jnp.float32),  # m: running row max
            pltpu.VMEM((bq, NUM_LANES), jnp.float32),  # l: running row sum
            pltpu.VMEM((bq, d), jnp.float32),  # un-normalised output
        ],
        compiler_params=_tpu_params(),
        interpret=cfg.interpret,
        name="flash_attention_fwd",
    )(*args)
    return o, lse[..., 0]  # lse [B, H, Sq]


def _tpu_backward(cfg, res, do):
    q, k, v, seg, o, lse = res
    q_seg, kv_seg = seg if seg is not None else (None, None)
    b, h, sq, d = q.shape
    sk = k.shape[2]
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    nq, nk = sq // bq, sk // bk
    has_seg = q_seg is not None
    # delta_i = rowsum(dO_i * O_i) (FlashAttention-2 algorithm 2, line 4), fp32.
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)  # [B, H, Sq]
    lse_l = jnp.broadcast_to(lse[..., None], (b, h, sq, NUM_LANES))
    delta_l = jnp.broadcast_to(delta[..., None], (b, h, sq, NUM_LANES))
    seg_args = _tpu_seg_args(q_seg, kv_seg) if has_seg else []

    def specs(q_blk, kv_blk):
        """In-specs for grids whose index maps give (q block, kv block) via q_blk/kv_blk."""
        q_spec = pl.BlockSpec((None, None, bq, d), lambda b_, h_, x, y: (b_, h_, q_blk(x, y), 0))
        kv_spec = pl.BlockSpec((None, None, bk, d), lambda b_, h_, x, y: (b_, h_, kv_blk(x, y), 0))
        row_spec = pl.BlockSpec(
            (None, None, bq, NUM_LANES), lambda b_, h_, x, y: (b_, h_, q_blk(x, y), 0)
        )
        out = [q_spec, kv_spec, kv_spec]
        if has_seg:
            out += [
                pl.BlockSpec((None, bq, NUM_LANES), lambda b_, h_, x, y: (b_, q_blk(x, y), 0)),
                pl.BlockSpec((None, NUM_SUBLANES, bk), lambda b_, h_, x, y: (b_, 0, kv_blk(x, y))),
            ]
        return [*out, q_spec, row_spec, row_spec]

    args = [q, k, v, *seg_args, do, lse_l, delta_l]

    # dK, dV: grid (B, H, kv block, q block); causal q blocks above the diagonal are clamped.
    def dkv_q(j, i):
        return jnp.maximum(i, _first_q_block(cfg, j, bq, bk)) if cfg.causal else i

    dkv_out_spec = pl.BlockSpec((None, None, bk, d), lambda b_, h_, j, i: (b_, h_, j, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_tpu_dkv_kernel, cfg=cfg, has_seg=has_seg),
        out_shape=[
            jax.ShapeDtypeStruct(k.shape, k.dtype),
            jax.ShapeDtypeStruct(v.shape, v.dtype),
        ],
        grid=(b, h, nk, nq),
        in_specs=specs(dkv_q, lambda j, i: j),
        out_specs=[dkv_out_spec, dkv_out_spec],
        scratch_shapes=[pltpu.VMEM((bk, d), jnp.float32), pltpu.VMEM((bk, d), jnp.float32)],
        compiler_params=_tpu_params(),
        interpret=cfg.interpret,
        name="flash_attention_bwd_dkv",
    )(*args)

    # dQ: grid (B, H, q block, kv block); causal kv blocks right of the diagonal are clamped.
    def dq_kv(i, j):
        return jnp.minimum(j, _last_kv_block(cfg, i, bq, bk, nk)) if cfg.causal else j

    dq = pl.pallas_call(
        functools.partial(_tpu_dq_kernel, cfg=cfg, has_seg=has_seg),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        grid=(b, h, nq, nk),
        in_specs=specs(lambda i, j: i, dq_kv),
        out_specs=pl.BlockSpec((None, None, bq, d), lambda b_, h_, i, j: (b_, h_, i, 0)),
        scratch_shapes=[pltpu.VMEM((bq, d), jnp.float32)],
        compiler_params=_tpu_params(),
        interpret=cfg.interpret,
        name="flash_attention_bwd_dq",
    )(*args)
    return dq, dk, dv


# --------------------------------------------------------------------------------------------
# GPU (Triton) kernels. Grid (batch, heads, block); each program keeps its block in registers
# and loops over the other sequence with fori_loop, loading [block, head_dim] slices.
# head_dim is zero-padded to a power of two by the caller (Triton tiles must be).
# --------------------------------------------------------------------------------------------


def _gpu_fwd_kernel(*refs, cfg: _Config, has_seg: bool):
    if has_seg:
        q_ref, k_ref, v_ref, qs_ref, ks_ref, o_ref, lse_ref = refs
    else:
        q_ref, k_ref, v_ref, o_ref, lse_ref = refs
        qs_ref = ks_ref = None
    bq, bk = cfg.block_q, cfg.block_k
    q_start = pl.program_id(2) * bq
    q = q_ref[...]  # [bq, D]
    q_seg = qs_ref[...][:, None] if has_seg else None  # [bq, 1]
    n_kv = cfg.kv_padded // bk
    hi = _last_kv_block(cfg, pl.program_id(2), bq, bk, n_kv) + 1 if cfg.causal else n_kv

    def body(j, carry):
        m, l, acc = carry
        k_start = j * bk
        kv_rows = pl.ds(k_start, bk)
        k_seg = ks_ref[kv_rows][None, :] if has_seg else None  # [1, bk]
        mask = _block_mask(q_start, k_start, (bq, bk), cfg, q_seg=q_seg, k_seg=k_seg)
        s = _scores(q, k_ref[kv_rows, :], cfg.sm_scale, mask)  # [bq, bk]
        m_next = jnp.maximum(m, jnp.max(s, axis=1))  # [bq]
        p = jnp.exp(s - m_next[:, None])  # [bq, bk]
        alpha = jnp.exp(m - m_next)  # [bq]
        v = v_ref[kv_rows, :]
        pv = _dot(p.astype(v.dtype), v)  # [bq, D]
        return m_next, alpha * l + jnp.sum(p, axis=1), acc * alpha[:, None] + pv

    init = (
        jnp.full((bq,), -jnp.inf, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
        jnp.zeros(q.shape, jnp.float32),
    )
    m, l, acc = jax.lax.fori_loop(0, hi, body, init)
    o_ref[...] = (acc / l[:, None]).astype(o_ref.dtype)
    lse_ref[...] = m + jnp.log(l)


def _gpu_dkv_kernel(*refs, cfg: _Config, has_seg: bool):
    if has_seg:
        q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, di_ref, dk_ref, dv_ref = refs
    else:
        q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, dk_ref, dv_ref = refs
        qs_ref = ks_ref = None
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    k_start = pl.program_id(2) * bk
    k, v = k_ref[...], v_ref[...]  # [bk, D]
    k_seg = ks_ref[...][None, :] if has_seg else None  # [1, bk]
    n_q = q_ref.shape[0] // bq
    lo = _first_q_block(cfg, pl.program_id(2), bq, bk) if cfg.causal else 0

    def body(i, carry):
        dk, dv = carry
        q_start = i * bq
        rows = pl.ds(q_start, bq)
        q_seg = qs_ref[rows][:, None] if has_seg else None  # [bq, 1]
        mask = _block_mask(q_start, k_start, (bq, bk), cfg, q_seg=q_seg, k_seg=k_seg)
        q, do = q_ref[rows, :], do_ref[rows, :]  # [bq, D]
        s = _scores(q, k, cfg.sm_scale, mask)  # [bq, bk]
        p = jnp.exp(s - lse_ref[rows][:, None])  # [bq, bk]
        dv = dv + _dot(p.astype(do.dtype).T, do)
        dp = _dot_t(do, v)
        ds = p * (dp - di_ref[rows][:, None])  # [bq, bk]
        dk = dk + _dot(ds.astype(q.dtype).T, q)
        return dk, dv

    zeros = jnp.zeros(k.shape, jnp.float32)
    dk, dv = jax.lax.fori_loop(lo, n_q, body, (zeros, zeros))
    dk_ref[...] = (dk * cfg.sm_scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _gpu_dq_kernel(*refs, cfg: _Config, has_seg: bool):
    if has_seg:
        q_ref, k_ref, v_ref, qs_ref, ks_ref, do_ref, lse_ref, di_ref, dq_ref = refs
    else:
        q_ref, k_ref, v_ref, do_ref, lse_ref, di_ref, dq_ref = refs
        qs_ref = ks_ref = None
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    q_start = pl.program_id(2) * bq
    q, do = q_ref[...], do_ref[...]  # [bq, D]
    lse, delta = lse_ref[...][:, None], di_ref[...][:, None]  # [bq, 1]
    q_seg = qs_ref[...][:, None] if has_seg else None  # [bq, 1]
    n_kv = cfg.kv_padded // bk
    hi = _last_kv_block(cfg, pl.program_id(2), bq, bk, n_kv) + 1 if cfg.causal else n_kv

    def body(j, dq):
        k_start = j * bk
        kv_rows = pl.ds(k_start, bk)
        k_seg = ks_ref[kv_rows][None, :] if has_seg else None  # [1, bk]
        mask = _block_mask(q_start, k_start, (bq, bk), cfg, q_seg=q_seg, k_seg=k_seg)
        k, v = k_ref[kv_rows, :], v_ref[kv_rows, :]  # [bk, D]
        p = jnp.exp(_scores(q, k, cfg.sm_scale, mask) - lse)  # [bq, bk]
        dp = _dot_t(do, v)
        ds = p * (dp - delta)  # [bq, bk]
        return dq + _dot(ds.astype(k.dtype), k)

    dq = jax.lax.fori_loop(0, hi, body, jnp.zeros(q.shape, jnp.float32))
    dq_ref[...] = (dq * cfg.sm_scale).astype(dq_ref.dtype)


def _gpu_params(head_dim: int) -> plgpu.CompilerParams:
    return plgpu.CompilerParams(num_warps=4 if head_dim <= 64 else 8, num_stages=2)


def _gpu_forward(cfg, q, k, v, seg):
    q_seg, kv_seg = seg if seg is not None else (None, None)
    b, h, sq, d = q.shape
    sk = k.shape[2]
    bq = cfg.block_q
    has_seg = q_seg is not None
    q_spec = pl.BlockSpec((None, None, bq, d), lambda b_, h_, i: (b_, h_, i, 0))
    kv_spec = pl.BlockSpec((None, None, sk, d), lambda b_, h_, i: (b_, h_, 0, 0))
    in_specs = [q_spec, kv_spec, kv_spec]
    args = [q, k, v]
    if has_seg:
        in_specs += [
            pl.BlockSpec((None, bq), lambda b_, h_, i: (b_, i)),
            pl.BlockSpec((None, sk), lambda b_, h_, i: (b_, 0)),
        ]
        args += [q_seg, kv_seg]
    return pl.pallas_call(
        functools.partial(_gpu_fwd_kernel, cfg=cfg, has_seg=has_seg),
        out_shape=[
            jax.ShapeDtypeStruct(q.shape, q.dtype),
            jax.ShapeDtypeStruct((b, h, sq), jnp.float32),
        ],
        grid=(b, h, sq // bq),
        in_specs=in_specs,
        out_specs=[q_spec, pl.BlockSpec((None, None, bq), lambda b_, h_, i: (b_, h_, i))],
        compiler_params=_gpu_params(d),
        interpret=cfg.interpret,
        name="flash_attention_fwd",
    )(*args)


def _gpu_backward(cfg, res, do):
    q, k, v, seg, o, lse = res
    q_seg, kv_seg = seg if seg is not None else (None, None)
    b, h, sq, d = q.shape
    sk = k.shape[2]
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    has_seg = q_seg is not None
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1)  # [B, H, Sq]
    args = [q, k, v, *([q_seg, kv_seg] if has_seg else []), do, lse, delta]

    def specs(q_rows: int, kv_rows: int, q_blocked: bool):
        """q-side tensors get q_rows-row blocks, kv-side kv_rows; the looped side is whole."""
        q_idx = (
            (lambda b_, h_, i: (b_, h_, i, 0)) if q_blocked else (lambda b_, h_, i: (b_, h_, 0, 0))
        )
        kv_idx = (
            (lambda b_, h_, i: (b_, h_, 0, 0)) if q_blocked else (lambda b_, h_, i: (b_, h_, i, 0))
        )
        q_spec = pl.BlockSpec((None, None, q_rows, d), q_idx)
        kv_spec = pl.BlockSpec((None, None, kv_rows, d), kv_idx)
        row_spec = pl.BlockSpec((None, None, q_rows), lambda *ix: q_idx(*ix)[:3])
        out = [q_spec, kv_spec, kv_spec]
        if has_seg:
            out += [
                pl.BlockSpec((None, q_rows), lambda *ix: (ix[0], q_idx(*ix)[2])),
                pl.BlockSpec((None, kv_rows), lambda *ix: (ix[0], kv_idx(*ix)[2])),
            ]
        return [*out, q_spec, row_spec, row_spec]

    dkv_spec = pl.BlockSpec((None, None, bk, d), lambda b_, h_, j: (b_, h_, j, 0))
    dk, dv = pl.pallas_call(
        functools.partial(_gpu_dkv_kernel, cfg=cfg, has_seg=has_seg),
        out_shape=[
            jax.ShapeDtypeStruct(k.shape, k.dtype),
            jax.ShapeDtypeStruct(v.shape, v.dtype),
        ],
        grid=(b, h, sk // bk),
        in_specs=specs(sq, bk, q_blocked=False),
        out_specs=[dkv_spec, dkv_spec],
        compiler_params=_gpu_params(d),
        interpret=cfg.interpret,
        name="flash_attention_bwd_dkv",
    )(*args)
    dq = pl.pallas_call(
        functools.partial(_gpu_dq_kernel, cfg=cfg, has_seg=has_seg),
        out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
        grid=(b, h, sq // bq),
        in_specs=specs(bq, sk, q_blocked=True),
        out_specs=pl.BlockSpec((None, None, bq, d), lambda b_, h_, i: (b_, h_, i, 0)),
        compiler_params=_gpu_params(d),
        interpret=cfg.interpret,
        name="flash_attention_bwd_dq",
    )(*args)
    return dq, dk, dv


# --------------------------------------------------------------------------------------------
# custom_vjp over padded inputs, and the public entry point.
# --------------------------------------------------------------------------------------------


def _forward(cfg: _Config, q, k, v, seg):
    impl = _tpu_forward if cfg.backend == "tpu" else _gpu_forward
    return impl(cfg, q, k, v, seg)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg: _Config, q, k, v, seg):
    """Attention over padded inputs; ``seg`` is (q ids [B, Sq], kv ids [B, Sk]) or None."""
    return _forward(cfg, q, k, v, seg)[0]


def _flash_fwd(cfg: _Config, q, k, v, seg):
    o, lse = _forward(cfg, q, k, v, seg)
    return o, (q, k, v, seg, o, lse)


def _flash_bwd(cfg: _Config, res, do):
    if cfg.backward == "xla":
        q, k, v, seg, _, _ = res
        _, vjp = jax.vjp(functools.partial(_padded_reference, cfg, seg=seg), q, k, v)
        dq, dk, dv = vjp(do)
    else:
        impl = _tpu_backward if cfg.backend == "tpu" else _gpu_backward
        dq, dk, dv = impl(cfg, res, do)
    return dq, dk, dv, None  # segment ids are integers: no cotangent


def _padded_reference(cfg: _Config, q, k, v, *, seg):
    """The reference on the unpadded part of padded inputs, zero-padded back (XLA backward)."""
    sq, d = q.shape[2], q.shape[3]
    ids = None if seg is None else seg[1][:, : cfg.kv_len]
    o = attention_reference(
        q[:, :, : cfg.q_len, : cfg.head_dim],
        k[:, :, : cfg.kv_len, : cfg.head_dim],
        v[:, :, : cfg.kv_len, : cfg.head_dim],
        causal=cfg.causal,
        sm_scale=cfg.sm_scale,
        segment_ids=ids,
    )
    return jnp.pad(o, ((0, 0), (0, 0), (0, sq - cfg.q_len), (0, d - cfg.head_dim)))


_flash.defvjp(_flash_fwd, _flash_bwd)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _resolve_backend(backend: str, interpret: bool) -> Literal["tpu", "gpu", "xla"]:
    if backend not in ("auto", "tpu", "gpu", "xla"):
        raise ValueError(f"backend must be 'auto', 'tpu', 'gpu' or 'xla', got {backend=}")
    if backend != "auto":
        return backend  # type: ignore[return-value]
    platform = jax.default_backend()
    if platform == "tpu":
        return "tpu"
    if platform in ("gpu", "cuda", "rocm"):
        return "gpu"
    return "tpu" if interpret else "xla"


def _effective_block(name: str, block: int, seq: int, backend: str) -> int:
    if backend == "tpu":
        if block <= 0 or block % TPU_BLOCK_ALIGN:
            raise ValueError(
                f"TPU block sizes must be positive multiples of 128, got {name}={block}"
            )
        return min(block, _round_up(seq, TPU_BLOCK_ALIGN))
    if block < GPU_MIN_BLOCK or block & (block - 1):
        raise ValueError(f"GPU block sizes must be powers of two >= 16, got {name}={block}")
    return min(block, max(GPU_MIN_BLOCK, pl.next_power_of_2(seq)))


def _check_inputs(q, k, v, segment_ids) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(
                f"{name} must be [batch, heads, seq, head_dim], got {name}.shape={x.shape}"
            )
        if jnp.dtype(x.dtype) not in _SUPPORTED_DTYPES:
            raise ValueError(f"{name} must be float32, bfloat16 or float16, got {x.dtype}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype=}, {k.dtype=}, {v.dtype=}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {k.shape=} and {v.shape=}")
    (b, h, sq, d), sk = q.shape, k.shape[2]
    if (k.shape[0], k.shape[1], k.shape[3]) != (b, h, d):
        raise ValueError(
            f"q and k must agree on batch, heads and head_dim, got {q.shape=} and {k.shape=}"
        )
    if sq > sk:
        raise ValueError(
            f"q_seq must be <= kv_seq (queries are the last positions), got {sq=} > {sk=}"
        )
    if min(b, h, sq, d) == 0:
        raise ValueError(f"empty attention input, got {q.shape=} and {k.shape=}")
    if segment_ids is not None:
        if segment_ids.shape != (b, sk):
            raise ValueError(
                f"segment_ids must be [batch, kv_seq] = {(b, sk)}, got {segment_ids.shape}"
            )
        if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
            raise ValueError(f"segment_ids must be integers, got {segment_ids.dtype}")


def flash_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = True,
    sm_scale: float | None = None,
    segment_ids: jax.Array | None = None,
    block_sizes: BlockSizes | None = None,
    interpret: bool = False,
    backend: Backend = "auto",
    backward: Literal["pallas", "xla"] = "pallas",
) -> jax.Array:
    """softmax(q k^T * sm_scale + mask) v, differentiable in q, k and v.

    Args:
      q: [batch, heads, q_seq, head_dim] (float32, bfloat16 or float16).
      k, v: [batch, heads, kv_seq, head_dim], same dtype, ``kv_seq >= q_seq``; queries are
        the last ``q_seq`` positions of the kv sequence.
      causal: mask keys after the query's position.
      sm_scale: score scale, default ``1 / sqrt(head_dim)``.
      segment_ids: [batch, kv_seq] integer document ids; attention stays within a document.
      block_sizes: tile sizes (upper bounds); default ``BlockSizes.get_default(backend)``.
      interpret: run the Pallas kernels in interpret mode (CPU tests).
      backend: "auto", "tpu", "gpu" or "xla" (see the module docstring).
      backward: "pallas" (the backward kernels) or "xla" (autodiff of the reference after
        the Pallas forward: a fallback, and a way to isolate a backward-kernel problem).

    Returns:
      [batch, heads, q_seq, head_dim] in ``q.dtype``.
    """
    _check_inputs(q, k, v, segment_ids)
    sq, d = q.shape[2], q.shape[3]
    sk = k.shape[2]
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    resolved = _resolve_backend(backend, interpret)
    if backward not in ("pallas", "xla"):
        raise ValueError(f"backward must be 'pallas' or 'xla', got {backward=}")
    if resolved == "xla":
        return attention_reference(q, k, v, causal=causal, sm_scale=scale, segment_ids=segment_ids)
    bs = block_sizes if block_sizes is not None else BlockSizes.get_default(resolved)
    bq = _effective_block("block_q", bs.block_q, sq, resolved)
    bk = _effective_block("block_k", bs.block_k, sk, resolved)
    bq_bwd = _effective_block("block_q_bwd", bs.block_q_bwd, sq, resolved)
    bk_bwd = _effective_block("block_k_bwd", bs.block_k_bwd, sk, resolved)
    sq_pad = _round_up(sq, math.lcm(bq, bq_bwd))
    sk_pad = _round_up(sk, math.lcm(bk, bk_bwd))
    # Triton tiles need a power-of-two head_dim: zero columns change neither q.k nor p @ v.
    d_pad = max(GPU_MIN_BLOCK, pl.next_power_of_2(d)) if resolved == "gpu" else d
    if resolved == "tpu" and d > NUM_LANES and d % NUM_LANES:
        raise ValueError(f"TPU kernels need head_dim <= 128 or a multiple of 128, got {d=}")

    def pad(x: jax.Array, seq: int) -> jax.Array:
        return jnp.pad(x, ((0, 0), (0, 0), (0, seq - x.shape[2]), (0, d_pad - d)))

    seg = None
    if segment_ids is not None:
        ids = segment_ids.astype(jnp.int32)
        q_seg = jnp.pad(ids[:, sk - sq :], ((0, 0), (0, sq_pad - sq)))  # [B, Sq_pad]
        kv_seg = jnp.pad(ids, ((0, 0), (0, sk_pad - sk)))  # [B, Sk_pad]
        seg = (q_seg, kv_seg)
    cfg = _Config(
        backend=resolved,
        causal=bool(causal),
        sm_scale=scale,
        q_len=sq,
        kv_len=sk,
        kv_padded=sk_pad,
        block_q=bq,
        block_k=bk,
        block_q_bwd=bq_bwd,
        block_k_bwd=bk_bwd,
        interpret=bool(interpret),
        head_dim=d,
        backward=backward,
    )
    o = _flash(cfg, pad(q, sq_pad), pad(k, sk_pad), pad(v, sk_pad), seg)
    return o[:, :, :sq, :d]


# --------------------------------------------------------------------------------------------
# Reference: plain jnp, fp32 scores and softmax.
# --------------------------------------------------------------------------------------------


def attention_reference(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    causal: bool = True,
    sm_scale: float | None = None,
    segment_ids: jax.Array | None = None,
) -> jax.Array:
    """The obvious O(seq^2)-memory attention with the same semantics as ``flash_attention``.

    Scores are accumulated in fp32 and the softmax is fp32; the probabilities are cast to
    ``v.dtype`` for the ``p @ v`` matmul, as the kernels do, so running this on bf16 inputs
    gives the "same computation in bf16" that kernel tolerances are measured against.
    """
    _check_inputs(q, k, v, segment_ids)
    sq, d = q.shape[2], q.shape[3]
    sk = k.shape[2]
    scale = 1.0 / math.sqrt(d) if sm_scale is None else float(sm_scale)
    hi = jax.lax.Precision.HIGHEST  # a true fp32 reference on every platform (no TF32)
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k, precision=hi, preferred_element_type=jnp.float32)
    s = s * scale
    mask = jnp.ones((1, 1, sq, sk), dtype=bool)
    if causal:
        rows = jnp.arange(sq)[:, None] + (sk - sq)
        mask = mask & (jnp.arange(sk)[None, :] <= rows)
    if segment_ids is not None:
        q_ids = segment_ids[:, sk - sq :]  # [B, Sq]
        mask = mask & (q_ids[:, None, :, None] == segment_ids[:, None, None, :])
    s = jnp.where(mask, s, MASK_VALUE)  # [B, H, Sq, Sk]
    p = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum(
        "bhqk,bhkd->bhqd", p.astype(v.dtype), v, precision=hi, preferred_element_type=jnp.float32
    )
    return o.astype(q.dtype)
