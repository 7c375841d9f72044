"""The one attention function of the model, and the one rule that picks its kernels.

``kernel_backend`` is the dispatch rule every model path uses (``forward`` reads
``CodeGenConfig.attention_impl`` / ``rotary_impl`` / ``interpret`` and asks it once per
kernel): ``"auto"`` takes the Pallas kernel where the backend has a lowering for it (TPU;
GPU for flash attention), XLA elsewhere; ``"pallas"`` raises where the kernel cannot run and
says why; ``interpret=True`` runs the Pallas (TPU) kernels in interpret mode (how the CPU
tests exercise the real kernel code), and then ``"auto"`` picks them too.

``attention`` dispatches to the Pallas flash-attention kernel (``codegen_core.pallas_kernels``)
for causal self-attention (training, full forward, packed documents through segment ids,
prefix-LM); KV-cache prefill/decode and CPU take the XLA path, ``xla_attention``, which is also
the reference the kernel is tested against. Under an active mesh (``axes.axis_rules``) the
kernel runs inside ``shard_map`` over the batch and head axes: a ``pallas_call`` is not
partitioned automatically. The kernel modules are imported normally: a broken kernel module
fails the import of the model.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from codegen_core.model import axes as ax
from codegen_core.pallas_kernels import pallas_available as _pallas_available
from codegen_core.pallas_kernels.decode_attention import decode_attention as _decode
from codegen_core.pallas_kernels.flash_attention import flash_attention as _flash

Impl = Literal["auto", "xla", "pallas", "pallas-interpret"]
KernelImpl = Literal["auto", "pallas", "xla"]
Kernel = Literal["attention", "rotary", "decode"]
KernelBackend = Literal["xla", "tpu", "gpu"]

_NEG = float(jnp.finfo(jnp.float32).min)

# Platforms with a compiled lowering, per kernel: flash attention has Mosaic (TPU) and
# Triton (GPU) kernels; rotary is a Mosaic kernel only (on GPU XLA's fused elementwise
# formula is already memory-bound optimal); decode attention (KV-cache steps, chosen by
# ``attention_impl``) is a Mosaic kernel only.
_LOWERINGS: dict[str, tuple[str, ...]] = {
    "attention": ("tpu", "gpu", "cuda"),
    "rotary": ("tpu",),
    "decode": ("tpu",),
}


def kernel_backend(
    kernel: Kernel, impl: str, *, interpret: bool = False, platform: str | None = None
) -> KernelBackend:
    """The dispatch rule: which implementation of ``kernel`` runs.

    Returns "xla" (the plain-XLA path), "tpu" (the Pallas TPU kernel: compiled on TPU, in
    interpret mode with ``interpret``) or "gpu" (the Pallas Triton kernel). ``platform``
    defaults to ``jax.default_backend()``. Raises ValueError for an unknown ``impl`` and for
    ``impl="pallas"`` where the kernel has no lowering and ``interpret`` is off.
    """
    if impl not in ("auto", "pallas", "xla"):
        raise ValueError(f"{kernel}_impl must be 'auto', 'pallas' or 'xla', got {impl!r}")
    if kernel not in _LOWERINGS:
        raise ValueError(f"unknown kernel {kernel!r} (attention, rotary or decode)")
    if impl == "xla":
        return "xla"
    if interpret:
        return "tpu"  # the TPU kernels, interpreted: runs on any backend
    plat = platform if platform is not None else jax.default_backend()
    if plat in _LOWERINGS[kernel]:
        return "tpu" if plat == "tpu" else "gpu"
    if impl == "pallas":
        where = " and ".join(p.upper() for p in _LOWERINGS[kernel] if p != "cuda")
        raise ValueError(
            f"{kernel}_impl='pallas': the Pallas {kernel} kernel has a compiled lowering only "
            f"on {where}, and the backend here is {plat!r}; use 'auto' or 'xla', or set "
            f"interpret=True to run the kernel in interpret mode (slow; for tests)"
        )
    return "xla"


def pallas_ok() -> bool:
    """True when the compiled Pallas flash-attention kernel runs on this backend (TPU, GPU)."""
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
    segment_ids: jax.Array | None = None,
    prefix_mask: jax.Array | None = None,
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

    Packed documents (self-attention only: ``q_offset == 0``, T == S, 4-D layout):
    segment_ids (B, S) int: query t additionally needs ``segment_ids[t] == segment_ids[s]``
    (padding is segment 0: it never reaches a real token, and sees only padding itself, as
    in the flash kernel). prefix_mask (B, S) bool (prefix-LM): a key in the prefix is
    visible to every query of its segment, also to earlier ones (no causal blocking then).
    """
    t_len, s_len = q.shape[-2], k.shape[-2]
    if segment_ids is not None or prefix_mask is not None:
        if q.ndim != 4 or not isinstance(q_offset, int) or q_offset != 0 or t_len != s_len:
            raise ValueError(
                "segment_ids / prefix_mask need 4-D self-attention (q_offset=0, T == S), got "
                f"q={q.shape} k={k.shape} q_offset={q_offset!r}"
            )
        for name, x in (("segment_ids", segment_ids), ("prefix_mask", prefix_mask)):
            if x is not None and x.shape != (q.shape[0], s_len):
                raise ValueError(f"{name} must be (batch, seq) = {(q.shape[0], s_len)}, "
                                 f"got {x.shape}")  # fmt: skip
    if prefix_mask is not None or not isinstance(q_offset, int) or t_len < 2 * CAUSAL_BLOCK:
        return _attend(q, k, v, key_mask=key_mask, q_offset=q_offset, sm_scale=sm_scale,
                       q_seg=segment_ids, k_seg=segment_ids, prefix=prefix_mask)  # fmt: skip
    blocks, vis = [], []
    for t0 in range(0, t_len, CAUSAL_BLOCK):
        t1 = min(t_len, t0 + CAUSAL_BLOCK)
        s1 = max(1, min(s_len, q_offset + t1))  # keys this block can see
        km = None if key_mask is None else key_mask[:, :s1]
        qs = None if segment_ids is None else segment_ids[:, t0:t1]
        ks = None if segment_ids is None else segment_ids[:, :s1]
        blocks.append((t0, t1, s1))
        vis.append(_visible(t1 - t0, s1, q.ndim, key_mask=km, q_offset=q_offset + t0,
                            q_seg=qs, k_seg=ks, prefix=None))  # fmt: skip
    out = _blocked_attend(q, k, v, tuple(vis), sm_scale, tuple(blocks))  # (..., T, hs) fp32
    return out.astype(v.dtype)


def _attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array | None,
    q_offset: jax.Array | int,
    sm_scale: float,
    q_seg: jax.Array | None = None,
    k_seg: jax.Array | None = None,
    prefix: jax.Array | None = None,
) -> jax.Array:
    t_len, s_len = q.shape[-2], k.shape[-2]
    visible = _visible(t_len, s_len, q.ndim, key_mask=key_mask, q_offset=q_offset,
                       q_seg=q_seg, k_seg=k_seg, prefix=prefix)  # fmt: skip
    out = _blocked_attend(q, k, v, (visible,), sm_scale, ((0, t_len, s_len),))
    return out.astype(v.dtype)  # (B, nh, T, hs) or (B * nh, T, hs)


def _visible(
    t_len: int,
    s_len: int,
    ndim: int,
    *,
    key_mask: jax.Array | None,
    q_offset: jax.Array | int,
    q_seg: jax.Array | None,
    k_seg: jax.Array | None,
    prefix: jax.Array | None,
) -> jax.Array:
    """Which keys each query sees: (T, S), (B, 1, T, S) or (B * nh, T, S) bool."""
    q_slot = q_offset + jnp.arange(t_len)[:, None]  # (T, 1)
    visible = jnp.arange(s_len)[None, :] <= q_slot  # (T, S)
    if prefix is not None:  # prefix keys: visible to every query (of the same segment)
        visible = visible | prefix[:, None, None, :]  # (B, 1, T, S)
    if key_mask is not None:
        # (B, 1, 1, S) or (B * nh, 1, S): broadcast over heads (4-D) and queries
        km = key_mask.reshape(key_mask.shape[0], *([1] * (ndim - 2)), s_len)
        visible = visible & km
    if q_seg is not None and k_seg is not None:
        visible = visible & (q_seg[:, None, :, None] == k_seg[:, None, None, :])  # (B, 1, T, S)
    return visible


# Scores, softmax and value product of query blocks, with a hand-written backward. Block i
# is queries [t0, t1) against keys [0, s1) under its mask ``visible[i]``; one custom_vjp
# for all blocks keeps q, k, v once as residuals (not a sliced copy per block). Fewer passes
# over the (T, S) scores than autodiff of ``jax.nn.softmax``: the forward keeps the
# unnormalized exp(s - max) and divides the (T, hs) output by the row sums instead of the
# (T, S) probabilities; the backward takes the row term from the small (T, hs) output
# (rowsum(dP * P) = rowsum(dO * O)) and forms the score gradient (mask and scale included) in
# one elementwise pass. The key-side gradients (dK = dS^T Q, dV = P^T dO) are computed as
# (hs, S) and transposed after an optimization barrier: XLA CPU otherwise folds the transpose
# back into the dot, whose (S, hs) form runs at ~60% of the speed (measured, 32 vs 51
# GFLOP/CPU-s at S=512, T=128, 16 heads).
Blocks = tuple[tuple[int, int, int], ...]


@partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _blocked_attend(  # noqa: PLR0917 (custom_vjp takes positional arguments)
    q: jax.Array, k: jax.Array, v: jax.Array, visible: tuple[jax.Array, ...],
    sm_scale: float, blocks: Blocks,
) -> jax.Array:  # fmt: skip
    return _blocked_fwd(q, k, v, visible, sm_scale, blocks)[0]


def _blocked_fwd(  # noqa: PLR0917
    q: jax.Array, k: jax.Array, v: jax.Array, visible: tuple[jax.Array, ...],
    sm_scale: float, blocks: Blocks,
) -> tuple[jax.Array, tuple[Any, ...]]:  # fmt: skip
    outs, es, invs = [], [], []
    for (t0, t1, s1), vis in zip(blocks, visible, strict=True):
        s = jnp.einsum("...td,...sd->...ts", q[..., t0:t1, :], k[..., :s1, :],
                       preferred_element_type=jnp.float32)  # fmt: skip  # (..., Tb, Sb)
        s = jnp.where(vis, s * sm_scale, _NEG)
        e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))  # (..., Tb, Sb): masked keys 0
        inv = 1.0 / jnp.sum(e, axis=-1, keepdims=True)  # (..., Tb, 1); no key seen: 1 / Sb
        outs.append(jnp.einsum("...ts,...sd->...td", e.astype(v.dtype), v[..., :s1, :],
                               preferred_element_type=jnp.float32) * inv)  # fmt: skip
        es.append(e)
        invs.append(inv)
    out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=-2)  # (..., T, hs) fp32
    return out, (q, k, v, visible, tuple(es), tuple(invs), out)


def _key_side(p: jax.Array, x: jax.Array) -> jax.Array:
    """p^T x for p (..., T, S), x (..., T, hs): (..., S, hs) fp32, by way of (..., hs, S)."""
    t = jnp.einsum("...ts,...td->...ds", p, x, preferred_element_type=jnp.float32)
    return jnp.swapaxes(jax.lax.optimization_barrier(t), -1, -2)  # (..., S, hs)


def _into(acc: jax.Array | None, x: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """acc + x placed at keys [0, x.shape[-2]) of a (..., S, hs) fp32 sum."""
    if acc is None and x.shape == shape:
        return x
    base = jnp.zeros(shape, jnp.float32) if acc is None else acc
    return base.at[..., : x.shape[-2], :].add(x)


def _blocked_bwd(
    sm_scale: float, blocks: Blocks, res: tuple[Any, ...], g: jax.Array
) -> tuple[jax.Array | None, ...]:
    q, k, v, visible, es, invs, out = res
    g = g.astype(jnp.float32)  # (..., T, hs)
    dqs, dk, dv = [], None, None
    for (t0, t1, s1), vis, e, inv in zip(blocks, visible, es, invs, strict=True):
        gb = g[..., t0:t1, :]  # (..., Tb, hs)
        kb, vb = k[..., :s1, :], v[..., :s1, :]
        dv = _into(dv, _key_side(e.astype(v.dtype), (gb * inv).astype(v.dtype)), v.shape)
        dp = jnp.einsum("...td,...sd->...ts", gb.astype(v.dtype), vb,
                        preferred_element_type=jnp.float32)  # fmt: skip  # (..., Tb, Sb)
        row = jnp.sum(gb * out[..., t0:t1, :], axis=-1, keepdims=True)  # = rowsum(dP * P)
        ds = jnp.where(vis, e * (dp - row) * (inv * sm_scale), 0.0)  # (..., Tb, Sb) d(q.k)
        dqs.append(jnp.einsum("...ts,...sd->...td", ds.astype(k.dtype), kb,
                              preferred_element_type=jnp.float32))  # fmt: skip
        dk = _into(dk, _key_side(ds.astype(q.dtype), q[..., t0:t1, :]), k.shape)
    dq = dqs[0] if len(dqs) == 1 else jnp.concatenate(dqs, axis=-2)  # (..., T, hs)
    assert dk is not None and dv is not None
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_blocked_attend.defvjp(_blocked_fwd, _blocked_bwd)


def attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array | None = None,
    q_offset: jax.Array | int = 0,
    sm_scale: float | None = None,
    impl: Impl = "auto",
    segment_ids: jax.Array | None = None,
    prefix_mask: jax.Array | None = None,
    interpret: bool = False,
    platform: str | None = None,
) -> jax.Array:
    """Causal multi-head attention; shapes and masks as in :func:`xla_attention`.

    The kernel is picked by :func:`kernel_backend` ("attention", ``impl``, ``interpret``,
    ``platform``: the target platform, default ``jax.default_backend()``):
    ``impl="auto"`` uses the flash kernel where it has a lowering (or with ``interpret``) and
    the call is self-attention without a cache offset (``q_offset == 0`` as a Python int and
    T == S); ``impl="pallas"`` raises where the kernel cannot run (no lowering on this
    backend and no ``interpret``, or a cache offset). ``impl="pallas-interpret"`` is
    ``impl="pallas", interpret=True``.
    Padding is expressed to the kernel as segment ids (``key_mask`` False -> segment -1,
    or 0 when there are no segment ids), so real tokens never see padding. Prefix-LM through
    the kernel takes two calls: the causal one, and a non-causal one over the prefix keys
    only whose rows replace the prefix queries' rows. That is exact when each segment's
    prefix is a leading run of it (as ``train.objectives`` builds it); the XLA path
    implements the rule for any mask.
    Under an active mesh (``axes.axis_rules``) the kernel is called inside ``shard_map``
    with batch and heads split by the logical-axis rules (the sequence must not be split).
    """
    if (q.ndim != 4 or k.shape != v.shape or q.shape[:2] != k.shape[:2]
            or q.shape[3] != k.shape[3]):  # fmt: skip
        raise ValueError(f"attention shapes q={q.shape} k={k.shape} v={v.shape} do not match")
    if impl not in ("auto", "xla", "pallas", "pallas-interpret"):
        raise ValueError(f"attention impl must be auto, xla, pallas or pallas-interpret, "
                         f"got {impl!r}")  # fmt: skip
    if impl == "pallas-interpret":
        impl, interpret = "pallas", True
    scale = sm_scale if sm_scale is not None else q.shape[-1] ** -0.5
    t_len, s_len = q.shape[2], k.shape[2]
    # the kernel's alignment: the queries are the last T of the S keys (self-attention, or
    # the last position(s) of one, as a prefill's last_only layer asks)
    aligned = isinstance(q_offset, int) and t_len <= s_len and q_offset == s_len - t_len
    backend = kernel_backend("attention", impl, interpret=interpret, platform=platform)
    if impl == "pallas" and not aligned:
        raise ValueError(
            f"impl='pallas' needs self-attention (the queries are the last T keys: "
            f"q_offset = S - T as a Python int), got T={t_len} S={s_len} q_offset={q_offset!r}"
        )
    if backend == "xla" or not aligned:
        return xla_attention(q, k, v, key_mask=key_mask, q_offset=q_offset, sm_scale=scale,
                             segment_ids=segment_ids, prefix_mask=prefix_mask)  # fmt: skip
    for name, x in (("segment_ids", segment_ids), ("prefix_mask", prefix_mask)):
        if x is not None and x.shape != (q.shape[0], k.shape[2]):
            raise ValueError(f"{name} must be (batch, seq) = {(q.shape[0], k.shape[2])}, "
                             f"got {x.shape}")  # fmt: skip
    seg = None
    if segment_ids is not None:
        seg = segment_ids.astype(jnp.int32)  # (B, S)
        if key_mask is not None:
            seg = jnp.where(key_mask, seg, -1)
    elif key_mask is not None:
        seg = key_mask.astype(jnp.int32)  # (B, S): padding 0, tokens 1
    out = _sharded_flash(q, k, v, seg, causal=True, sm_scale=scale, interpret=interpret,
                         backend=backend)  # fmt: skip
    if prefix_mask is None:
        return out  # (B, nh, T, hs)
    # Prefix-LM: a prefix query sees exactly the prefix of its segment (the prefix is a
    # leading run, so its causal keys are prefix keys too): a non-causal call where only
    # prefix keys keep their segment id. Its other rows are discarded.
    base = seg if seg is not None else jnp.ones(prefix_mask.shape, jnp.int32)
    outside = jnp.iinfo(jnp.int32).min  # an id no real segment has
    pseg = jnp.where(prefix_mask, base, outside)  # (B, S)
    both = _sharded_flash(q, k, v, pseg, causal=False, sm_scale=scale, interpret=interpret,
                          backend=backend)  # fmt: skip
    return jnp.where(prefix_mask[:, None, s_len - t_len :, None], both, out)  # (B, nh, T, hs)


def _sharded_flash(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    seg: jax.Array | None,
    *,
    causal: bool,
    sm_scale: float,
    interpret: bool,
    backend: KernelBackend,
) -> jax.Array:
    """The flash kernel, inside ``shard_map`` over batch and heads when a mesh is active."""

    def kernel(q: jax.Array, k: jax.Array, v: jax.Array, seg: jax.Array | None) -> jax.Array:
        return _flash(q, k, v, causal=causal, sm_scale=sm_scale, segment_ids=seg,
                      interpret=interpret, backend=backend)  # fmt: skip

    if not ax._ACTIVE:
        return kernel(q, k, v, seg)
    mesh, rules = ax._ACTIVE[-1]
    spec = ax.logical_to_spec((ax.BATCH, ax.ACT_HEADS, ax.LENGTH, ax.ACT_HEAD_DIM),
                              tuple(rules.items()))  # fmt: skip
    if spec[2] is not None or spec[3] is not None:
        raise ValueError(
            f"the flash kernel needs whole sequences and heads per device; the axis rules "
            f"split them as {spec}"
        )
    seg_spec = PartitionSpec(spec[0], None)
    if seg is None:
        return jax.shard_map(lambda q, k, v: kernel(q, k, v, None), mesh=mesh,
                             in_specs=(spec, spec, spec), out_specs=spec,
                             check_vma=False)(q, k, v)  # fmt: skip
    return jax.shard_map(kernel, mesh=mesh, in_specs=(spec, spec, spec, seg_spec),
                         out_specs=spec, check_vma=False)(q, k, v, seg)  # fmt: skip


def cache_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    key_mask: jax.Array,
    q_offset: jax.Array | int,
    sm_scale: float,
    backend: KernelBackend,
    interpret: bool = False,
) -> jax.Array:
    """T new queries per row against the KV cache as stored (merged batch * heads rows).

    q: (B * nh, T, hs) at slots ``q_offset ..``; k, v: (B * nh, S, hs) the cache; key_mask:
    (B, S). ``backend`` "xla": :func:`xla_attention`; "tpu": the Pallas decode kernel
    (``pallas_kernels.decode_attention``; interpreted with ``interpret``), inside
    ``shard_map`` over the cache's batch axes when a mesh is active.
    """
    heads = q.shape[0] // key_mask.shape[0]
    if backend == "xla":
        return xla_attention(q, k, v, key_mask=jnp.repeat(key_mask, heads, axis=0),
                             q_offset=q_offset, sm_scale=sm_scale)  # fmt: skip
    if backend != "tpu":
        raise ValueError(f"the decode kernel runs on TPU (or interpreted), got {backend!r}")

    def kernel(q: jax.Array, k: jax.Array, v: jax.Array, km: jax.Array, off: jax.Array) -> Any:
        return _decode(q, k, v, km, off, sm_scale=sm_scale, interpret=interpret)

    off = jnp.asarray(q_offset, jnp.int32)
    if not ax._ACTIVE:
        return kernel(q, k, v, key_mask, off)  # (B * nh, T, hs)
    mesh, rules = ax._ACTIVE[-1]
    spec = ax.logical_to_spec((ax.CACHE_BATCH, ax.CACHE_LENGTH, ax.CACHE_HEAD_DIM),
                              tuple(rules.items()))  # fmt: skip
    if spec[1] is not None or spec[2] is not None:
        raise ValueError(f"the decode kernel needs whole cache rows per device; the axis rules "
                         f"split them as {spec}")  # fmt: skip
    return jax.shard_map(kernel, mesh=mesh,
                         in_specs=(spec, spec, spec, PartitionSpec(spec[0], None),
                                   PartitionSpec()),
                         out_specs=spec, check_vma=False)(q, k, v, key_mask, off)  # fmt: skip
