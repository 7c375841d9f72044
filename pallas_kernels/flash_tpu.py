"""Flash attention forward and backward as Pallas TPU (Mosaic) kernels.

Grid (batch, heads, outer block, inner block); the inner axis is a reduction ("arbitrary")
accumulating into VMEM scratch; q/k/v tiles are [block, head_dim]. Called through
``flash_attention.flash_attention`` (padding, custom VJP); block maths in ``flash_common``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from .flash_common import (
    NUM_LANES,
    NUM_SUBLANES,
    _block_mask,
    _Config,
    _dot,
    _dot_t,
    _first_q_block,
    _lanes,
    _last_kv_block,
    _scores,
)


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
