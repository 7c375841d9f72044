"""``y = x @ w.T`` for decoding on CPU: the native kernel (csrc/linalg/dense.cc) via XLA FFI.

Decoding multiplies a few activation rows by every weight matrix, once per token: the cost is
reading the weights. On the 2-core dev machine XLA CPU streams weights at 26 GB/s for one
row but 11 GB/s for 8 rows (batch 8), and bf16 weights at about 1 GB/s (it has no fast bf16
dot), so small products go to a kernel that streams each weight row once, reuses it for all
activation rows, widens bf16 in registers and splits the columns over XLA's intra-op
thread pool. Large products (prefill, training) stay on XLA, whose GEMMs are faster there.

:func:`dense` is the one entry point; the model calls it for every matmul. The native path
has a custom VJP (backward through XLA dots), so it is safe under ``jax.grad``.

Bandwidth: the 26 GB/s above is what one kernel reached, not the machine's ceiling. Decoding
at batch 1 reads every weight once per token, so its ceiling is the read bandwidth, which
``_core.stream_read`` (csrc/linalg/stream.cc) measures as a STREAM-style read of a
weight-sized buffer; ``benchmarks/bench_generate.py`` reports decode as a fraction of it
(``BENCH_PARTS=read`` prints the read bandwidth alone: 32 GB/s with huge pages, 22-23 with
4 KiB pages, on the shared dev machine at load 3.9). fp32 decode at batch 1 reads about
24 GB/s of weights at best (19.5 tok/s x 1.22 GB): below the ceiling (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import jax
import jax.numpy as jnp

DenseImpl = Literal["auto", "xla", "native"]

_TARGET = "codegen_core_dense"
# Rows (batch x tokens) up to which "auto" uses the native kernel on CPU. Measured on the
# 2-core dev machine with 1024 x 4096 weights: fp32 native is 1.2-1.6x XLA at 1-8 rows and
# even at 16-32; bf16 native is 2-13x XLA up to 32 rows (XLA widens the weight first) and
# even at 64. Above that, XLA's GEMMs (compute bound, packed) win.
NATIVE_MAX_ROWS = 32


@functools.cache
def native_dense_available() -> bool:
    """True when the native kernel is built and registered with JAX (once per process)."""
    try:
        from codegen_core import _core  # noqa: PLC0415
    except ImportError:  # pragma: no cover - a source tree without the built extension
        return False
    for name, capsule in _core.xla_ffi_targets().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    return True


def _ffi_dense(x: jax.Array, w: jax.Array) -> jax.Array:
    if not native_dense_available():
        raise RuntimeError("codegen_core._core is not built: the native dense kernel is missing")
    out = jax.ShapeDtypeStruct((*x.shape[:-1], w.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(_TARGET, out, vmap_method="sequential")(x.astype(jnp.float32), w)


@jax.custom_vjp
def native_dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """x (..., k) any float dtype, w (n, k) fp32 or bf16 -> fp32 (..., n) on the CPU kernel."""
    return _ffi_dense(x, w)


def _native_fwd(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _ffi_dense(x, w), (x, w)


def _native_bwd(res: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = res
    dx = jnp.einsum("...n,nk->...k", dy, w.astype(jnp.float32))  # (..., k)
    dw = jnp.einsum("...n,...k->nk", dy, x.astype(jnp.float32))  # (n, k)
    return dx.astype(x.dtype), dw.astype(w.dtype)


native_dense.defvjp(_native_fwd, _native_bwd)


def use_native(x: jax.Array, w: jax.Array, impl: DenseImpl = "auto") -> bool:
    """Whether :func:`dense` takes the native kernel for these operands."""
    if impl == "xla":
        return False
    ok = (
        w.ndim == 2
        and w.dtype in (jnp.float32, jnp.bfloat16)
        and jnp.issubdtype(x.dtype, jnp.floating)
        and jax.default_backend() == "cpu"
        and native_dense_available()
    )
    if impl == "native":
        if not ok:
            raise ValueError(
                f"dense impl='native' needs the CPU backend, a 2-D float32/bfloat16 weight and "
                f"the built extension; got x {x.dtype}{list(x.shape)}, w {w.dtype}"
                f"{list(w.shape)} on {jax.default_backend()}"
            )
        return True
    return ok and math.prod(x.shape[:-1]) <= NATIVE_MAX_ROWS


def dense(x: jax.Array, w: jax.Array, impl: DenseImpl = "auto") -> jax.Array:
    """``x @ w.T``: x (..., k), w (n, k) (torch Linear layout) -> (..., n), fp32 accumulation.

    The result is fp32 for the native kernel and for bf16 weights on CPU (XLA CPU's bf16 dots
    are about 10x slower, so the weight is widened; inside a decode loop the widening is loop
    invariant), otherwise in the weight dtype.
    """
    if x.shape[-1] != w.shape[-1] or w.ndim != 2:
        raise ValueError(f"dense: x {list(x.shape)} and w {list(w.shape)} do not contract")
    if use_native(x, w, impl):
        return native_dense(x, w)
    if w.dtype == jnp.bfloat16 and jax.default_backend() == "cpu":
        return jnp.einsum("...k,nk->...n", x.astype(jnp.float32), w.astype(jnp.float32))
    y = jnp.einsum("...k,nk->...n", x.astype(w.dtype), w, preferred_element_type=jnp.float32)
    return y.astype(w.dtype)
