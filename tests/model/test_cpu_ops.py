"""The native CPU sum-of-squares, transpose and row log-sum-exp kernels (model/cpu_ops.py via
XLA FFI) against numpy, under jit and grad, and the XLA fallback with several devices."""

from __future__ import annotations

import textwrap

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from tests.train.procs import run_python

from codegen_core import _core
from codegen_core.model import cpu_ops
from codegen_core.train import optim

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the native kernels are the CPU path"
)

# empty, one element, around the kernel's 32-lane step and 65536-element chunk, odd ranks
SUM_SHAPES = [(0,), (3, 0, 2), (1,), (), (7,), (31,), (33,), (5, 13), (65535,), (65537,),
              (3, 65536 + 17), (2, 3, 4, 5), (1000, 37)]  # fmt: skip
# 1 element, non-multiple-of-8 and non-multiple-of-64 (the block) sizes, tall and wide
T_SHAPES = [(1, 1), (1, 9), (9, 1), (0, 5), (5, 0), (8, 8), (7, 13), (64, 64), (65, 63),
            (130, 77), (3, 1000), (1000, 3), (512, 520)]  # fmt: skip


def _sum_squares_f64(x: np.ndarray) -> float:
    return float(np.sum(np.square(x.astype(np.float64))))


def test_native_targets_are_registered() -> None:
    assert cpu_ops.native_ops_available()
    assert cpu_ops.use_native_ops()  # the pytest process: CPU, one device
    names = {"codegen_core_sum_squares", "codegen_core_transpose", "codegen_core_row_logsumexp"}
    assert names <= set(_core.xla_ffi_targets())
    assert isinstance(_core.reduce_uses_avx2(), bool)


@pytest.mark.parametrize("shape", SUM_SHAPES)
def test_sum_squares_matches_numpy(shape: tuple[int, ...]) -> None:
    x = np.random.default_rng(sum(shape) + len(shape)).normal(size=shape).astype(np.float32)
    got = jax.jit(cpu_ops.sum_squares)(jnp.asarray(x))
    assert got.dtype == jnp.float32 and got.shape == ()
    np.testing.assert_allclose(float(got), _sum_squares_f64(x), rtol=1e-6)
    # the native kernel itself, not only the dispatching function
    native = jax.jit(cpu_ops._native_sum_squares)(jnp.asarray(x))
    np.testing.assert_allclose(float(native), _sum_squares_f64(x), rtol=1e-6)


def test_sum_squares_of_a_large_leaf() -> None:
    # a (20, 4096, 1024)-like leaf, scaled down to stay quick: 4M elements, 64 chunks
    x = np.random.default_rng(3).normal(size=(4, 1024, 1024)).astype(np.float32)
    got = float(jax.jit(cpu_ops.sum_squares)(jnp.asarray(x)))
    np.testing.assert_allclose(got, _sum_squares_f64(x), rtol=1e-6)
    # deterministic: the same bits on every call whatever thread ran which chunk
    f = jax.jit(cpu_ops.sum_squares)
    assert all(float(f(jnp.asarray(x))) == got for _ in range(3))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_sum_squares_casts_other_floats(dtype: jnp.dtype) -> None:
    x = np.random.default_rng(1).normal(size=(37, 11)).astype(np.float32)
    xd = jnp.asarray(x, dtype)
    got = jax.jit(cpu_ops.sum_squares)(xd)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), _sum_squares_f64(np.asarray(xd, np.float32)), rtol=1e-6)


def test_sum_squares_rejects_ints() -> None:
    with pytest.raises(TypeError, match="float array"):
        cpu_ops.sum_squares(jnp.arange(4))


def test_sum_squares_gradients_and_vmap() -> None:
    x = jnp.asarray(np.random.default_rng(2).normal(size=(6, 5)), jnp.float32)
    g = jax.jit(jax.grad(cpu_ops.sum_squares))(x)
    np.testing.assert_allclose(np.asarray(g), 2 * np.asarray(x), rtol=1e-6)
    # forward mode too (the custom JVP), and second order
    _, tangent = jax.jvp(cpu_ops.sum_squares, (x,), (jnp.ones_like(x),))
    np.testing.assert_allclose(float(tangent), 2 * float(jnp.sum(x)), rtol=1e-5)
    hvp = jax.grad(lambda y: jnp.sum(jax.grad(cpu_ops.sum_squares)(y)))(x)
    np.testing.assert_allclose(np.asarray(hvp), np.full(x.shape, 2.0), rtol=1e-6)
    batched = jax.vmap(cpu_ops.sum_squares)(x)
    np.testing.assert_allclose(np.asarray(batched), np.sum(np.asarray(x) ** 2, 1), rtol=1e-6)


@pytest.mark.parametrize("shape", T_SHAPES)
def test_transpose_is_exact(shape: tuple[int, int]) -> None:
    x = np.random.default_rng(shape[0] * 7 + shape[1]).normal(size=shape).astype(np.float32)
    got = jax.jit(cpu_ops.transpose2d)(jnp.asarray(x))
    assert got.shape == shape[::-1] and got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), x.T)
    np.testing.assert_array_equal(np.asarray(cpu_ops._native_transpose(jnp.asarray(x))), x.T)


def test_transpose_other_dtypes_and_bad_rank() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4).astype(ml_dtypes.bfloat16)
    got = cpu_ops.transpose2d(jnp.asarray(x))  # not fp32: XLA's transpose
    assert got.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(got), x.T)
    with pytest.raises(ValueError, match="2-D"):
        cpu_ops.transpose2d(jnp.zeros((2, 3, 4)))
    # the kernel itself checks what reaches it, without crashing the process
    bad = jax.ShapeDtypeStruct((3, 3), jnp.float32)
    with pytest.raises(Exception, match="is not x"):
        jax.block_until_ready(
            jax.ffi.ffi_call("codegen_core_transpose", bad)(jnp.zeros((2, 3), jnp.float32))
        )
    with pytest.raises(Exception, match="x must be 2-D"):
        jax.block_until_ready(
            jax.ffi.ffi_call("codegen_core_transpose", bad)(jnp.zeros((3, 3, 1), jnp.float32))
        )


def test_transpose_gradient_and_vmap() -> None:
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(13, 70)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(70, 13)), jnp.float32)

    def loss(f):
        return lambda x: jnp.sum(jnp.sin(f(x)) * w)

    got = jax.jit(jax.grad(loss(cpu_ops.transpose2d)))(x)
    want = jax.grad(loss(jnp.transpose))(x)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    xs = jnp.stack([x, 2 * x])
    np.testing.assert_array_equal(
        np.asarray(jax.vmap(cpu_ops.transpose2d)(xs)), np.swapaxes(np.asarray(xs), 1, 2)
    )


def test_global_norm_takes_the_kernel() -> None:
    rng = np.random.default_rng(5)
    tree = {"a": rng.normal(size=(3, 70000)), "b": [rng.normal(size=(5,)), np.zeros((0, 2))]}
    tree = jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), tree)
    want = np.sqrt(sum(_sum_squares_f64(np.asarray(v)) for v in jax.tree.leaves(tree)))
    np.testing.assert_allclose(float(jax.jit(optim.global_norm)(tree)), want, rtol=1e-6)
    hlo = jax.jit(optim.global_norm).lower(tree).as_text()
    assert "codegen_core_sum_squares" in hlo


def test_several_devices_stay_on_xla() -> None:
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from codegen_core.model import cpu_ops
        from codegen_core.train import optim
        assert jax.device_count() == 8, jax.device_count()
        assert cpu_ops.native_ops_available() and not cpu_ops.use_native_ops()
        x = np.random.default_rng(0).normal(size=(40, 77)).astype(np.float32)
        f = jax.jit(cpu_ops.sum_squares)
        assert "codegen_core" not in f.lower(jnp.asarray(x)).as_text()
        np.testing.assert_allclose(float(f(jnp.asarray(x))),
                                   np.sum(x.astype(np.float64) ** 2), rtol=1e-6)
        t = jax.jit(cpu_ops.transpose2d)
        assert "codegen_core" not in t.lower(jnp.asarray(x)).as_text()
        np.testing.assert_array_equal(np.asarray(t(jnp.asarray(x))), x.T)
        g = jax.grad(lambda v: jnp.sum(cpu_ops.transpose2d(v) ** 2))(jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(g), 2 * x, rtol=1e-6)
        # sharded over the 8 devices (auto axes, as the training step's mesh): XLA partitions
        mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
        xs = jax.device_put(jnp.asarray(x), jax.NamedSharding(mesh, jax.P("d", None)))
        norm = jax.jit(optim.global_norm)({"w": xs})
        np.testing.assert_allclose(float(norm), np.sqrt(np.sum(x.astype(np.float64) ** 2)),
                                   rtol=1e-6)
        b = np.random.default_rng(1).normal(size=(77,)).astype(np.float32)
        lse = jax.jit(cpu_ops.row_logsumexp)
        assert "codegen_core" not in lse.lower(jnp.asarray(x), jnp.asarray(b)).as_text()
        z = x.astype(np.float64) + b
        np.testing.assert_allclose(np.asarray(lse(jnp.asarray(x), jnp.asarray(b))),
                                   np.log(np.sum(np.exp(z), axis=-1)), rtol=1e-6)
        print("ok")
        """
    )
    proc = run_python(["-c", script], devices=8, timeout=180)
    assert proc.stdout.strip().endswith("ok")


def _lse_f64(logits: np.ndarray, bias: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) + bias.astype(np.float64)
    with np.errstate(divide="ignore"):  # log(0) of a row of all -inf (where() drops it)
        m = np.max(z, axis=-1, initial=-np.inf)
        finite = np.isfinite(m)
        m0 = np.where(finite, m, 0.0)
        return np.where(finite, m + np.log(np.sum(np.exp(z - m0[:, None]), axis=-1)), m)


# the step's (7, 51200)-ish, V = 1, V not a multiple of 8 or 32, N = 0, V = 0
LSE_SHAPES = [(7, 51200), (3, 1), (5, 7), (4, 33), (2, 1000), (0, 9), (3, 0), (1, 8)]


@pytest.mark.parametrize("shape", LSE_SHAPES)
def test_row_logsumexp_matches_numpy(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(shape[0] * 31 + shape[1])
    logits = (4.0 * rng.standard_normal(shape)).astype(np.float32)
    bias = rng.standard_normal(shape[1]).astype(np.float32)
    f = jax.jit(cpu_ops.row_logsumexp)
    assert "codegen_core_row_logsumexp" in f.lower(logits, bias).as_text()
    got = f(jnp.asarray(logits), jnp.asarray(bias))
    assert got.shape == (shape[0],) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), _lse_f64(logits, bias), rtol=1e-6)
    # deterministic: the same bits on every call
    assert all(np.array_equal(np.asarray(f(logits, bias)), np.asarray(got)) for _ in range(2))


def test_row_logsumexp_large_small_and_special_values() -> None:
    rng = np.random.default_rng(7)
    v = 4099
    logits = rng.standard_normal((9, v)).astype(np.float32)
    bias = rng.standard_normal(v).astype(np.float32)
    logits[0] *= 300.0  # most terms flush: the max dominates
    logits[1] *= 1e-6  # every term ~ exp(bias)
    logits[2] += 3000.0
    logits[3, ::3] = -np.inf
    logits[4] = -np.inf  # all -inf -> -inf
    logits[5, 4098] = np.nan  # NaN in the masked tail -> NaN
    logits[6, 10] = np.inf  # +inf -> +inf
    logits[7, 10], logits[7, 11] = np.inf, np.nan  # NaN wins
    logits[8, 5] = np.inf  # +inf logit, -inf bias: NaN, as jax.nn.logsumexp
    bias_8 = bias.copy()
    got = np.asarray(jax.jit(cpu_ops.row_logsumexp)(logits, bias))
    want = np.asarray(jax.nn.logsumexp(jnp.asarray(logits) + jnp.asarray(bias), axis=-1))
    np.testing.assert_allclose(got[:4], _lse_f64(logits[:4], bias), rtol=1e-6)
    assert got[4] == -np.inf and np.isnan(got[5]) and got[6] == np.inf and np.isnan(got[7])
    np.testing.assert_array_equal(got[4:8], want[4:8])  # the same non-finite results
    bias_8[5] = -np.inf
    got_8 = np.asarray(cpu_ops.row_logsumexp(jnp.asarray(logits[8:]), jnp.asarray(bias_8)))
    assert np.isnan(got_8[0])


def test_row_logsumexp_gradients() -> None:
    rng = np.random.default_rng(8)
    logits = jnp.asarray(3.0 * rng.standard_normal((6, 203)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal(203), jnp.float32)
    w = jnp.asarray(rng.standard_normal(6), jnp.float32)

    def loss(f):
        return lambda x, b: jnp.sum(jnp.sin(f(x, b)) * w)

    plain = loss(lambda x, b: jax.nn.logsumexp(x + b, axis=-1))
    f = jax.jit(jax.value_and_grad(loss(cpu_ops.row_logsumexp), argnums=(0, 1)))
    assert "codegen_core_row_logsumexp" in f.lower(logits, bias).as_text()
    val, (g_x, g_b) = f(logits, bias)
    want_val, (want_x, want_b) = jax.value_and_grad(plain, argnums=(0, 1))(logits, bias)
    np.testing.assert_allclose(float(val), float(want_val), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_x), np.asarray(want_x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_b), np.asarray(want_b), rtol=1e-5, atol=1e-6)


def test_row_logsumexp_other_dtypes_bad_shapes_and_vmap() -> None:
    rng = np.random.default_rng(9)
    logits = rng.standard_normal((4, 50)).astype(np.float32)
    bias = rng.standard_normal(50).astype(np.float32)
    # bf16 logits or bias: jax.nn.logsumexp, no custom call
    for x, b in [(logits.astype(ml_dtypes.bfloat16), bias), (logits, bias.astype(jnp.bfloat16))]:
        f = jax.jit(cpu_ops.row_logsumexp)
        assert "codegen_core" not in f.lower(x, b).as_text()
        want = jax.nn.logsumexp(jnp.asarray(x) + jnp.asarray(b), axis=-1)
        np.testing.assert_array_equal(np.asarray(f(x, b)), np.asarray(want))
    with pytest.raises(ValueError, match=r"logits must be \(N, V\).*\[4, 50\].*\[49\]"):
        cpu_ops.row_logsumexp(jnp.asarray(logits), jnp.asarray(bias[:49]))
    with pytest.raises(ValueError, match="logits must be"):
        cpu_ops.row_logsumexp(jnp.asarray(logits[None]), jnp.asarray(bias))
    # the kernel itself checks what reaches it, naming the operand
    call = jax.ffi.ffi_call("codegen_core_row_logsumexp", jax.ShapeDtypeStruct((4,), jnp.float32))
    with pytest.raises(Exception, match="bias must be"):
        jax.block_until_ready(call(jnp.asarray(logits), jnp.asarray(bias[:49])))
    with pytest.raises(Exception, match="logits must be 2-D"):
        jax.block_until_ready(call(jnp.asarray(logits[None]), jnp.asarray(bias)))
    bad = jax.ffi.ffi_call("codegen_core_row_logsumexp", jax.ShapeDtypeStruct((5,), jnp.float32))
    with pytest.raises(Exception, match="result must be"):
        jax.block_until_ready(bad(jnp.asarray(logits), jnp.asarray(bias)))
    xs = jnp.stack([jnp.asarray(logits), 2 * jnp.asarray(logits)])
    got = jax.vmap(cpu_ops.row_logsumexp, in_axes=(0, None))(xs, jnp.asarray(bias))
    np.testing.assert_allclose(
        np.asarray(got), np.stack([_lse_f64(np.asarray(x), bias) for x in xs]), rtol=1e-6
    )
