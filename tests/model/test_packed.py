"""Packed-document forward (segment ids, per-document positions), prefix-LM and remat.

A packed row must compute exactly what each of its documents computes alone: the same logits
(and the same parameter gradients) up to fp32 rounding. The XLA attention path and the Pallas
flash kernel (interpret mode on CPU) are both checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codegen_core.model.attention import attention, pallas_ok, xla_attention
from codegen_core.model.config import CodeGenConfig, get_preset
from codegen_core.model.transformer import (
    forward,
    init,
    init_cache,
    positions_from_segments,
    stack_layers,
)

# fp32 everywhere: a document alone and inside a packed row differ only by the order of
# additions in masked softmax sums (masked keys contribute exact zeros) and by XLA's choice
# of matmul blocking for a different T, so agreement is at fp32 rounding level.
ATOL = 2e-5

# Row 0: documents of 5 and 7 tokens then 4 padding; row 1: one document of 3, one of 13.
LENGTHS = [[5, 7], [3, 13]]
T = 16


def _packed(config: CodeGenConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = np.zeros((len(LENGTHS), T), np.int32)
    seg = np.zeros((len(LENGTHS), T), np.int32)
    pos = np.zeros((len(LENGTHS), T), np.int32)
    for r, lengths in enumerate(LENGTHS):
        at = 0
        for d, n in enumerate(lengths):
            tokens[r, at : at + n] = rng.integers(0, config.vocab_size, n)
            seg[r, at : at + n] = d + 1
            pos[r, at : at + n] = np.arange(n)
            at += n
        tokens[r, at:] = rng.integers(0, config.vocab_size, T - at)  # padding: any ids
    return {"tokens": tokens, "segment_ids": seg, "positions": pos}


def _documents(batch: dict[str, np.ndarray]) -> list[tuple[int, int, np.ndarray]]:
    """(row, start, tokens) of every document of the packed batch."""
    docs = []
    for r, lengths in enumerate(LENGTHS):
        at = 0
        for n in lengths:
            docs.append((r, at, batch["tokens"][r, at : at + n]))
            at += n
    return docs


@pytest.fixture(scope="module", params=["tiny-codegen", "tiny-llama"])
def model(request: pytest.FixtureRequest) -> tuple[CodeGenConfig, Any]:
    config = get_preset(request.param)
    return config, init(config, jax.random.key(3))


def _fwd(params: Any, tokens: Any, config: CodeGenConfig, **kw: Any) -> jax.Array:
    return forward(params, jnp.asarray(tokens), config, **kw)[0]


@pytest.mark.parametrize("impl", ["xla", "pallas-interpret"])
def test_packed_logits_equal_documents_alone(model: Any, impl: str) -> None:
    config, params = model
    batch = _packed(config)
    packed = np.asarray(
        _fwd(
            params,
            batch["tokens"],
            config,
            segment_ids=jnp.asarray(batch["segment_ids"]),
            positions=jnp.asarray(batch["positions"]),
            attn_impl=impl,
        )
    )  # (B, T, V)
    assert packed.shape == (2, T, config.vocab_size) and packed.dtype == np.float32
    assert np.isfinite(packed).all()
    for r, start, doc in _documents(batch):
        alone = np.asarray(_fwd(params, doc[None], config, attn_impl="xla"))[0]  # (n, V)
        np.testing.assert_allclose(packed[r, start : start + len(doc)], alone, atol=ATOL,
                                   err_msg=f"row {r} document at {start}")  # fmt: skip
    # the derived positions are the stored ones
    derived = np.asarray(
        _fwd(
            params,
            batch["tokens"],
            config,
            segment_ids=jnp.asarray(batch["segment_ids"]),
            attn_impl=impl,
        )
    )
    real = batch["segment_ids"] > 0
    np.testing.assert_allclose(derived[real], packed[real], atol=1e-6)


@pytest.mark.skipif(not pallas_ok(), reason="compiled Pallas kernels need a TPU or GPU")
def test_packed_compiled_kernel_matches_xla_on_accelerator(model: Any) -> None:
    config, params = model
    batch = {k: jnp.asarray(v) for k, v in _packed(config).items()}
    kw = {"segment_ids": batch["segment_ids"], "positions": batch["positions"]}
    fast = np.asarray(_fwd(params, batch["tokens"], config, attn_impl="pallas", **kw))
    slow = np.asarray(_fwd(params, batch["tokens"], config, attn_impl="xla", **kw))
    real = np.asarray(batch["segment_ids"]) > 0
    np.testing.assert_allclose(fast[real], slow[real], atol=2e-3)  # TPU/GPU matmul precision


def _weights(config: CodeGenConfig) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(2, T, config.vocab_size)).astype(np.float32)


@pytest.mark.parametrize("impl", ["xla", "pallas-interpret"])
def test_packed_gradients_equal_sum_over_documents(model: Any, impl: str) -> None:
    """d/dparams of a weighted sum of the real tokens' logits: packed == sum over documents."""
    config, params = model
    batch = _packed(config)
    w = _weights(config) * (batch["segment_ids"] > 0)[..., None]  # padding carries no loss

    def packed_loss(p: Any) -> jax.Array:
        logits = _fwd(p, batch["tokens"], config, segment_ids=jnp.asarray(batch["segment_ids"]),
                      positions=jnp.asarray(batch["positions"]), attn_impl=impl)  # fmt: skip
        return jnp.sum(logits * w)

    def docs_loss(p: Any) -> jax.Array:
        total = jnp.zeros((), jnp.float32)
        for r, start, doc in _documents(batch):
            logits = _fwd(p, doc[None], config, attn_impl="xla")[0]
            total = total + jnp.sum(logits * w[r, start : start + len(doc)])
        return total

    g_packed = jax.jit(jax.grad(packed_loss))(params)
    g_docs = jax.jit(jax.grad(docs_loss))(params)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_packed),
                            jax.tree.leaves(g_docs), strict=True):  # fmt: skip
        scale = max(1.0, float(np.abs(np.asarray(b)).max()))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4 * scale,
                                   err_msg=jax.tree_util.keystr(path))  # fmt: skip


@pytest.mark.parametrize("remat", ["none", "full", "dots"])
def test_stacked_scan_with_remat_matches_layer_list(model: Any, remat: str) -> None:
    config, params = model
    batch = _packed(config)
    kw = {"segment_ids": jnp.asarray(batch["segment_ids"]),
          "positions": jnp.asarray(batch["positions"])}  # fmt: skip
    w = _weights(config)

    def loss(p: Any, remat: str) -> jax.Array:
        return jnp.sum(_fwd(p, batch["tokens"], config, remat=remat, **kw) * w)

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    ref_v, ref_g = grad(params, "none")
    for p in (params, stack_layers(params)):
        v, g = grad(p, remat)
        np.testing.assert_allclose(float(v), float(ref_v), rtol=1e-5)
        want = ref_g if isinstance(g["h"], list) else stack_layers(ref_g)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_remat_actually_recomputes() -> None:
    """'full' saves no matmul output of the layer: the backward pass reruns the forward dots."""
    config = get_preset("tiny-codegen")
    params = stack_layers(init(config, jax.random.key(0)))
    ids = jnp.zeros((1, 8), jnp.int32)

    def n_dots(remat: str) -> int:
        f = lambda p: jnp.sum(forward(p, ids, config, remat=remat)[0])
        return str(jax.make_jaxpr(jax.grad(f))(params)).count("dot_general")

    assert n_dots("full") > n_dots("none")
    with pytest.raises(ValueError, match="remat must be"):
        forward(params, ids, config, remat="some")  # type: ignore[arg-type]


def test_prefix_lm_visibility() -> None:
    """A prefix token sees later prefix tokens of its segment, but no non-prefix token and
    nothing of another segment; a non-prefix token stays causal (sees its whole prefix)."""
    config = get_preset("tiny-codegen")
    params = init(config, jax.random.key(1))
    # segment 1: tokens 0..5 with prefix 0..2; segment 2: tokens 6..11 with prefix 6..8.
    seg = jnp.asarray([[1] * 6 + [2] * 6])
    prefix = jnp.asarray([[True] * 3 + [False] * 3 + [True] * 3 + [False] * 3])
    base = np.random.default_rng(0).integers(0, config.vocab_size, (1, 12)).astype(np.int32)

    def logits(tokens: np.ndarray, prefix_mask: Any = prefix) -> np.ndarray:
        return np.asarray(_fwd(params, tokens, config, segment_ids=seg, prefix_mask=prefix_mask))

    ref = logits(base)

    def changed(j: int) -> np.ndarray:
        """Which positions' logits move when token j changes: (T,) bool."""
        t = base.copy()
        t[0, j] = (t[0, j] + 1) % config.vocab_size
        return np.abs(logits(t) - ref).max(-1)[0] > 1e-6

    c = changed(2)  # the last prefix token of segment 1
    assert c[:6].all()  # every token of segment 1 sees it, the earlier prefix tokens too
    assert not c[6:].any()  # nothing of segment 2 does
    c = changed(3)  # the first non-prefix token of segment 1
    assert not c[:3].any() and c[3:6].all() and not c[6:].any()
    c = changed(7)  # a prefix token of segment 2
    assert not c[:6].any() and c[6:].all()
    # without a prefix the same rows are purely causal
    causal = np.asarray(_fwd(params, base, config, segment_ids=seg))
    np.testing.assert_allclose(logits(base, jnp.zeros((1, 12), bool)), causal, atol=1e-6)
    # the first token differs from causal (it sees tokens 1 and 2 now)
    assert np.abs(ref[0, 0] - causal[0, 0]).max() > 1e-4


def test_prefix_lm_pallas_matches_xla_with_gradients() -> None:
    """The kernel's two-call prefix-LM equals the XLA rule: logits and parameter gradients."""
    config = get_preset("tiny-llama")
    params = init(config, jax.random.key(2))
    batch = _packed(config, seed=4)
    seg = jnp.asarray(batch["segment_ids"])
    prefix = np.zeros((2, T), bool)
    prefix[0, :3] = prefix[0, 5:9] = prefix[1, 3:10] = True  # leading runs of segments
    w = _weights(config) * (batch["segment_ids"] > 0)[..., None]

    def loss(p: Any, impl: str) -> jax.Array:
        logits = _fwd(p, batch["tokens"], config, segment_ids=seg, prefix_mask=jnp.asarray(prefix),
                      attn_impl=impl)  # fmt: skip
        return jnp.sum(logits * w)

    v_fast, g_fast = jax.value_and_grad(loss)(params, "pallas-interpret")
    v_slow, g_slow = jax.value_and_grad(loss)(params, "xla")
    np.testing.assert_allclose(float(v_fast), float(v_slow), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_slow), strict=True):
        scale = max(1.0, float(np.abs(np.asarray(b)).max()))  # gradients reach ~200
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * scale)


def _naive(q: np.ndarray, k: np.ndarray, v: np.ndarray, seg: np.ndarray,
           prefix: np.ndarray) -> np.ndarray:  # fmt: skip
    """float64 loops: query t sees s iff same segment and (s <= t or s in the prefix)."""
    b, h, t_len, d = q.shape
    out = np.zeros(q.shape)
    for bi in range(b):
        for hi in range(h):
            for t in range(t_len):
                vis = [s for s in range(t_len)
                       if seg[bi, s] == seg[bi, t] and (s <= t or prefix[bi, s])]  # fmt: skip
                sc = np.array([q[bi, hi, t] @ k[bi, hi, s] / np.sqrt(d) for s in vis])
                p = np.exp(sc - sc.max())
                out[bi, hi, t] = (p / p.sum()) @ v[bi, hi, vis]
    return out


# t = 300 takes the XLA path's causal blocks (segment ids sliced per block)
@pytest.mark.parametrize("t_len", [12, 300])
def test_xla_attention_segments_and_prefix_match_naive(t_len: int) -> None:
    rng = np.random.default_rng(t_len)
    q, k, v = (rng.normal(size=(2, 2, t_len, 8)).astype(np.float32) for _ in range(3))
    bounds = sorted(rng.choice(np.arange(1, t_len), 3, replace=False))
    seg = np.zeros((2, t_len), np.int32)
    for i, (a, b) in enumerate(zip([0, *bounds], [*bounds, t_len], strict=True)):
        seg[:, a:b] = i + 1
    seg[1, -3:] = 0  # trailing padding
    prefix = np.zeros((2, t_len), bool)
    for s in np.unique(seg):
        first = int(np.argmax(seg[0] == s))
        prefix[0, first : first + 2] = seg[0, first : first + 2] == s
    args = [jnp.asarray(x) for x in (q, k, v)]
    for pm in (None, prefix):
        got = xla_attention(*args, key_mask=None, q_offset=0, sm_scale=8**-0.5,
                            segment_ids=jnp.asarray(seg),
                            prefix_mask=None if pm is None else jnp.asarray(pm))  # fmt: skip
        want = _naive(q, k, v, seg, np.zeros_like(prefix) if pm is None else pm)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_pallas_interpret_segments_match_xla_on_padding_rows_too() -> None:
    """The kernel and the XLA path agree on every row, padding rows included (both let a
    padding query see the padding before it), and on a key_mask combined with segments."""
    rng = np.random.default_rng(5)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 2, 20, 16)), jnp.float32) for _ in range(3))
    seg = jnp.asarray([[1] * 8 + [2] * 9 + [0] * 3, [3] * 20])
    fast = attention(q, k, v, segment_ids=seg, impl="pallas-interpret")
    slow = attention(q, k, v, segment_ids=seg, impl="xla")
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), atol=1e-5)
    mask = jnp.ones((2, 20), bool).at[1, :4].set(False)
    fast = attention(q, k, v, key_mask=mask, segment_ids=seg, impl="pallas-interpret")
    slow = attention(q, k, v, key_mask=mask, segment_ids=seg, impl="xla")
    np.testing.assert_allclose(np.asarray(fast)[1, :, 4:], np.asarray(slow)[1, :, 4:], atol=1e-5)
    # prefix-LM through the kernel (two calls) == the XLA rule, for a leading-run prefix
    prefix = jnp.asarray([[True] * 3 + [False] * 5 + [True] * 4 + [False] * 8, [True] * 20])
    fast = attention(q, k, v, segment_ids=seg, prefix_mask=prefix, impl="pallas-interpret")
    slow = attention(q, k, v, segment_ids=seg, prefix_mask=prefix, impl="xla")
    np.testing.assert_allclose(np.asarray(fast), np.asarray(slow), atol=1e-5)
    with pytest.raises(ValueError, match="prefix_mask must be"):
        attention(q, k, v, segment_ids=seg, prefix_mask=prefix[:, :4], impl="pallas-interpret")
    with pytest.raises(ValueError, match="impl must be"):
        attention(q, k, v, impl="triton")  # type: ignore[arg-type]


def test_positions_from_segments_and_bad_input() -> None:
    seg = jnp.asarray([[1, 1, 1, 2, 2, 0, 0], [4, 4, 4, 4, 4, 4, 4]])
    np.testing.assert_array_equal(np.asarray(positions_from_segments(seg)),
                                  [[0, 1, 2, 0, 1, 0, 1], [0, 1, 2, 3, 4, 5, 6]])  # fmt: skip
    config = get_preset("tiny-codegen")
    params = init(config, jax.random.key(0))
    ids = jnp.zeros((2, 7), jnp.int32)
    with pytest.raises(ValueError, match="no KV cache"):
        forward(params, ids, config, segment_ids=seg, cache=init_cache(config, 2, 8))
    with pytest.raises(ValueError, match="segment_ids must have the tokens' shape"):
        forward(params, ids, config, segment_ids=seg[:, :3])
    with pytest.raises(ValueError, match="4-D self-attention"):
        q = jnp.ones((1, 1, 2, 4))
        xla_attention(q, jnp.ones((1, 1, 5, 4)), jnp.ones((1, 1, 5, 4)), key_mask=None,
                      q_offset=3, sm_scale=1.0, segment_ids=jnp.ones((1, 5), jnp.int32))  # fmt: skip


_SHARD_MAP_SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh
    from codegen_core.model import axes as ax
    from codegen_core.model.attention import attention
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(4, 2, 16, 16)), jnp.float32) for _ in range(3))
    seg = jnp.asarray(np.repeat([[1] * 6 + [2] * 7 + [0] * 3], 4, 0))
    ref = attention(q, k, v, segment_ids=seg, impl="xla")
    mesh = Mesh(np.array(jax.devices()).reshape(2, 1, 2), ax.MESH_AXES)
    with ax.axis_rules(mesh):
        f = jax.jit(lambda q, k, v, s: attention(q, k, v, segment_ids=s, impl="pallas-interpret"))
        got = f(q, k, v, seg)
        text = f.lower(q, k, v, seg).as_text()
    assert "shard_map" in text or "sdy.manual_computation" in text, text[:2000]
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), atol=1e-5)
    # prefix-LM (two kernel calls) and the backward kernels, sharded
    pre = jnp.asarray(np.repeat([[True] * 2 + [False] * 4 + [True] * 3 + [False] * 7], 4, 0))
    def loss(q, k, v, impl):
        o = attention(q, k, v, segment_ids=seg, prefix_mask=pre, impl=impl)
        return jnp.sum(o * jnp.cos(o))
    want = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, "xla")
    with ax.axis_rules(mesh):
        g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)), static_argnums=3)
        got = g(q, k, v, "pallas-interpret")
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-4)
    print("OK")
    """
)


def test_flash_under_a_mesh_runs_in_shard_map() -> None:
    """4 simulated CPU devices, mesh (data=2, fsdp=1, tensor=2): batch and heads split;
    forward, prefix-LM and gradients equal the unsharded XLA path."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", _SHARD_MAP_SCRIPT], check=False, env=env, cwd=root,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
