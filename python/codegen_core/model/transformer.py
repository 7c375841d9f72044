"""CodeGen (GPT-J style) and CodeGen2.5 (LLaMA) decoders as pure functions over a pytree.

Parameter pytree (``init`` and the checkpoint reader produce it; shapes for E = d_model,
nh = n_head, hs = head_dim, F = mlp_dim, V = vocab_size)::

    wte.embedding          (V, E)
    h[i]                   one dict per layer (a list: separate buffers decode fastest on
                           CPU; ``stack_layers`` gives the scan-friendly stacked form)
      codegen: ln_1.{scale,bias} (E,), attn.qkv (3, nh, hs, E) [q, k, v], attn.out (E, nh, hs),
               mlp.fc_in.{kernel (F, E), bias (F,)}, mlp.fc_out.{kernel (E, F), bias (E,)}
      llama:   input_norm.scale (E,), attn.qkv, attn.out, post_attention_norm.scale (E,),
               mlp.gate_up (2, F, E) [gate, up], mlp.down (E, F)
    ln_f.{scale,bias} (codegen) | norm.scale (llama)
    lm_head.kernel (V, E), lm_head.bias (V,) (codegen only)

Matmul kernels are stored (out, in), like torch's Linear: decoding's few-row products read
each weight row contiguously. Every matmul goes through ``cpu_dense.dense``: on CPU, products
of up to ``NATIVE_MAX_ROWS`` rows (decode steps, short prompts) run the native kernel, which
streams fp32 or bf16 weights once per step; larger ones and other backends use XLA. The
forward pass computes in the dtype of the parameters (fp32 or bf16; on CPU bf16 weights with
fp32 activations) with fp32 accumulation, fp32 norms, fp32 attention softmax and fp32 logits.
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from codegen_core.model import axes as ax
from codegen_core.model.attention import (
    Impl,
    KernelBackend,
    attention,
    cache_attention,
    kernel_backend,
)
from codegen_core.model.config import CodeGenConfig
from codegen_core.model.cpu_dense import DenseImpl, dense, native_dense, use_native
from codegen_core.pallas_kernels.rotary import apply_rotary as _pallas_rotary

Params = dict[str, Any]


# ---- parameters ---------------------------------------------------------------------------
def param_axes(config: CodeGenConfig, *, stacked: bool = False) -> Params:
    """Logical axis names of every parameter (same structure as ``init``'s pytree)."""
    if config.arch == "codegen":
        layer: Params = {
            "ln_1": {"scale": (ax.NORM,), "bias": (ax.NORM,)},
            "attn": {
                "qkv": (ax.QKV, ax.HEADS, ax.HEAD_DIM, ax.EMBED),
                "out": (ax.EMBED, ax.HEADS, ax.HEAD_DIM),
            },
            "mlp": {
                "fc_in": {"kernel": (ax.MLP, ax.EMBED), "bias": (ax.MLP,)},
                "fc_out": {"kernel": (ax.EMBED, ax.MLP), "bias": (ax.NORM,)},
            },
        }
        top: Params = {
            "ln_f": {"scale": (ax.NORM,), "bias": (ax.NORM,)},
            "lm_head": {"kernel": (ax.VOCAB, ax.EMBED), "bias": (ax.VOCAB,)},
        }
    else:
        layer = {
            "input_norm": {"scale": (ax.NORM,)},
            "attn": {
                "qkv": (ax.QKV, ax.HEADS, ax.HEAD_DIM, ax.EMBED),
                "out": (ax.EMBED, ax.HEADS, ax.HEAD_DIM),
            },
            "post_attention_norm": {"scale": (ax.NORM,)},
            "mlp": {"gate_up": (ax.GATE_UP, ax.MLP, ax.EMBED), "down": (ax.EMBED, ax.MLP)},
        }
        top = {"norm": {"scale": (ax.NORM,)}, "lm_head": {"kernel": (ax.VOCAB, ax.EMBED)}}
    is_leaf = lambda x: isinstance(x, tuple)
    if stacked:
        h: Any = jax.tree.map(lambda names: (ax.LAYERS, *names), layer, is_leaf=is_leaf)
    else:
        h = [layer for _ in range(config.n_layer)]
    return {"wte": {"embedding": (ax.VOCAB, ax.EMBED)}, "h": h, **top}


def _trunc_normal(key: jax.Array, shape: tuple[int, ...], std: float, dtype: Any) -> jax.Array:
    # Haiku's TruncatedNormal: cut at 2 sigma, rescaled so the result has stddev ``std``.
    x = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
    return (x * (std / 0.87962566103423978)).astype(dtype)


def init(
    config: CodeGenConfig, key: jax.Array, *, dtype: Any = jnp.float32, stacked: bool = False
) -> Params:
    """Random parameters with jaxformer's initialisation (see :func:`init_unjitted`); one
    compiled program per config, so drawing even a tiny model does not dispatch op by op."""
    return _init_jit(config, key, dtype=jnp.dtype(dtype), stacked=stacked)


def init_unjitted(
    config: CodeGenConfig, key: jax.Array, *, dtype: Any = jnp.float32, stacked: bool = False
) -> Params:
    """Random parameters with jaxformer's (mesh-transformer-jax) initialisation.

    Truncated normal (2 sigma) with stddev 1/sqrt(fan_in) for input-side matrices (qkv,
    fc_in / gate_up, lm_head), ``(2 / n_layer) / sqrt(d_model)`` for the matrices that write
    into the residual stream (attention out, fc_out / down), 1/sqrt(vocab) for the embedding;
    biases zero, norm scales one. The LLaMA variant uses the same rule (no jaxformer original).
    Layers are drawn with one vmapped program (compile time independent of depth);
    ``stacked=True`` returns them stacked (the lax.scan layout, see ``stack_layers``).
    """
    e, f, v, nh, hs = (config.d_model, config.mlp_dim, config.vocab_size, config.n_head,
                       config.head_dim)  # fmt: skip
    residual_std = (2.0 / config.n_layer) / math.sqrt(e)
    zeros = lambda n: jnp.zeros((n,), dtype)
    ones = lambda n: jnp.ones((n,), dtype)

    def init_layer(k_layer: jax.Array) -> Params:
        k_qkv, k_out, k_in, k_down = jax.random.split(k_layer, 4)
        attn = {
            "qkv": _trunc_normal(k_qkv, (3, nh, hs, e), 1 / math.sqrt(e), dtype),
            "out": _trunc_normal(k_out, (e, nh, hs), residual_std, dtype),
        }
        if config.arch == "codegen":
            return {
                "ln_1": {"scale": ones(e), "bias": zeros(e)},
                "attn": attn,
                "mlp": {
                    "fc_in": {"kernel": _trunc_normal(k_in, (f, e), 1 / math.sqrt(e), dtype),
                              "bias": zeros(f)},
                    "fc_out": {"kernel": _trunc_normal(k_down, (e, f), residual_std, dtype),
                               "bias": zeros(e)},
                },
            }  # fmt: skip
        return {
            "input_norm": {"scale": ones(e)},
            "attn": attn,
            "post_attention_norm": {"scale": ones(e)},
            "mlp": {"gate_up": _trunc_normal(k_in, (2, f, e), 1 / math.sqrt(e), dtype),
                    "down": _trunc_normal(k_down, (e, f), residual_std, dtype)},
        }  # fmt: skip

    k_emb, k_head, k_layers = jax.random.split(key, 3)
    layers = jax.vmap(init_layer)(jax.random.split(k_layers, config.n_layer))
    params: Params = {
        "wte": {"embedding": _trunc_normal(k_emb, (v, e), 1 / math.sqrt(v), dtype)},
        "h": layers,
    }
    head = _trunc_normal(k_head, (v, e), 1 / math.sqrt(e), dtype)
    if config.arch == "codegen":
        params["ln_f"] = {"scale": ones(e), "bias": zeros(e)}
        params["lm_head"] = {"kernel": head, "bias": zeros(v)}
    else:
        params["norm"] = {"scale": ones(e)}
        params["lm_head"] = {"kernel": head}
    return params if stacked else unstack_layers(params)


_init_jit = jax.jit(init_unjitted, static_argnums=0, static_argnames=("dtype", "stacked"))


def stack_layers(params: Params) -> Params:
    """Per-layer list -> one dict of arrays with a leading ``layers`` axis (for lax.scan)."""
    if not isinstance(params["h"], list | tuple):
        return params
    return {**params, "h": jax.tree.map(lambda *xs: jnp.stack(xs), *params["h"])}


def unstack_layers(params: Params) -> Params:
    """Inverse of :func:`stack_layers` (the fast layout for CPU decoding)."""
    h = params["h"]
    if isinstance(h, list | tuple):
        return params
    n = jax.tree.leaves(h)[0].shape[0]
    return {**params, "h": [jax.tree.map(lambda x, i=i: x[i], h) for i in range(n)]}


def cast_params(params: Params, dtype: Any) -> Params:
    return jax.tree.map(lambda x: x.astype(dtype), params)


def count_params(params: Params) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


# ---- KV cache -----------------------------------------------------------------------------
class KVCache(NamedTuple):
    """Preallocated keys/values for all layers; every row writes the same slot per step.

    Left padding keeps rows aligned: pad slots are simply never visible (``mask``), and
    each row's rotary position is its count of real tokens (``lengths``), as transformers
    derives positions with ``cumsum(attention_mask) - 1``.
    """

    # Stored as (B * nh, S, hs) = (B, nh, S, hs) with batch and heads merged: the attention
    # dots then read it without a reshape, which XLA CPU would otherwise fuse with the cache
    # update and duplicate (one full cache copy per layer per token).
    k: tuple[jax.Array, ...]  # n_layer x (B * nh, S, hs)
    v: tuple[jax.Array, ...]  # n_layer x (B * nh, S, hs)
    mask: jax.Array  # (B, S) bool: slot holds a real token
    index: jax.Array  # () int32: next slot to write
    lengths: jax.Array  # (B,) int32: real tokens so far = next rotary position

    @property
    def max_len(self) -> int:
        return self.mask.shape[1]


CACHE_AXES = (ax.CACHE_BATCH, ax.CACHE_LENGTH, ax.CACHE_HEAD_DIM)  # batch*heads, slot, dim


def init_cache(
    config: CodeGenConfig, batch: int, max_len: int, dtype: Any = jnp.float32
) -> KVCache:
    """An empty cache of ``max_len`` slots (prompt + new tokens)."""
    shape = (batch * config.n_head, max_len, config.head_dim)
    return KVCache(
        k=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer)),
        v=tuple(jnp.zeros(shape, dtype) for _ in range(config.n_layer)),
        mask=jnp.zeros((batch, max_len), bool),
        index=jnp.zeros((), jnp.int32),
        lengths=jnp.zeros((batch,), jnp.int32),
    )


def cache_dtype(params: Params) -> Any:
    """The KV cache dtype matching the activations: the parameter dtype, but fp32 on CPU
    (where bf16 weights are computed with fp32 activations, see ``cpu_dense.dense``)."""
    dtype = jnp.dtype(params["wte"]["embedding"].dtype)
    return jnp.dtype(jnp.float32) if jax.default_backend() == "cpu" else dtype


# ---- building blocks ----------------------------------------------------------------------
def _layer_norm(x: jax.Array, p: Params, eps: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + eps)
    return (y * p["scale"].astype(jnp.float32) + p["bias"].astype(jnp.float32)).astype(x.dtype)


def _rms_norm(x: jax.Array, p: Params, eps: float) -> jax.Array:
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + eps)
    return p["scale"] * y.astype(x.dtype)


def _inv_freq(dim: int, base: float) -> np.ndarray:
    # float32 throughout, as transformers computes it
    exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    return (np.float32(1.0) / np.power(np.float32(base), exponent)).astype(np.float32)


def rotary_tables(positions: jax.Array, config: CodeGenConfig) -> tuple[jax.Array, jax.Array]:
    """sin, cos of shape (B, T, rot_dim / 2), computed once per forward, shared by layers."""
    angles = positions.astype(jnp.float32)[..., None] * _inv_freq(config.rot_dim, config.rope_base)
    return jnp.sin(angles), jnp.cos(angles)


def apply_rotary(x: jax.Array, sin: jax.Array, cos: jax.Array, *, interleaved: bool) -> jax.Array:
    """Rotate the first 2 * sin.shape[-1] features of each head of x (B, T, nh, hs).

    interleaved=True: GPT-J pairs (0,1), (2,3), ... (CodeGen). False: NeoX halves (LLaMA).
    """
    rot = 2 * sin.shape[-1]
    xr, x_pass = x[..., :rot].astype(jnp.float32), x[..., rot:]
    s, c = sin[:, :, None, :], cos[:, :, None, :]  # (B, T, 1, rot/2)
    if interleaved:
        pairs = xr.reshape(*xr.shape[:-1], rot // 2, 2)
        x1, x2 = pairs[..., 0], pairs[..., 1]
        out = jnp.stack([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(xr.shape)
    else:
        x1, x2 = xr[..., : rot // 2], xr[..., rot // 2 :]
        out = jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)
    out = out.astype(x.dtype)
    return jnp.concatenate([out, x_pass], axis=-1) if x_pass.shape[-1] else out


def rotary_kernel(
    x: jax.Array, positions: jax.Array, config: CodeGenConfig, *, interpret: bool
) -> jax.Array:
    """``apply_rotary`` through the Pallas rotary kernel: x (B, T, nh, hs), positions (B, T).

    GPT-J interleaved pairs for CodeGen (partial: ``config.rot_dim`` of ``head_dim``), NeoX
    halves for LLaMA; positions per token (packed documents restart). Under an active mesh
    the kernel runs inside ``shard_map`` over the batch, length and head axes of the rules
    (a ``pallas_call`` is not partitioned automatically; the head dim must stay whole).
    """

    def rotate(x: jax.Array, pos: jax.Array) -> jax.Array:
        return _pallas_rotary(x, pos, rotary_dim=config.rot_dim, base=config.rope_base,
                              interleaved=config.arch == "codegen", interpret=interpret,
                              backend="tpu")  # fmt: skip

    if not ax._ACTIVE:
        return rotate(x, positions)  # (B, T, nh, hs)
    mesh, rules = ax._ACTIVE[-1]
    spec = ax.logical_to_spec((ax.BATCH, ax.LENGTH, ax.ACT_HEADS, ax.ACT_HEAD_DIM),
                              tuple(rules.items()))  # fmt: skip
    if spec[3] is not None:
        raise ValueError(f"the rotary kernel needs whole heads per device; the axis rules "
                         f"split them as {spec}")  # fmt: skip
    return jax.shard_map(rotate, mesh=mesh, in_specs=(spec, PartitionSpec(spec[0], spec[1])),
                         out_specs=spec, check_vma=False)(x, positions)  # fmt: skip


class Kernels(NamedTuple):
    """The implementations one forward uses (``kernel_backend`` applied to the config)."""

    attention: KernelBackend
    rotary: KernelBackend
    interpret: bool
    attention_impl: str = "auto"  # what was asked: the decode kernel is resolved from it


def kernels_for(config: CodeGenConfig, attn_impl: Impl | None = None) -> Kernels:
    """The config's kernel choice; ``attn_impl`` (other than None or "auto") overrides
    ``config.attention_impl`` ("pallas-interpret" = "pallas" in interpret mode)."""
    impl: str = config.attention_impl if attn_impl in (None, "auto") else attn_impl
    attn_interpret = config.interpret
    if impl == "pallas-interpret":
        impl, attn_interpret = "pallas", True
    plat = config.kernel_platform
    return Kernels(
        attention=kernel_backend("attention", impl, interpret=attn_interpret, platform=plat),
        rotary=kernel_backend(
            "rotary", config.rotary_impl, interpret=config.interpret, platform=plat
        ),
        interpret=attn_interpret,
        attention_impl=impl,
    )


def _attention_block(
    p: Params,
    h: jax.Array,
    *,
    rope: tuple[jax.Array, jax.Array] | None,
    positions: jax.Array,
    config: CodeGenConfig,
    layer_cache: tuple[jax.Array, jax.Array] | None,
    key_mask: jax.Array | None,
    index: jax.Array | int,
    kernels: Kernels,
    dense_impl: DenseImpl,
    last: bool = False,
    segment_ids: jax.Array | None = None,
    prefix_mask: jax.Array | None = None,
) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
    """Attention output (B, T, E), or (B, 1, E) for the last position only with ``last``
    (keys and values of every position still go to the cache)."""
    # 2-D weight view (a bitcast): a multi-dim einsum makes XLA CPU transpose the weight
    # into a fresh buffer on every call (a full qkv weight copy per decode step). The scanned
    # layers pass the weights already 2-D: (3 * nh * hs, E) and (E, nh * hs).
    nh, hs = config.n_head, config.head_dim
    w_qkv = p["qkv"] if p["qkv"].ndim == 2 else p["qkv"].reshape(3 * nh * hs, -1)
    qkv = dense(h, w_qkv, dense_impl)  # (B, T, 3 * E)
    qkv = qkv.reshape(*qkv.shape[:2], 3, nh, hs)  # (B, T, 3, nh, hs)
    # one split (its gradient is one concatenate), not three slices (whose gradients are
    # three zero-padded copies of the whole qkv added together)
    q, k, v = (t[:, :, 0] for t in jax.lax.split(qkv, (1, 1, 1), axis=2))  # (B, T, nh, hs) each
    if rope is None:  # the Pallas rotary kernel
        q = rotary_kernel(q, positions, config, interpret=config.interpret)
        k = rotary_kernel(k, positions, config, interpret=config.interpret)
    else:
        interleaved = config.arch == "codegen"
        q = apply_rotary(q, *rope, interleaved=interleaved)
        k = apply_rotary(k, *rope, interleaved=interleaved)
    # heads-major for the attention dots: (B, nh, T, hs)
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    q = ax.constrain(q, (ax.BATCH, ax.ACT_HEADS, ax.LENGTH, ax.ACT_HEAD_DIM))
    new_cache = None
    b, nh, t, hs = k.shape
    if layer_cache is not None:  # write this call's keys/values at slots index .. index + T
        ck, cv = (
            jax.lax.dynamic_update_slice(c, x.reshape(b * nh, t, hs).astype(c.dtype), (0, index, 0))
            for c, x in zip(layer_cache, (k, v), strict=True)
        )  # (B * nh, S, hs) each
        ck, cv = ax.constrain(ck, CACHE_AXES), ax.constrain(cv, CACHE_AXES)
        new_cache = (ck, cv)
    q_offset = index
    if last:  # only the last query: (B, nh, 1, hs)
        q, q_offset = q[:, :, -1:], index + t - 1
    if new_cache is not None and not isinstance(index, int):
        # Attend over the cache as stored: any reshape of it here lets XLA CPU fuse the
        # reshape into the cache update and run that update twice (a full cache copy per
        # layer per token). q, the mask and the output are small; reshape those instead.
        # Decode steps and prefills into a non-empty cache: the Pallas decode kernel where
        # attention_impl asks for it and it runs (TPU, or interpreted), else XLA.
        decode = kernel_backend("decode", kernels.attention_impl, interpret=kernels.interpret,
                                platform=config.kernel_platform)  # fmt: skip
        out = cache_attention(
            q.reshape(b * nh, q.shape[2], hs).astype(ck.dtype), ck, cv,
            key_mask=key_mask, q_offset=q_offset, sm_scale=config.head_dim**-0.5,
            backend=decode, interpret=kernels.interpret,
        ).reshape(q.shape)  # fmt: skip
    else:  # no cache, or an empty one (static index 0): the tokens attend among themselves
        out = attention(
            q, k, v, key_mask=key_mask, q_offset=q_offset, sm_scale=config.head_dim**-0.5,
            impl="xla" if kernels.attention == "xla" else "pallas", interpret=kernels.interpret,
            platform=config.kernel_platform,
            segment_ids=segment_ids, prefix_mask=prefix_mask,
        )  # fmt: skip  # (B, nh, T, hs)
    b, nh, t, hs = out.shape
    out = out.transpose(0, 2, 1, 3).reshape(b, t, nh * hs)  # (B, T, E): small, weight untouched
    w_out = p["out"] if p["out"].ndim == 2 else p["out"].reshape(-1, nh * hs)  # (E, nh * hs)
    return dense(out, w_out, dense_impl), new_cache  # (B, T, E)


_GELU_C = math.sqrt(2.0 / math.pi)


@jax.custom_vjp
def gelu_tanh(x: jax.Array) -> jax.Array:
    """``jax.nn.gelu(x, approximate=True)`` (transformers' ``gelu_new``, CodeGen's MLP
    activation), with a written-out gradient that keeps only ``x`` for the backward pass.

    Autodiff of the tanh formula kept four more (B, T, F) intermediates per layer (the cube,
    the tanh, ...): at 350M, 20 layers x 4 x 8 MB = 0.67 GB more of a step's buffers, each
    page of which the kernel zeroes again every step on CPU. The derivative recomputes the
    tanh from ``x`` instead (one elementwise pass, fused into the gradient's consumer).
    """
    return jax.nn.gelu(x, approximate=True)


def _gelu_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jax.nn.gelu(x, approximate=True), x


def _gelu_bwd(x: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    xf = x.astype(jnp.float32)
    t = jnp.tanh(_GELU_C * (xf + 0.044715 * xf * xf * xf))
    # d/dx [x/2 (1 + t)] = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 * 0.044715 x^2)
    dt = _GELU_C * (1.0 + 3.0 * 0.044715 * xf * xf)
    d = 0.5 * (1.0 + t) + 0.5 * xf * (1.0 - t * t) * dt
    return ((g.astype(jnp.float32) * d).astype(g.dtype),)


gelu_tanh.defvjp(_gelu_fwd, _gelu_bwd)


def _codegen_block(p: Params, x: jax.Array, config: CodeGenConfig, **kw: Any) -> Any:
    h = _layer_norm(x, p["ln_1"], config.norm_eps)  # (B, T, E)
    attn_out, new_cache = _attention_block(p["attn"], h, config=config, **kw)
    if kw.get("last"):  # the last position only: (B, 1, E)
        h, x = h[:, -1:], x[:, -1:]
    mlp, impl = p["mlp"], kw["dense_impl"]
    m = dense(h, mlp["fc_in"]["kernel"], impl) + mlp["fc_in"]["bias"]  # (B, T, F)
    m = ax.constrain(gelu_tanh(m), (ax.BATCH, ax.LENGTH, ax.ACT_MLP))
    m = dense(m, mlp["fc_out"]["kernel"], impl) + mlp["fc_out"]["bias"]  # (B, T, E)
    return (attn_out + m) + x, new_cache  # transformers' summation order


def _llama_block(p: Params, x: jax.Array, config: CodeGenConfig, **kw: Any) -> Any:
    h = _rms_norm(x, p["input_norm"], config.norm_eps)
    attn_out, new_cache = _attention_block(p["attn"], h, config=config, **kw)
    x = (x[:, -1:] if kw.get("last") else x) + attn_out  # (B, T or 1, E)
    h = _rms_norm(x, p["post_attention_norm"], config.norm_eps)
    two, f, e = p["mlp"]["gate_up"].shape
    gu = dense(h, p["mlp"]["gate_up"].reshape(two * f, e), kw["dense_impl"])  # (B, T, 2F)
    gu = gu.reshape(*gu.shape[:2], two, f)  # (B, T, 2, F)
    m = ax.constrain(jax.nn.silu(gu[:, :, 0]) * gu[:, :, 1], (ax.BATCH, ax.LENGTH, ax.ACT_MLP))
    return x + dense(m, p["mlp"]["down"], kw["dense_impl"]), new_cache


def positions_from_mask(token_mask: jax.Array, start: jax.Array | int = 0) -> jax.Array:
    """transformers' rule: position = start + cumsum(mask) - 1, padding clamped to 0."""
    pos = jnp.asarray(start)[..., None] + jnp.cumsum(token_mask.astype(jnp.int32), axis=-1) - 1
    return jnp.maximum(pos, 0)


def positions_from_segments(segment_ids: jax.Array) -> jax.Array:
    """Positions restarting at 0 at the first token of every segment (B, T) -> (B, T) int32.

    A segment starts where the id differs from the previous token's; padding (0) counts on
    like any segment (its positions are never used for a real token).
    """
    t = segment_ids.shape[-1]
    idx = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), segment_ids.shape)
    starts = jnp.concatenate(
        [jnp.ones_like(segment_ids[..., :1], bool), segment_ids[..., 1:] != segment_ids[..., :-1]],
        axis=-1,
    )  # (B, T): True at the first token of a segment
    first = jax.lax.cummax(jnp.where(starts, idx, 0), axis=segment_ids.ndim - 1)
    return idx - first


Remat = Literal["none", "full", "dots"]

_REMAT_POLICIES: dict[str, Any] = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def forward(
    params: Params,
    tokens: jax.Array,
    config: CodeGenConfig,
    *,
    token_mask: jax.Array | None = None,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    prefix_mask: jax.Array | None = None,
    cache: KVCache | None = None,
    last_only: bool = False,
    attn_impl: Impl | None = None,
    dense_impl: DenseImpl = "auto",
    empty_cache: bool = False,
    remat: Remat = "none",
    return_hidden: bool = False,
) -> tuple[jax.Array, KVCache | None]:
    """Logits (B, T, V) in fp32 (or (B, 1, V) with ``last_only``) and the updated cache.

    tokens: (B, T) int ids; token_mask: (B, T), 0 marks (left) padding.
    Without a cache this is the full causal forward (training, scoring). With a cache, the
    T tokens are written at slots ``cache.index ..`` and attend to everything cached so far:
    T = prompt length is prefill, T = 1 is one decode step.
    ``empty_cache=True`` promises the cache holds nothing yet (``cache.index == 0``, a first
    prefill): the tokens then attend among themselves with static causal structure (the
    flash kernel where it runs, causal blocks skipped on the XLA path) instead of over every
    cache slot, and are written to slots ``0 .. T - 1``.
    The attention and rotary kernels follow ``config.attention_impl`` / ``rotary_impl`` /
    ``interpret`` (:func:`kernels_for`, one rule for training, scoring, prefill and decode);
    ``attn_impl`` other than None/"auto" overrides the attention choice. dense_impl picks the
    matmul kernel (``cpu_dense.dense``).

    Packed documents (training; no cache): ``segment_ids`` (B, T) int, 1.. per document and
    0 for padding: a token attends only to earlier-or-equal tokens of its own document, and
    padding never reaches a real token. ``positions`` (B, T) should be the per-document
    positions the shards store; without them they are derived (restarting per segment).
    ``prefix_mask`` (B, T) bool (prefix-LM): True marks the bidirectional prefix of each
    segment; every token of a segment also sees all prefix tokens of that segment (served by
    the XLA attention path). ``remat`` wraps each layer in ``jax.checkpoint``: "full" saves
    nothing (recomputes the layer in the backward pass), "dots" saves the matmul outputs
    without batch dimensions, "none" (default) saves everything.
    ``return_hidden=True`` (no cache) returns the final hidden states (B, T, E) after the
    final norm instead of the logits: the training loss applies the LM head itself, fused
    with the cross-entropy (``train.step.head_lse_picked``).
    """
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be (batch, seq), got shape {tokens.shape}")
    if remat not in ("none", "full", "dots"):
        raise ValueError(f"remat must be 'none', 'full' or 'dots', got {remat!r}")
    for name, x in (("segment_ids", segment_ids), ("prefix_mask", prefix_mask),
                    ("positions", positions), ("token_mask", token_mask)):  # fmt: skip
        if x is not None and x.shape != tokens.shape:
            raise ValueError(f"{name} must have the tokens' shape {tokens.shape}, got {x.shape}")
    if return_hidden and cache is not None:
        raise ValueError("return_hidden is for the full forward (no KV cache)")
    if (segment_ids is not None or prefix_mask is not None) and cache is not None:
        raise ValueError("segment_ids / prefix_mask are for the full forward (no KV cache)")
    if prefix_mask is not None and segment_ids is None:
        segment_ids = jnp.ones(tokens.shape, jnp.int32)  # one segment per row
    if segment_ids is not None:
        segment_ids = segment_ids.astype(jnp.int32)
        if positions is None:
            positions = positions_from_segments(segment_ids)
    if prefix_mask is not None:
        prefix_mask = prefix_mask.astype(bool)
    packed_no_mask = segment_ids is not None and token_mask is None
    if token_mask is None:
        token_mask = jnp.ones(tokens.shape, bool)
    token_mask = token_mask.astype(bool)
    if empty_cache and cache is None:
        raise ValueError("empty_cache=True needs a cache to fill")
    index: jax.Array | int
    if cache is not None and not empty_cache:
        index = cache.index
        if positions is None:
            positions = positions_from_mask(token_mask, cache.lengths)
        key_mask = jax.lax.dynamic_update_slice(cache.mask, token_mask, (0, index))
    else:
        index = 0  # static: the tokens attend among themselves
        if positions is None:
            positions = positions_from_mask(token_mask)
        key_mask = token_mask
    x = params["wte"]["embedding"][tokens]  # (B, T, E)
    x = ax.constrain(x, (ax.BATCH, ax.LENGTH, ax.ACT_EMBED))
    kernels = kernels_for(config, attn_impl)
    # (B, T, rot/2) sin, cos shared by the layers, or None: each layer's Pallas rotary call
    rope = rotary_tables(positions, config) if kernels.rotary == "xla" else None
    block = _codegen_block if config.arch == "codegen" else _llama_block
    kw = {
        "rope": rope,
        "positions": positions,
        # packed rows: the segment ids already keep padding away from real tokens
        "key_mask": None if packed_no_mask else key_mask,
        "index": index,
        "kernels": kernels,
        "dense_impl": dense_impl,
        "segment_ids": segment_ids,
        "prefix_mask": prefix_mask,
    }
    policy = _REMAT_POLICIES.get(remat)
    new_k, new_v = [], []
    if isinstance(params["h"], list | tuple):
        for i, p in enumerate(params["h"]):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            # last_only: the final layer computes its output for the last position only
            last = last_only and i == len(params["h"]) - 1
            if policy is not None and layer_cache is None:

                def layer(p: Params, x: jax.Array, last: bool = last) -> jax.Array:
                    return block(p, x, config, layer_cache=None, last=last, **kw)[0]

                x, c = jax.checkpoint(layer, policy=policy)(p, x), None
            else:
                x, c = block(p, x, config, layer_cache=layer_cache, last=last, **kw)
            if c is not None:
                new_k.append(c[0])
                new_v.append(c[1])
    else:  # stacked layers: one scanned step (compile time independent of depth)
        if cache is not None:
            raise ValueError("a KV cache needs per-layer params (use unstack_layers)")

        # The attention weights enter the scan as (L, rows, cols) views (free reshapes of
        # contiguous arrays) and the layer uses each slice as its 2-D matmul operand as is:
        # the backward pass then reads the forward's residual weights straight from the
        # stack. A reshape inside the layer made the scan save every layer's reshaped qkv
        # and out weights as residuals (a copy of them per step), and XLA:CPU's slices,
        # updates and zero-fills of the 5-D / 4-D stacks are slow.
        stacked = params["h"]
        qkv, out = stacked["attn"]["qkv"], stacked["attn"]["out"]
        n = qkv.shape[0]
        flat = {**stacked, "attn": {
            "qkv": qkv.reshape(n, -1, qkv.shape[-1]),  # (L, 3 * nh * hs, E)
            "out": out.reshape(n, out.shape[1], -1),  # (L, E, nh * hs)
        }}  # fmt: skip

        def step(x: jax.Array, p: Params) -> tuple[jax.Array, None]:
            # the carry keeps the input's dtype: with bf16 params on CPU a layer returns
            # fp32 (bf16 weights, fp32 accumulation), which a scan carry cannot change to
            return block(p, x, config, layer_cache=None, **kw)[0].astype(x.dtype), None

        if policy is not None:
            step = jax.checkpoint(step, policy=policy, prevent_cse=False)
        x, _ = jax.lax.scan(step, x, flat)
    if last_only:
        x = x[:, -1:]
    if config.arch == "codegen":
        x = _layer_norm(x, params["ln_f"], config.norm_eps)
    else:
        x = _rms_norm(x, params["norm"], config.norm_eps)
    if return_hidden:
        return x, None  # (B, T, E)
    head = params["lm_head"]
    if use_native(x, head["kernel"], dense_impl):
        logits = native_dense(x, head["kernel"])  # (B, T, V) fp32
    else:
        logits = jnp.einsum(
            "bte,ve->btv", x.astype(head["kernel"].dtype), head["kernel"],
            preferred_element_type=jnp.float32,
        )  # fmt: skip
    if "bias" in head:
        logits = logits + head["bias"].astype(jnp.float32)
    logits = ax.constrain(logits, (ax.BATCH, ax.LENGTH, ax.ACT_VOCAB))
    if cache is None:
        return logits, None
    t = tokens.shape[1]
    if empty_cache:
        key_mask = jax.lax.dynamic_update_slice(cache.mask, token_mask, (0, 0))
    new_cache = KVCache(
        k=tuple(new_k),
        v=tuple(new_v),
        mask=key_mask,
        index=cache.index + t,
        lengths=cache.lengths + token_mask.sum(-1, dtype=jnp.int32),
    )
    return logits, new_cache
