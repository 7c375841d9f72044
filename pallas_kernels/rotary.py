"""Rotary position embedding (RoPE) as a Pallas TPU kernel, with a plain-jnp reference.

Two pairings of features are supported (both rotate only the first ``rotary_dim`` features of
each head; the rest pass through unchanged):

- ``interleaved=True``: GPT-J / CodeGen "rotate_every_two": pairs (0, 1), (2, 3), ...; pair
  ``i`` turns by ``pos * base ** (-2i / rotary_dim)``.
- ``interleaved=False``: GPT-NeoX / LLaMA "rotate_half": pairs (i, i + rotary_dim / 2);
  LLaMA / CodeGen2.5 use ``rotary_dim = head_dim``.

``out = x * cos + rotate(x) * sin``, with angles ``positions[b, s] * inv_freq`` computed in
fp32. ``inv_freq = 1 / base ** (arange(0, rotary_dim, 2) / rotary_dim)`` is evaluated in fp32
as transformers does (equal to its values, or within 1 ulp for a few entries at some
rotary_dims, e.g. 256); the rotation itself is done in fp32 and rounded once to ``x.dtype``
(transformers' LLaMA rounds cos/sin to the activation dtype first: in bf16 the two differ by
bf16 rounding).

Positions are explicit per token: for left-padded batches derive them from the attention mask
(``positions = max(cumsum(mask) - 1, 0)``), as transformers does.

The kernel sees each [seq block, heads * head_dim] tile as a 2-D array, so heads * head_dim is
the lane dimension: the partner of every feature is a fixed lane shift away (1 for interleaved,
rotary_dim / 2 for half-split), taken with two lane rotations, and never crosses a head. Its
gradient is the inverse rotation (the same kernel with ``sin`` negated): RoPE is orthogonal.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

RotaryBackend = Literal["auto", "tpu", "xla"]

_TILE_BYTES = 1 << 20  # ~1 MiB of x per grid step keeps double-buffered in/out well in VMEM
_SUBLANES = 8


def _inv_freq(rotary_dim: int, base: float) -> np.ndarray:
    """[rotary_dim // 2] fp32, computed as transformers does (fp32 power, then reciprocal)."""
    exponent = np.arange(0, rotary_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(
        rotary_dim
    )
    return (np.float32(1.0) / (np.float32(base) ** exponent)).astype(np.float32)


def _lane_tables(
    heads: int, head_dim: int, rotary_dim: int, base: float, interleaved: bool
) -> np.ndarray:
    """[3, heads * head_dim] fp32 per-lane constants: inv_freq, coef of x[l+s], coef of x[l-s].

    ``rotate(x)[l] = a[l] * x[l + s] + b[l] * x[l - s]`` (s = partner shift); lanes beyond
    ``rotary_dim`` get inv_freq 0 (cos 1, sin 0) and zero coefficients, so they pass through.
    """
    inv = _inv_freq(rotary_dim, base)
    d = np.arange(head_dim)
    freq = np.zeros(head_dim, np.float32)
    a = np.zeros(head_dim, np.float32)
    b = np.zeros(head_dim, np.float32)
    rot = d < rotary_dim
    if interleaved:
        freq[rot] = inv[d[rot] // 2]
        first = rot & (d % 2 == 0)  # x'[2i] = x[2i] cos - x[2i+1] sin
    else:
        half = rotary_dim // 2
        freq[rot] = inv[d[rot] % half]
        first = d < half  # x'[i] = x[i] cos - x[i+half] sin
    second = rot & ~first
    a[first] = -1.0
    b[second] = 1.0
    return np.tile(np.stack([freq, a, b]), (1, heads))


def _rotary_kernel(pos_ref, tab_ref, x_ref, o_ref, *, shift: int, width: int, inverse: bool):
    x = x_ref[...].astype(jnp.float32)  # [block_s, H * D]
    tab = tab_ref[...]  # [3, H * D]
    angle = pos_ref[...].astype(jnp.float32) * tab[0:1, :]  # [block_s, 1] * [1, H*D]
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    if inverse:
        sin = -sin
    # Lane rotations (Mosaic tpu.rotate; jnp.roll semantics, and jnp.roll when interpreted).
    nxt = pltpu.roll(x, width - shift, 1)  # x[l + shift]
    prv = pltpu.roll(x, shift, 1)  # x[l - shift]
    out = x * cos + (nxt * tab[1:2, :] + prv * tab[2:3, :]) * sin
    o_ref[...] = out.astype(o_ref.dtype)


def _block_rows(seq: int, width: int, itemsize: int) -> int:
    rows = max(_SUBLANES, (_TILE_BYTES // (width * itemsize)) // _SUBLANES * _SUBLANES)
    return min(rows, -(-seq // _SUBLANES) * _SUBLANES)


def _rotary_pallas(x, positions, tables, *, shift: int, inverse: bool, interpret: bool):
    b, s, h, d = x.shape
    width = h * d
    rows = _block_rows(s, width, x.dtype.itemsize)
    s_pad = -(-s // rows) * rows
    x2 = jnp.pad(x.reshape(b, s, width), ((0, 0), (0, s_pad - s), (0, 0)))  # [B, S_pad, H*D]
    pos = jnp.pad(positions.astype(jnp.int32), ((0, 0), (0, s_pad - s)))[..., None]
    out = pl.pallas_call(
        functools.partial(_rotary_kernel, shift=shift, width=width, inverse=inverse),
        out_shape=jax.ShapeDtypeStruct(x2.shape, x.dtype),
        grid=(b, s_pad // rows),
        in_specs=[
            pl.BlockSpec((None, rows, 1), lambda i, j: (i, j, 0)),  # positions [rows, 1]
            pl.BlockSpec((3, width), lambda i, j: (0, 0)),  # lane tables
            pl.BlockSpec((None, rows, width), lambda i, j: (i, j, 0)),  # x
        ],
        out_specs=pl.BlockSpec((None, rows, width), lambda i, j: (i, j, 0)),
        compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")),
        interpret=interpret,
        name="rotary_inverse" if inverse else "rotary",
    )(pos, tables, x2)
    return out[:, :s].reshape(b, s, h, d)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _rotary(x, positions, cfg: tuple[int, bool], tables_key: tuple):
    shift, interpret = cfg
    return _rotary_pallas(
        x, positions, _tables(*tables_key), shift=shift, inverse=False, interpret=interpret
    )


def _rotary_fwd(x, positions, cfg, tables_key):
    return _rotary(x, positions, cfg, tables_key), positions


def _rotary_bwd(cfg, tables_key, positions, g):
    shift, interpret = cfg
    dx = _rotary_pallas(
        g, positions, _tables(*tables_key), shift=shift, inverse=True, interpret=interpret
    )
    return dx, None  # positions are integers: no cotangent


_rotary.defvjp(_rotary_fwd, _rotary_bwd)


@functools.lru_cache(maxsize=64)
def _tables_np(heads, head_dim, rotary_dim, base, interleaved) -> np.ndarray:
    return _lane_tables(heads, head_dim, rotary_dim, base, interleaved)


def _tables(heads, head_dim, rotary_dim, base, interleaved) -> jax.Array:
    return jnp.asarray(_tables_np(heads, head_dim, rotary_dim, base, interleaved))


def _check(x, positions, rotary_dim: int, interleaved: bool) -> None:
    if x.ndim != 4:
        raise ValueError(f"x must be [batch, seq, heads, head_dim], got x.shape={x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be floating point, got {x.dtype}")
    if positions.shape != x.shape[:2]:
        raise ValueError(
            f"positions must be [batch, seq] = {x.shape[:2]}, got positions.shape={positions.shape}"
        )
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise ValueError(f"positions must be integers, got {positions.dtype}")
    head_dim = x.shape[3]
    if not 0 < rotary_dim <= head_dim or rotary_dim % 2:
        raise ValueError(
            f"rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim=}"
        )
    if not isinstance(interleaved, bool):
        raise TypeError(f"interleaved must be a bool, got {interleaved!r}")


def apply_rotary(
    x: jax.Array,
    positions: jax.Array,
    *,
    rotary_dim: int,
    base: float = 10000.0,
    interleaved: bool,
    interpret: bool = False,
    backend: RotaryBackend = "auto",
) -> jax.Array:
    """Rotate the first ``rotary_dim`` features of every head of ``x`` by its position.

    Args:
      x: [batch, seq, heads, head_dim] queries or keys (any float dtype; output has it too).
      positions: [batch, seq] integer positions of each token.
      rotary_dim: number of rotated features per head (even, <= head_dim).
      base: RoPE base (10000 for CodeGen and LLaMA).
      interleaved: True for GPT-J/CodeGen pairs (2i, 2i+1), False for NeoX/LLaMA halves.
      interpret: run the Pallas kernel in interpret mode (CPU tests).
      backend: "auto" (Pallas on TPU or when ``interpret``; XLA elsewhere, where XLA's fusion
        of the elementwise formula is already memory-bound optimal), "tpu" or "xla".
    """
    _check(x, positions, rotary_dim, interleaved)
    if backend not in ("auto", "tpu", "xla"):
        raise ValueError(f"backend must be 'auto', 'tpu' or 'xla', got {backend=}")
    if backend == "auto":
        backend = "tpu" if interpret or jax.default_backend() == "tpu" else "xla"
    if backend == "xla":
        return rotary_reference(
            x, positions, rotary_dim=rotary_dim, base=base, interleaved=interleaved
        )
    _, _, heads, head_dim = x.shape
    shift = 1 if interleaved else rotary_dim // 2
    key = (heads, head_dim, rotary_dim, float(base), interleaved)
    return _rotary(x, positions, (shift, bool(interpret)), key)


def rotary_reference(
    x: jax.Array,
    positions: jax.Array,
    *,
    rotary_dim: int,
    base: float = 10000.0,
    interleaved: bool,
    interpret: bool = False,
) -> jax.Array:
    """Plain jnp RoPE, written like transformers' CodeGen (interleaved) and LLaMA (halves).

    ``interpret`` is accepted (and ignored) so the signature matches ``apply_rotary``.
    """
    del interpret
    _check(x, positions, rotary_dim, interleaved)
    inv = jnp.asarray(_inv_freq(rotary_dim, base))  # [rot / 2]
    angle = positions.astype(jnp.float32)[..., None] * inv  # [B, S, rot / 2]
    sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]  # [B, S, 1, rot/2]
    x_rot = x[..., :rotary_dim].astype(jnp.float32)
    x_pass = x[..., rotary_dim:]
    if interleaved:
        x1, x2 = x_rot[..., 0::2], x_rot[..., 1::2]  # pairs (2i, 2i + 1)
        out = jnp.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
        out = out.reshape(x_rot.shape)
    else:
        half = rotary_dim // 2
        x1, x2 = x_rot[..., :half], x_rot[..., half:]  # pairs (i, i + rot / 2)
        out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return jnp.concatenate([out.astype(x.dtype), x_pass], axis=-1)
