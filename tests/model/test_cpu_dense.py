"""The native CPU dense kernel (csrc/linalg/dense.cc via XLA FFI) against plain references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from codegen_core import _core
from codegen_core.model import forward, get_preset, init
from codegen_core.model.cpu_dense import (
    NATIVE_MAX_ROWS,
    _ffi_dense,
    dense,
    native_dense,
    native_dense_available,
    use_native,
)

pytestmark = pytest.mark.skipif(
    jax.default_backend() != "cpu", reason="the native dense kernel is the CPU path"
)


def _reference(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.einsum("...k,nk->...n", x.astype(np.float64), w.astype(np.float64))


# (leading dims of x, k, n): row tiles of 4 and 1, 8-row W blocks and single rows, k tails,
# k < 8, k across several 256-column blocks
SHAPES = [((1,), 64, 32), ((3,), 7, 9), ((2, 5), 129, 17), ((8,), 1000, 37), ((9,), 24, 15),
          ((1, 1), 520, 8), ((16,), 8, 1), ((4,), 3, 11)]  # fmt: skip


@pytest.mark.parametrize(("lead", "k", "n"), SHAPES)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_native_dense_matches_reference(lead: tuple[int, ...], k: int, n: int, dtype: str) -> None:
    rng = np.random.default_rng(k * 31 + n)
    x = rng.normal(size=(*lead, k)).astype(np.float32)
    w = rng.normal(size=(n, k)).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32)
    got = jax.jit(native_dense)(jnp.asarray(x), jnp.asarray(w))
    assert got.dtype == jnp.float32 and got.shape == (*lead, n)
    ref = _reference(x, w.astype(np.float32))
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_empty_contraction_gives_zeros() -> None:
    got = jax.jit(native_dense)(jnp.ones((2, 3, 0)), jnp.ones((5, 0), jnp.bfloat16))
    np.testing.assert_array_equal(np.asarray(got), np.zeros((2, 3, 5), np.float32))


def test_native_dense_has_its_avx2_path_or_portable_loops() -> None:
    assert native_dense_available()
    assert isinstance(_core.dense_uses_avx2(), bool)
    assert "codegen_core_dense" in _core.xla_ffi_targets()


def test_gradients_and_vmap_match_xla() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 3, 40)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(24, 40)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(2, 3, 24)), jnp.float32)

    def loss(impl: str):
        return lambda x, w: jnp.sum(dense(x, w, impl) ** 2 * c)  # type: ignore[arg-type]

    gn = jax.grad(loss("native"), argnums=(0, 1))(x, w)
    gx = jax.grad(loss("xla"), argnums=(0, 1))(x, w)
    for a, b in zip(gn, gx, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    ws = jnp.stack([w, 2 * w])  # vmap over weights too: one kernel call per member
    vm = jax.vmap(native_dense, in_axes=(None, 0))(x, ws)
    np.testing.assert_allclose(np.asarray(vm[1]), 2 * np.asarray(vm[0]), rtol=1e-5, atol=1e-4)


def test_dispatch_rule() -> None:
    w = jnp.zeros((16, 8), jnp.float32)
    assert use_native(jnp.zeros((NATIVE_MAX_ROWS, 8)), w)
    assert use_native(jnp.zeros((2, NATIVE_MAX_ROWS // 2, 8)), w)
    assert not use_native(jnp.zeros((NATIVE_MAX_ROWS + 1, 8)), w)  # prefill: XLA's GEMM
    assert use_native(jnp.zeros((NATIVE_MAX_ROWS + 1, 8)), w, "native")
    assert not use_native(jnp.zeros((1, 8)), w, "xla")
    assert not use_native(jnp.zeros((1, 8)), w.astype(jnp.float16))


def test_bad_operands_raise_clear_errors() -> None:
    x = jnp.zeros((2, 8), jnp.float32)
    with pytest.raises(ValueError, match="do not contract"):
        dense(x, jnp.zeros((4, 7), jnp.float32))
    with pytest.raises(ValueError, match="do not contract"):
        dense(x, jnp.zeros((2, 4, 8), jnp.float32))
    with pytest.raises(ValueError, match="float16"):
        dense(x, jnp.zeros((4, 8), jnp.float16), "native")
    # the kernel itself checks what reaches it, without crashing the process
    with pytest.raises(Exception, match="disagree on the contracted size"):
        jax.block_until_ready(_ffi_dense(x, jnp.zeros((4, 6), jnp.float32)))


@pytest.mark.parametrize("name", ["tiny-codegen", "tiny-llama"])
def test_forward_native_equals_xla(name: str) -> None:
    config = get_preset(name)
    params = init(config, jax.random.key(1))
    ids = jnp.asarray(np.random.default_rng(2).integers(0, config.vocab_size, (3, 20)))
    f = jax.jit(forward, static_argnames=("config", "dense_impl"))
    native, _ = f(params, ids, config, dense_impl="native")
    xla, _ = f(params, ids, config, dense_impl="xla")
    assert np.abs(np.asarray(xla)).max() > 0.1
    np.testing.assert_allclose(np.asarray(native), np.asarray(xla), rtol=0, atol=1e-5)
