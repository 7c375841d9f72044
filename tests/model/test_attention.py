"""The attention dispatch, its XLA path against a plain reference, and layout helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from codegen_core.model import attention, forward, get_preset, init, pallas_ok, xla_attention
from codegen_core.model import axes as ax
from codegen_core.model.attention import CAUSAL_BLOCK
from codegen_core.model.transformer import param_axes, stack_layers, unstack_layers


def _reference(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    key_mask: np.ndarray,
    q_offset: int,
    scale: float,
) -> np.ndarray:
    """Loops over heads and queries in float64 numpy."""
    b, h, t, d = q.shape
    out = np.zeros((b, h, t, d))
    for bi in range(b):
        for hi in range(h):
            for ti in range(t):
                vis = [s for s in range(k.shape[2]) if s <= q_offset + ti and key_mask[bi, s]]
                if not vis:
                    vis = list(range(k.shape[2]))  # uniform over everything, like the kernel
                    sc = np.zeros(len(vis))
                else:
                    sc = np.array([q[bi, hi, ti] @ k[bi, hi, s] * scale for s in vis])
                p = np.exp(sc - sc.max())
                p /= p.sum()
                out[bi, hi, ti] = p @ v[bi, hi, vis]
    return out


# (300, 300, 0) and (260, 400, 140) take the causal-block path (T >= 2 * CAUSAL_BLOCK).
@pytest.mark.parametrize(
    ("t", "s", "offset"), [(6, 6, 0), (1, 9, 5), (3, 10, 4), (300, 300, 0), (260, 400, 140)]
)
def test_xla_attention_matches_reference(t: int, s: int, offset: int) -> None:
    rng = np.random.default_rng(t * 100 + s)
    q, k, v = (rng.normal(size=(2, 3, n, 8)).astype(np.float32) for n in (t, s, s))
    key_mask = np.ones((2, s), bool)
    key_mask[1, :2] = False
    if t == s:
        key_mask[0, :] = [False] + [True] * (s - 1)  # a query with no visible key
    got = xla_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                        key_mask=jnp.asarray(key_mask), q_offset=offset, sm_scale=0.3)  # fmt: skip
    ref = _reference(q, k, v, key_mask=key_mask, q_offset=offset, scale=0.3)
    if t >= 2 * CAUSAL_BLOCK:  # a query that sees nothing averages only its block's keys
        sees = np.arange(s)[None, :] <= offset + np.arange(t)[:, None]  # (T, S)
        blind = ~(sees[None] & key_mask[:, None, :]).any(-1)  # (B, T)
        got = np.where(blind[:, None, :, None], 0.0, np.asarray(got))
        ref = np.where(blind[:, None, :, None], 0.0, ref)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)


def _autodiff_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, visible: jax.Array, scale: float
) -> jax.Array:
    """Dense masked softmax attention differentiated by JAX itself (the gradient reference)."""
    s = jnp.where(visible, jnp.einsum("bhtd,bhsd->bhts", q, k) * scale, -1e30)
    return jnp.einsum("bhts,bhsd->bhtd", jax.nn.softmax(s, axis=-1), v)


# (6, 0): one dense call; (300, 0): the causal blocks; prefix: the dense path with a mask that
# is not causal. Padding, a query with no visible key and two packed documents in each.
@pytest.mark.parametrize(("t", "prefix_len"), [(6, 0), (300, 0), (300, 3)])
def test_xla_attention_gradients_match_autodiff(t: int, prefix_len: int) -> None:
    rng = np.random.default_rng(t + prefix_len)
    q, k, v, g = (jnp.asarray(rng.normal(size=(2, 3, t, 8)).astype(np.float32))
                  for _ in range(4))  # fmt: skip
    key_mask = np.ones((2, t), bool)
    key_mask[0, 0] = False  # query 0 of row 0 sees nothing
    key_mask[1, -2:] = False
    seg = np.ones((2, t), np.int32)
    seg[:, t // 2 :] = 2
    prefix = np.zeros((2, t), bool)
    prefix[:, t // 2 : t // 2 + prefix_len] = True  # a leading run of document 2
    pos = np.arange(t)
    visible = ((pos[None, :] <= pos[:, None])[None] | prefix[:, None, :]) & key_mask[:, None, :]
    visible &= seg[:, :, None] == seg[:, None, :]  # (B, T, S)
    blind = ~visible.any(-1)  # (B, T): rows whose output is a convention, not compared
    g = jnp.where(jnp.asarray(blind)[:, None, :, None], 0.0, g)

    def ours(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        out = xla_attention(q, k, v, key_mask=jnp.asarray(key_mask), q_offset=0, sm_scale=0.3,
                            segment_ids=jnp.asarray(seg),
                            prefix_mask=jnp.asarray(prefix) if prefix_len else None)  # fmt: skip
        return jnp.sum(out * g)

    def ref(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return jnp.sum(_autodiff_attention(q, k, v, jnp.asarray(visible)[:, None], 0.3) * g)

    got = jax.grad(ours, argnums=(0, 1, 2))(q, k, v)
    want = jax.grad(ref, argnums=(0, 1, 2))(q, k, v)
    for name, a, b in zip("qkv", got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5,
                                   err_msg=f"d{name}")  # fmt: skip


def test_xla_attention_merged_cache_layout() -> None:
    """(B * nh, T, hs) with a per-row mask, as the decode path reads the KV cache."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 3, n, 8)).astype(np.float32) for n in (2, 7, 7))
    key_mask = np.ones((2, 7), bool)
    key_mask[1, :3] = False
    four = xla_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                         key_mask=jnp.asarray(key_mask), q_offset=4, sm_scale=0.3)  # fmt: skip
    merged = xla_attention(
        jnp.asarray(q.reshape(6, 2, 8)), jnp.asarray(k.reshape(6, 7, 8)),
        jnp.asarray(v.reshape(6, 7, 8)), key_mask=jnp.asarray(np.repeat(key_mask, 3, 0)),
        q_offset=jnp.int32(4), sm_scale=0.3,
    )  # fmt: skip
    np.testing.assert_allclose(np.asarray(merged).reshape(2, 3, 2, 8), np.asarray(four),
                               rtol=1e-6, atol=1e-6)  # fmt: skip


def test_dispatch_and_kernel_contract() -> None:
    """impl='pallas-interpret' runs codegen_core.pallas_kernels.flash_attention's TPU kernel in
    interpret mode: same layout and padding contract as the XLA path for real tokens; the
    last query alone (a prefill's last_only layer) is the kernel's bottom-right alignment."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 3, 8, 16)), jnp.float32) for _ in range(3))
    mask = jnp.ones((2, 8), bool).at[1, :3].set(False)
    fast = attention(q, k, v, key_mask=mask, impl="pallas-interpret")
    slow = attention(q, k, v, key_mask=mask, impl="xla")
    np.testing.assert_allclose(np.asarray(fast)[0], np.asarray(slow)[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(fast)[1, :, 3:], np.asarray(slow)[1, :, 3:], atol=1e-5)
    last = attention(q[:, :, -1:], k, v, key_mask=mask, q_offset=7, impl="pallas",
                     interpret=True)  # fmt: skip
    np.testing.assert_allclose(np.asarray(last), np.asarray(slow)[:, :, -1:], atol=1e-5)
    if not pallas_ok():  # auto never picks the kernel on CPU; "pallas" says why it cannot run
        np.testing.assert_array_equal(np.asarray(attention(q, k, v, key_mask=mask)),
                                      np.asarray(slow))  # fmt: skip
        with pytest.raises(ValueError, match=r"lowering only on TPU and GPU.*interpret=True"):
            attention(q, k, v, key_mask=mask, impl="pallas")
    with pytest.raises(ValueError, match="do not match"):
        attention(q, jnp.ones((2, 3, 8, 4)), jnp.ones((2, 3, 8, 4)))
    with pytest.raises(ValueError, match="needs self-attention"):
        attention(q, k[:, :, :6], v[:, :, :6], q_offset=2, impl="pallas-interpret")


@pytest.mark.skipif(not pallas_ok(), reason="Pallas kernels do not run on this backend (CPU)")
def test_pallas_dispatch_matches_xla_on_accelerator() -> None:
    config = get_preset("tiny-codegen").replace(d_model=256, n_head=4, rotary_dim=32)
    params = init(config, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (2, 128), 0, config.vocab_size)
    mask = jnp.ones((2, 128), bool).at[1, :40].set(False)
    fast, _ = forward(params, ids, config, token_mask=mask, attn_impl="pallas")
    slow, _ = forward(params, ids, config, token_mask=mask, attn_impl="xla")
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(fast)[real], np.asarray(slow)[real], atol=2e-3)


@pytest.mark.parametrize("name", ["tiny-codegen", "tiny-llama"])
def test_stacked_scan_forward_equals_layer_list(name: str) -> None:
    config = get_preset(name)
    params = init(config, jax.random.key(0))
    stacked = stack_layers(params)
    assert stacked["h"]["attn"]["qkv"].shape[0] == config.n_layer
    ids = jnp.arange(20).reshape(2, 10) % config.vocab_size
    f = jax.jit(forward, static_argnames="config")
    np.testing.assert_allclose(np.asarray(f(stacked, ids, config)[0]),
                               np.asarray(f(params, ids, config)[0]), atol=1e-5)  # fmt: skip
    back = unstack_layers(stacked)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    stacked_axes = param_axes(config, stacked=True)
    assert stacked_axes["h"]["attn"]["qkv"] == (ax.LAYERS, ax.QKV, ax.HEADS, ax.HEAD_DIM, ax.EMBED)


def test_logical_axis_rules() -> None:
    assert ax.logical_to_spec((ax.EMBED, ax.MLP)) == PartitionSpec("fsdp", "tensor")
    assert ax.logical_to_spec((ax.BATCH, ax.LENGTH, ax.ACT_EMBED)) == PartitionSpec(
        ("data", "fsdp"), None, None
    )
    # a mesh axis is used once per array
    assert ax.logical_to_spec((ax.VOCAB, ax.MLP)) == PartitionSpec("tensor", None)
    x = jnp.ones((2, 3))
    assert ax.constrain(x, (ax.BATCH, ax.ACT_EMBED)) is x  # no rules active: untouched
    with pytest.raises(ValueError, match="2 axis names"):
        ax.constrain(jnp.ones((2, 3, 4)), (ax.BATCH, ax.ACT_EMBED))


def test_forward_under_a_mesh() -> None:
    config = get_preset("tiny-codegen")
    params = init(config, jax.random.key(0))
    devices = np.array(jax.devices()[:1]).reshape(1, 1, 1)
    mesh = Mesh(devices, ax.MESH_AXES)
    shardings = ax.param_shardings(param_axes(config), mesh)
    ids = jnp.arange(16).reshape(2, 8)
    ref = np.asarray(forward(params, ids, config)[0])
    with ax.axis_rules(mesh):
        sharded = jax.device_put(params, shardings)
        got = jax.jit(forward, static_argnames="config")(sharded, ids, config)[0]
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5)
