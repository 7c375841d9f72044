"""Rotary embedding kernel vs the jnp reference (forward and gradient), and the reference vs
transformers' CodeGen (GPT-J interleaved) and LLaMA (half-split) implementations."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from codegen_core.pallas_kernels import apply_rotary, pallas_available, rotary_reference
from jax.experimental.pallas import tpu as pltpu

# (batch, seq, heads, head_dim, rotary_dim, interleaved, dtype)
FAST_CASES = [
    (2, 37, 4, 80, 64, True, "float32"),  # CodeGen-2B head, seq not a multiple of 8
    (1, 64, 2, 256, 64, True, "bfloat16"),  # CodeGen-6B/16B head
    (2, 24, 4, 128, 128, False, "bfloat16"),  # CodeGen2.5 / LLaMA: full half-split
    (1, 16, 2, 64, 32, False, "float32"),  # partial half-split (GPT-NeoX rotary_pct)
]
SLOW_CASES = [
    (2, s, h, d, r, i, t)
    for s, (h, d, r), i, t in itertools.product(
        (1, 100, 512),
        ((16, 64, 32), (32, 80, 64), (16, 256, 64), (16, 128, 128), (4, 80, 80)),
        (True, False),
        ("float32", "bfloat16"),
    )
]


def _inputs(b, s, h, d, dtype, *, seed=0):
    kx, kg, kp = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(kx, (b, s, h, d)).astype(dtype)
    g = jax.random.normal(kg, (b, s, h, d)).astype(dtype)
    # Left-padded batch: positions from the attention mask, as transformers derives them.
    pad = jax.random.randint(kp, (b, 1), 0, max(1, s // 3))
    mask = (jnp.arange(s)[None, :] >= pad).astype(jnp.int32)
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0).astype(jnp.int32)
    return x, g, positions


def _fwd_bwd(fn, x, g):
    def run(x, g):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(g)[0]

    return [np.asarray(a, np.float32) for a in jax.jit(run)(x, g)]


def check_case(case, run_kernel):
    b, s, h, d, rot, interleaved, dtype = case
    x, g, positions = _inputs(b, s, h, d, jnp.dtype(dtype))
    kw = {"rotary_dim": rot, "interleaved": interleaved}
    got = _fwd_bwd(lambda x: run_kernel(x, positions, **kw), x, g)
    ref32 = _fwd_bwd(
        lambda x: rotary_reference(x, positions, **kw), x.astype(jnp.float32), g.astype(jnp.float32)
    )
    ref_lowp = _fwd_bwd(lambda x: rotary_reference(x, positions, **kw), x, g)
    for name, a, r32, rlp in zip(("y", "dx"), got, ref32, ref_lowp, strict=True):
        err = float(np.max(np.abs(a - r32)))
        budget = 2.0 * float(np.max(np.abs(rlp - r32))) + 1e-5
        assert err <= budget, f"{case} {name}: error {err:.3g} exceeds budget {budget:.3g}"


class TestRotary:
    """Compiled kernel (TPU); the Interpret subclass reruns it in interpret mode on CPU."""

    INTERPRET = False

    @pytest.fixture(autouse=True)
    def _need_platform(self):
        if not self.INTERPRET and jax.default_backend() != "tpu":
            pytest.skip("the compiled rotary kernel is TPU-only (XLA elsewhere)")

    def run_kernel(self, x, positions, **kw):
        return apply_rotary(x, positions, interpret=self.INTERPRET, backend="tpu", **kw)

    @pytest.mark.parametrize("case", FAST_CASES, ids=str)
    def test_matches_reference(self, case):
        check_case(case, self.run_kernel)

    @pytest.mark.slow
    @pytest.mark.parametrize("case", SLOW_CASES, ids=str)
    def test_matches_reference_sweep(self, case):
        check_case(case, self.run_kernel)


class TestRotaryInterpret(TestRotary):
    INTERPRET = True


def test_tpu_interpret_mode():
    with pltpu.force_tpu_interpret_mode():
        check_case(
            (1, 40, 2, 80, 64, True, "float32"),
            lambda x, p, **kw: apply_rotary(x, p, backend="tpu", **kw),
        )


def test_lowers_for_tpu():
    x = jnp.zeros((2, 300, 16, 80), jnp.bfloat16)
    pos = jnp.zeros((2, 300), jnp.int32)

    def loss(x):
        y = apply_rotary(x, pos, rotary_dim=64, interleaved=True, backend="tpu")
        return y.astype(jnp.float32).sum()

    for fn in (loss, jax.grad(loss)):
        text = jax.jit(fn).trace(x).lower(lowering_platforms=("tpu",)).as_text()
        assert "tpu_custom_call" in text


def test_auto_dispatch_off_tpu_is_the_reference():
    if pallas_available() and jax.default_backend() == "tpu":
        pytest.skip("checks the non-TPU dispatch")
    x, _, pos = _inputs(2, 10, 2, 64, jnp.float32)
    got = jax.jit(lambda x: apply_rotary(x, pos, rotary_dim=32, interleaved=True))(x)
    want = jax.jit(lambda x: rotary_reference(x, pos, rotary_dim=32, interleaved=True))(x)
    np.testing.assert_array_equal(got, want)


def test_position_zero_and_pass_through_features_are_identity():
    x, _, _ = _inputs(1, 8, 2, 80, jnp.float32)
    rotate = jax.jit(
        lambda x, pos, interleaved: apply_rotary(
            x, pos, rotary_dim=64, interleaved=interleaved, interpret=True
        ),
        static_argnums=2,
    )
    y = rotate(x, jnp.zeros((1, 8), jnp.int32), True)
    np.testing.assert_array_equal(y, x)  # cos 0 = 1, sin 0 = 0
    y = rotate(x, jnp.arange(8, dtype=jnp.int32)[None], False)
    np.testing.assert_array_equal(y[..., 64:], x[..., 64:])
    assert not np.allclose(y[:, 1:, :, :64], x[:, 1:, :, :64])


def test_reference_matches_transformers_codegen_and_llama():
    torch = pytest.importorskip("torch")
    codegen = pytest.importorskip("transformers.models.codegen.modeling_codegen")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    x, _, pos = _inputs(2, 50, 4, 80, jnp.float32, seed=1)
    xt, pt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(pos)).long()

    # CodeGen: sin/cos table indexed by position, GPT-J pairs on the first rotary_dim features.
    rot = 64
    table = codegen.create_sinusoidal_positions(2048, rot)[pt]  # [B, S, rot]
    sin, cos = torch.split(table, rot // 2, dim=-1)
    want = torch.cat([codegen.apply_rotary_pos_emb(xt[..., :rot], sin, cos), xt[..., rot:]], -1)
    got = jax.jit(lambda x: rotary_reference(x, pos, rotary_dim=rot, interleaved=True))(x)
    # fp32 sin/cos of angles up to ~50 rad differ between torch and XLA CPU (measured up to
    # 3e-6 here and 7.9e-6 in the LLaMA case below); a wrong pairing or frequency is O(1) off
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=0, atol=2e-5)

    # LLaMA: inv_freq over the full head, rotate_half; heads on axis 2 (unsqueeze_dim=2).
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, 80, 2, dtype=torch.int64).float() / 80))
    freqs = pt[..., None].float() * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    want, _ = llama.apply_rotary_pos_emb(xt, xt, emb.cos(), emb.sin(), unsqueeze_dim=2)
    got = jax.jit(lambda x: rotary_reference(x, pos, rotary_dim=80, interleaved=False))(x)
    np.testing.assert_allclose(np.asarray(got), want.numpy(), rtol=0, atol=2e-5)


@pytest.mark.parametrize(
    ("x_shape", "pos_shape", "pos_dtype", "rotary_dim", "message"),
    [
        ((2, 8, 64), (2, 8), jnp.int32, 32, "x must be"),
        ((2, 8, 2, 64), (2, 7), jnp.int32, 32, "positions must be"),
        ((2, 8, 2, 64), (2, 8), jnp.float32, 32, "positions must be integers"),
        ((2, 8, 2, 64), (2, 8), jnp.int32, 33, "rotary_dim must be even"),
        ((2, 8, 2, 64), (2, 8), jnp.int32, 128, "rotary_dim must be even"),
    ],
)
def test_bad_input_raises_clear_error(x_shape, pos_shape, pos_dtype, rotary_dim, message):
    x = jnp.zeros(x_shape)
    pos = jnp.zeros(pos_shape, pos_dtype)
    with pytest.raises(ValueError, match=message):
        apply_rotary(x, pos, rotary_dim=rotary_dim, interleaved=True, interpret=True)
