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

Modules (as jax's own Pallas ops): ``flash_tpu`` (the Mosaic kernels), ``flash_gpu`` (the Triton
kernels; imported only when the GPU path runs), ``flash_common`` (constants, block maths, input
checks and ``attention_reference``) and this one (padding, custom VJP, backend choice).

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

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from . import flash_tpu
from .flash_common import (
    GPU_MIN_BLOCK,
    MASK_VALUE,
    NUM_LANES,
    NUM_SUBLANES,
    TPU_BLOCK_ALIGN,
    Backend,
    BlockSizes,
    _check_inputs,
    _Config,
    _round_up,
    attention_reference,
)

__all__ = [
    "GPU_MIN_BLOCK",
    "MASK_VALUE",
    "NUM_LANES",
    "NUM_SUBLANES",
    "TPU_BLOCK_ALIGN",
    "Backend",
    "BlockSizes",
    "attention_reference",
    "flash_attention",
]


def _gpu():  # the Triton backend is imported only when the GPU path is used
    from . import flash_gpu  # noqa: PLC0415

    return flash_gpu


def _forward(cfg: _Config, q, k, v, seg):
    impl = flash_tpu._tpu_forward if cfg.backend == "tpu" else _gpu()._gpu_forward
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
        impl = flash_tpu._tpu_backward if cfg.backend == "tpu" else _gpu()._gpu_backward
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
