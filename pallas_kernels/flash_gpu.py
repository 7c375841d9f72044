"""Flash attention forward and backward as Pallas GPU (Triton) kernels.

Grid (batch, heads, block); each program keeps its block in registers and loops over the
other sequence with fori_loop, loading [block, head_dim] slices. head_dim is zero-padded to a
power of two by the caller (Triton tiles must be). This module imports the Pallas Triton
backend (deprecated from jax 0.11): ``flash_attention`` imports it only when the GPU path runs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from .flash_common import (
    _block_mask,
    _Config,
    _dot,
    _dot_t,
    _first_q_block,
    _last_kv_block,
    _scores,
)


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
