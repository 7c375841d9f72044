"""The MLP activation with a written-out gradient against jax.nn.gelu and its autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from codegen_core.model import transformer


def test_gelu_tanh_value_and_gradient_are_jax_nn_gelus() -> None:
    rng = np.random.default_rng(0)
    # the range that matters (pre-activations) plus the tails where tanh saturates
    x = jnp.asarray(np.concatenate([rng.standard_normal(4000) * 3, [-30.0, -8.0, 0.0, 8.0, 30.0]]),
                    jnp.float32)  # fmt: skip
    g = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    ref = lambda v: jax.nn.gelu(v, approximate=True)
    np.testing.assert_array_equal(transformer.gelu_tanh(x), ref(x))
    got = jax.vjp(transformer.gelu_tanh, x)[1](g)[0]
    want = jax.vjp(ref, x)[1](g)[0]
    # atol: in the negative tail 1 + tanh cancels (t -> -1) in either formula: ~3e-6 apart
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-5)
    # bf16 activations: the derivative is computed in fp32 (autodiff's bf16 arithmetic is
    # itself off by several %), so compare with the fp32 gradient at the same bf16 inputs
    xb, gb_in = x.astype(jnp.bfloat16), g.astype(jnp.bfloat16)
    gb = jax.vjp(transformer.gelu_tanh, xb)[1](gb_in)[0]
    assert gb.dtype == jnp.bfloat16
    want_b = jax.vjp(ref, xb.astype(jnp.float32))[1](gb_in.astype(jnp.float32))[0]
    np.testing.assert_allclose(gb.astype(jnp.float32), want_b, rtol=1e-2, atol=1e-2)
