"""Decode attention kernel (interpret mode) vs its jnp reference and vs the model's XLA path;
lowering for TPU; clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from codegen_core.pallas_kernels import decode_attention, decode_attention_reference

from codegen_core.model.attention import xla_attention

# (batch, heads, slots, head_dim, new tokens, offset, block_k, dtype)
CASES = [
    (2, 3, 300, 80, 1, 17, 128, "float32"),  # S not a multiple of 128: padded cache
    (2, 2, 640, 64, 1, 600, 128, "float32"),  # last block partly written; blocks skipped
    (1, 2, 640, 128, 3, 140, 256, "float32"),  # a few new tokens
    (2, 2, 384, 64, 300, 20, 128, "float32"),  # a prompt into a non-empty cache: 2 q blocks
    (2, 2, 256, 80, 1, 200, 512, "bfloat16"),  # one block of the whole cache
]


def _inputs(case):
    b, h, s, d, t, off, _, dtype = case
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(b * h, t, d)), dtype)
    k, v = (jnp.asarray(rng.normal(size=(b * h, s, d)), dtype) for _ in range(2))
    mask = np.ones((b, s), bool)
    mask[-1, : min(5, off)] = False  # a left-padded row
    mask[:, off + t :] = False  # slots not written yet
    return q, k, v, jnp.asarray(mask)


@pytest.mark.parametrize("case", CASES)
def test_interpret_matches_reference_and_model_xla_path(case):
    _, h, _, d, _, off, bk, dtype = case
    q, k, v, mask = _inputs(case)
    fn = jax.jit(lambda *a: decode_attention(*a, block_k=bk, interpret=True))
    got = np.asarray(fn(q, k, v, mask, jnp.int32(off)), np.float32)
    ref = np.asarray(decode_attention_reference(q, k, v, mask, off), np.float32)
    km = jnp.repeat(mask, h, axis=0)
    xla = xla_attention(q, k, v, key_mask=km, q_offset=jnp.int32(off), sm_scale=d**-0.5)
    xla = np.asarray(xla, np.float32)
    # bf16: relative to the bf16 reference (p and the output are rounded to bf16)
    tol = 1e-5 if dtype == "float32" else 2e-2 * np.abs(ref).max()
    np.testing.assert_allclose(got, ref, atol=tol)
    np.testing.assert_allclose(got, xla, atol=tol if dtype == "float32" else 2 * tol)


def test_lowers_for_tpu():
    q, k, v, mask = _inputs((2, 4, 2048, 80, 1, 100, 512, "bfloat16"))
    text = (
        jax.jit(decode_attention)
        .trace(q, k, v, mask, jnp.int32(7))
        .lower(lowering_platforms=("tpu",))
    )
    text = text.as_text()
    assert "tpu_custom_call" in text and "decode_attention" in text


@pytest.mark.parametrize(
    ("shapes", "kwargs", "message"),
    [
        (((4, 1, 8), (4, 16, 8), (4, 16, 8), (2, 16)), {}, None),
        (((4, 8), (4, 16, 8), (4, 16, 8), (2, 16)), {}, "takes q"),
        (((4, 1, 8), (4, 16, 4), (4, 16, 4), (2, 16)), {}, "disagree"),
        (((4, 1, 8), (4, 16, 8), (4, 16, 8), (3, 16)), {}, "key_mask must be"),
        (((4, 1, 8), (4, 16, 8), (4, 16, 8), (2, 16)), {"block_k": 100}, "multiple of 128"),
        (((4, 1, 200), (4, 16, 200), (4, 16, 200), (2, 16)), {}, "head_dim <= 128"),
    ],
)
def test_bad_input_raises_clear_error(shapes, kwargs, message):
    q, k, v = (jnp.zeros(s, jnp.float32) for s in shapes[:3])
    mask = jnp.ones(shapes[3], bool)
    if message is None:
        assert decode_attention(q, k, v, mask, 0, interpret=True, **kwargs).shape == q.shape
        return
    with pytest.raises(ValueError, match=message):
        decode_attention(q, k, v, mask, 0, interpret=True, **kwargs)
