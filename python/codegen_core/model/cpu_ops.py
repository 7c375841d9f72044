"""Memory-bound training ops on CPU: native kernels (csrc/linalg/reduce.cc) via XLA FFI.

Three ops of the 350M training step run far below the memory bandwidth on XLA:CPU (the
2-core dev machine reads 25-30 GB/s with 2 threads):

* The gradient global norm. Under the step's compiler options
  (``train.step.compiler_options``), XLA turns each leaf's ``dot_general(x, x)`` (and every
  other reduction form tried: ``sum(x * x)``, row or column sums first) into a materialised
  ``x * x`` plus a tree of windowed reductions: in the training step about 180 ms of wall
  per step over the ~356M gradient elements. Standalone, for a (20, 4096, 1024) fp32 leaf:
  117-230 ms with those options (1.5-3 GB/s; 12.8 ms without them), where
  :func:`sum_squares` takes 11-17 ms (20-30 GB/s): it reads each leaf once on every core,
  accumulating in double over fixed chunks added in a fixed order (the result does not depend
  on the thread split).
* The 2-D transpose of the (512, 51200) LM-head logits gradient for the weight-gradient
  product: XLA transposes it on one thread, 130 ms in the step, 38-70 ms standalone;
  :func:`transpose2d` runs a cache-blocked transpose (8x8 in-register tiles) on every core
  in 14-17 ms (10-11 ms into memory already mapped: the FFI handler asks for huge pages on
  the fresh result, whose 4 KiB page faults otherwise cost 30-50 ms).
* The LM head's ``logsumexp(logits + bias, axis=-1)`` over the (512, 51200) fp32 logits:
  XLA:CPU rewrites the 51200-long reductions into windowed tree reductions that cannot fuse
  their input, so it first writes ``logits + bias`` out as a fresh (N, V) array (page faults
  and single-threaded writes): 54-57 ms standalone at load 1.5 (91-99 ms at load 2.5-3),
  ~115 ms in the step. :func:`row_logsumexp` reads the logits and the bias once, two passes
  per row in L2 (the max, then a vectorised expf summed in double, prefetching the next row
  meanwhile): 9.8-10.5 ms at load 1.5, 5.3-5.7x faster than XLA (one thread in C++: 14.5 ms,
  of which the exp pass is ~10 ms of arithmetic; without the prefetch 18-19 ms).

``python benchmarks/bench_cpu_ops.py`` measures all three against XLA (the numbers above:
medians of 5-7 calls at load 1.5-3). The native path is taken only on the CPU backend with a
single device (:func:`use_native_ops`): a custom call is opaque to the SPMD partitioner, so
on a multi-device mesh these ops stay XLA ops that it can shard. Elsewhere (GPU, TPU, several
devices) the functions are exactly the XLA formulas.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from codegen_core.model.cpu_dense import native_dense_available

_SUM_SQUARES = "codegen_core_sum_squares"
_TRANSPOSE = "codegen_core_transpose"
_ROW_LOGSUMEXP = "codegen_core_row_logsumexp"


def native_ops_available() -> bool:
    """True when the native kernels are built and registered with JAX (once per process)."""
    return native_dense_available()  # registers every target of _core.xla_ffi_targets()


def use_native_ops() -> bool:
    """Whether :func:`sum_squares` and :func:`transpose2d` take the native kernels: the CPU
    backend, one device in the process group (custom calls are not partitioned) and the
    built extension."""
    return jax.default_backend() == "cpu" and jax.device_count() == 1 and native_ops_available()


def _contract_all(x: jax.Array, y: jax.Array) -> jax.Array:
    # a full contraction of two same-shape arrays, fp32 (no reshape, so a sharded leaf needs
    # no gather); XLA:CPU's dot is its fastest reduction form (see the module docstring)
    dims = tuple(range(x.ndim))
    out = jax.lax.dot_general(x, y, ((dims, dims), ((), ())), preferred_element_type=jnp.float32)
    return out.astype(jnp.float32)


def _xla_sum_squares(x: jax.Array) -> jax.Array:
    return _contract_all(x, x)


def _native_sum_squares(x: jax.Array) -> jax.Array:
    out = jax.ShapeDtypeStruct((), jnp.float32)
    return jax.ffi.ffi_call(_SUM_SQUARES, out, vmap_method="sequential")(x.astype(jnp.float32))


@jax.custom_jvp
def sum_squares(x: jax.Array) -> jax.Array:
    """``sum(x ** 2)`` over every element of a float array, as an fp32 scalar.

    On CPU with one device: the native kernel (fp32 input, double accumulation,
    deterministic); elsewhere ``lax.dot_general(x, x)`` over all dims with fp32
    accumulation. Differentiable: d/dx = 2 x.
    """
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"sum_squares: x must be a float array, got {x.dtype}")
    if use_native_ops():
        return _native_sum_squares(x)
    return _xla_sum_squares(x)


@sum_squares.defjvp
def _sum_squares_jvp(
    primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    (x,), (t,) = primals, tangents
    return sum_squares(x), 2.0 * _contract_all(x, t)


def _native_transpose(x: jax.Array) -> jax.Array:
    out = jax.ShapeDtypeStruct((x.shape[1], x.shape[0]), jnp.float32)
    return jax.ffi.ffi_call(_TRANSPOSE, out, vmap_method="sequential")(x)


def _transpose(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.float32 and use_native_ops():
        return _native_transpose(x)
    return x.T


@jax.custom_vjp
def _transpose2d(x: jax.Array) -> jax.Array:
    return _transpose(x)


def _transpose_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return _transpose(x), None


def _transpose_bwd(_: None, g: jax.Array) -> tuple[jax.Array]:
    return (transpose2d(g),)


_transpose2d.defvjp(_transpose_fwd, _transpose_bwd)


def transpose2d(x: jax.Array) -> jax.Array:
    """``x.T`` of a 2-D array (r, c) -> (c, r), exact.

    fp32 on CPU with one device: the native blocked transpose on the intra-op thread pool;
    other dtypes and platforms: ``x.T``. Differentiable (reverse mode): the cotangent is
    transposed back through this function.
    """
    if x.ndim != 2:
        raise ValueError(f"transpose2d: x must be 2-D, got shape {list(x.shape)}")
    return _transpose2d(x)


def _native_row_logsumexp(logits: jax.Array, bias: jax.Array) -> jax.Array:
    out = jax.ShapeDtypeStruct((logits.shape[0],), jnp.float32)
    return jax.ffi.ffi_call(_ROW_LOGSUMEXP, out, vmap_method="sequential")(logits, bias)


def _xla_row_logsumexp(logits: jax.Array, bias: jax.Array) -> jax.Array:
    return jax.nn.logsumexp(logits + bias, axis=-1)


@jax.custom_vjp
def _row_logsumexp(logits: jax.Array, bias: jax.Array) -> jax.Array:
    return _native_row_logsumexp(logits, bias)


def _row_logsumexp_fwd(
    logits: jax.Array, bias: jax.Array
) -> tuple[jax.Array, tuple[jax.Array, jax.Array, jax.Array]]:
    lse = _native_row_logsumexp(logits, bias)  # (N,)
    return lse, (logits, bias, lse)


def _row_logsumexp_bwd(
    res: tuple[jax.Array, jax.Array, jax.Array], g: jax.Array
) -> tuple[jax.Array, jax.Array]:
    logits, bias, lse = res
    d = jnp.exp(logits + bias - lse[:, None]) * g[:, None]  # (N, V): softmax * g
    return d, jnp.sum(d, axis=0)  # (N, V), (V,)


_row_logsumexp.defvjp(_row_logsumexp_fwd, _row_logsumexp_bwd)


def row_logsumexp(logits: jax.Array, bias: jax.Array) -> jax.Array:
    """``jax.nn.logsumexp(logits + bias, axis=-1)``: logits (N, V), bias (V,) -> (N,).

    fp32 logits and bias on CPU with one device: the native kernel, which reads each row and
    the bias once (two passes per row in L2: the max, then exp summed in double; expf within
    1.01 ulp on [-87, 0]) with rows split over the intra-op thread pool, one row per thread
    (deterministic); other dtypes and platforms: the formula above. Same NaN / inf results
    as ``jax.nn.logsumexp``; within 1.5e-7 relative of float64 arithmetic on the tests' data
    (asserted: 3e-7 in the C++ tests, 1e-6 in the Python ones).
    It exists because XLA:CPU materialises ``logits + bias`` before its windowed reductions:
    (512, 51200) fp32 takes 54-57 ms on XLA and 10 ms here at load 1.5 (module docstring).
    Differentiable (reverse mode): d/d logits = ``exp(logits + bias - lse) * g``, d/d bias
    its column sum.
    """
    if logits.ndim != 2 or bias.ndim != 1 or bias.shape[0] != logits.shape[1]:
        raise ValueError(
            f"row_logsumexp: logits must be (N, V) and bias (V,), got logits "
            f"{list(logits.shape)} and bias {list(bias.shape)}"
        )
    if logits.dtype == jnp.float32 and bias.dtype == jnp.float32 and use_native_ops():
        return _row_logsumexp(logits, bias)
    return _xla_row_logsumexp(logits, bias)
