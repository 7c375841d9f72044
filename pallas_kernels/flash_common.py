"""Shared pieces of the flash-attention kernels: constants, block sizes, the static problem
description, the block maths every kernel (TPU and GPU) uses, input checks and the plain-jnp
reference (fp32 scores and softmax) the kernels are tested against.

Layout as in jax's own Pallas ops: ``flash_tpu`` (Mosaic kernels), ``flash_gpu`` (Triton
kernels, imported only when the GPU path runs), this module, and ``flash_attention`` (the
public entry point: padding, custom VJP, backend choice).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

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


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


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
